import pandas as pd
import pytest

from tune_batchdyn.cli import main
from tune_batchdyn.records import RECORD_COLUMNS, read_records


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--lr", "-1"], "train: error: lr=-1.0 is not accepted"),
        (["train", "--batch-size", "many"], "invalid int value: 'many'"),
        (["train", "--dataset", "imagenet"], "dataset='imagenet' is not accepted"),
        (["train", "--out", "x.txt"], "has extension '.txt'; use one of: .parquet, .pq, .csv"),
        (["train", "--strategy", "s32-to"], "strategy='s32-to' is not accepted"),
        (["train", "--lr-milestones", "0.5,x"], "--lr-milestones '0.5,x' is not accepted"),
        (["train", "--lr-milestones", "1.5"], "lr_milestones=1.5 is not accepted"),
        (["train", "--dataset-option", "oops"], "--dataset-option 'oops' is not accepted"),
        (["record", "--space", "nqm", "--out", "x.json"], "has extension '.json'"),
        (["record", "--space", "no_such_space", "--out", "x.csv"], "not a file nor a shipped"),
        (["record", "--space", "nqm", "--out", "x.csv", "--set", "lr=0"],
         "with --set lr=0: lr=0 is not accepted"),
        (["record", "--space", "mnist_mlp", "--out", "x.csv"], "needs data_dir"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_traceback(argv, message, capsys):
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_train_prints_progress_and_writes_records(tmp_path, capsys):
    out = tmp_path / "run.csv"
    code = main(["train", "--dataset", "digits", "--epochs", "2", "--batch-size", "128",
                 "--measures", "none", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0
    assert "epoch   1/2" in text and "epoch   2/2" in text and "done: 2 epochs" in text
    table = read_records(out)
    assert len(table) == 2 and set(RECORD_COLUMNS) <= set(table.columns)
    assert table["config/batch_size"].tolist() == [128, 128]
    assert "lr=0.1 (/10 at 50%, 75% of the epochs)" in text  # the decay the lr column shows
    assert table["lr"].tolist() == pytest.approx([0.1, 0.01])


def test_train_lr_decay_flags(capsys):
    assert main(["train", "--epochs", "2", "--batch-size", "256", "--measures", "none",
                 "--lr-milestones", "none"]) == 0
    text = capsys.readouterr().out
    assert "lr=0.1  epochs=2" in text and "lr 0.01" not in text
    assert main(["train", "--epochs", "4", "--batch-size", "256", "--measures", "none",
                 "--lr-milestones", "0.5", "--lr-decay-factor", "4"]) == 0
    text = capsys.readouterr().out
    assert "(/4 at 50% of the epochs)" in text and "lr 0.025" in text


def test_train_says_a_dynamic_schedule_sets_the_batch_size(capsys):
    """A --batch-size given with a dynamic-sampling spec is named as unused; the header says
    the schedule sets the batch size, and every epoch shows the size it ran."""
    code = main(["train", "--epochs", "2", "--strategy", "[16,64]", "--batch-size", "128",
                 "--measures", "none"])
    captured = capsys.readouterr()
    assert code == 0
    assert "note: --batch-size 128 is not used: strategy '[16,64]'" in captured.err
    assert "batch=by the schedule" in captured.out
    assert "batch    16" in captured.out and "batch    64" in captured.out
    main(["train", "--epochs", "1", "--strategy", "[16]", "--measures", "none"])
    assert "note:" not in capsys.readouterr().err


def test_record_keeps_the_seeds_the_space_declares_and_refuses_two_sources(tmp_path, capsys):
    """A space's seed grid (or --set seed) gives the seeds; --seeds with one of them is
    refused rather than silently replacing it; each trial is trained and written once."""
    space = tmp_path / "seeds.toml"
    space.write_text('[fixed]\ndataset = "digits"\nmodel = "mlp"\nepochs = 1\nmeasures = []\n'
                     'batch_size = 512\nlr = 0.1\n[params]\nseed = { grid = [0, 1] }\n')
    out = tmp_path / "r.csv"
    assert main(["record", "--space", str(space), "--out", str(out)]) == 0
    table = read_records(out)
    assert sorted(table.groupby("trial_id")["config/seed"].first()) == [0, 1]
    assert len(table) == 2
    assert main(["record", "--space", str(space), "--out", str(out), "--seeds", "3"]) == 2
    assert "--seeds 3 and [params] seed of" in capsys.readouterr().err
    fixed = tmp_path / "fixed.toml"
    fixed.write_text(space.read_text().replace("[params]\nseed = { grid = [0, 1] }\n", ""))
    out = tmp_path / "s.csv"
    assert main(["record", "--space", str(fixed), "--out", str(out), "--set", "seed=5"]) == 0
    assert read_records(out)["config/seed"].tolist() == [5]


def test_record_runs_the_grid_once_and_skips_finished_trials(tmp_path, capsys):
    out = tmp_path / "grid.parquet"
    argv = ["record", "--space", "nqm", "--out", str(out), "--seeds", "0,1",
            "--set", "epochs=2", "--set", 'dataset_options={"dim": 200, "bins": 10, '
            '"samples_per_epoch": 2000}']
    assert main(argv) == 0
    table = read_records(out)
    assert table["trial_id"].nunique() == 7 * 3 * 2 and len(table) == 7 * 3 * 2 * 2
    assert (table.groupby("trial_id")["epoch"].max() == 2).all()
    capsys.readouterr()
    assert main(argv) == 0
    assert "(42 already there)" in capsys.readouterr().out
    pd.testing.assert_frame_equal(read_records(out), table)
    # --set on a searched field fixes it: the grid over the other fields, each trial once
    fixed = tmp_path / "fixed.parquet"
    assert main([*argv[:4], str(fixed), *argv[5:], "--set", "batch_size=128"]) == 0
    fixed_table = read_records(fixed)
    assert fixed_table["trial_id"].nunique() == 3 * 2 and len(fixed_table) == 3 * 2 * 2
    assert set(fixed_table["config/batch_size"]) == {128}


def test_set_takes_comma_lists_for_list_fields():
    from tune_batchdyn.cli.train import parse_config_overrides

    options = parse_config_overrides(["measures=fisher,quality", "lr_milestones=0.5,0.75",
                                      "epochs=3", "strategy=s32-to-512"])
    assert options == {"measures": ["fisher", "quality"], "lr_milestones": [0.5, 0.75],
                       "epochs": 3, "strategy": "s32-to-512"}
    assert parse_config_overrides(["measures=fisher"]) == {"measures": ["fisher"]}
    assert parse_config_overrides(["measures=none"]) == {"measures": []}
    assert parse_config_overrides(["lr_milestones=0.5"]) == {"lr_milestones": [0.5]}
    assert parse_config_overrides(['measures=["hessian"]']) == {"measures": ["hessian"]}
    assert parse_config_overrides(["strategy=[32,64,128]"]) == {"strategy": "[32,64,128]"}
