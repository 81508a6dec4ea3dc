"""``tune-batchdyn nqm`` and batch-size sweep planning."""

from __future__ import annotations

import pytest

from tune_batchdyn.cli import main
from tune_batchdyn.cli.nqm import parse_batch_sizes
from tune_batchdyn.errors import ConfigError
from tune_batchdyn.nqm import NQM, suggest_batch_sizes


def test_table_and_plot(tmp_path, capsys):
    plot = tmp_path / "fig3.png"
    code = main(["nqm", "--optimizers", "sgd,ema", "--batch-sizes", "4..64", "--dim", "500",
                 "--lr-points", "30", "--coefficient-points", "5", "--plot", str(plot)])
    out = capsys.readouterr().out
    assert code == 0
    assert plot.stat().st_size > 1000
    lines = out.splitlines()
    assert "sgd steps" in lines[1] and "ema steps" in lines[1] and "lower bound" in lines[1]
    assert [line.split()[0] for line in lines[2:7]] == ["4", "8", "16", "32", "64"]
    assert lines[7].split()[0] == "B_crit"
    sgd_steps_at_4 = float(lines[2].split()[1])
    want = NQM(dim=500).steps_to_target(4, lr_points=30)[0]
    assert sgd_steps_at_4 == pytest.approx(want, rel=1e-3)


@pytest.mark.parametrize(
    ("argv", "flag"),
    [(["--optimizers", "adam"], "--optimizers"), (["--batch-sizes", "0..8"], "--batch-sizes"),
     (["--batch-sizes", "8,x"], "--batch-sizes"), (["--bins", "many"], "--bins"),
     (["--plot", "/no/such/folder/x.png"], "--plot"), (["--dim", "0"], "dim")],
)
def test_bad_input_exits_2_naming_the_flag(argv, flag, capsys):
    assert main(["nqm", *argv]) == 2
    assert flag in capsys.readouterr().err


def test_plot_format_is_refused_before_the_table(tmp_path, capsys):
    assert main(["nqm", "--dim", "100", "--plot", str(tmp_path / "out.txt")]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "--plot" in err and ".png" in err and ".pdf" in err
    assert not (tmp_path / "out.txt").exists()


def test_argparse_errors_exit_2():
    with pytest.raises(SystemExit) as info:
        main(["nqm", "--target", "small"])
    assert info.value.code == 2


def test_batch_size_ranges():
    assert parse_batch_sizes("1..65536") == [2**k for k in range(17)]
    assert parse_batch_sizes("3..20") == [3, 6, 12]
    assert parse_batch_sizes("32,8,100") == [32, 8, 100]
    with pytest.raises(ConfigError, match="--batch-sizes"):
        parse_batch_sizes("8..4")


def test_suggest_batch_sizes_from_a_noise_scale():
    assert suggest_batch_sizes(noise_scale=1000.0) == [2**k for k in range(4, 13)]
    assert suggest_batch_sizes(noise_scale=1000.0, below=4, above=2) == [256, 512, 1024, 2048]
    assert suggest_batch_sizes(noise_scale=1000.0, min_batch=64, max_batch=512) == [64, 128,
                                                                                   256, 512]
    assert suggest_batch_sizes(noise_scale=0.5) == [1, 2]


def test_suggest_batch_sizes_outside_the_allowed_range_gives_its_nearest_power_of_two():
    assert suggest_batch_sizes(noise_scale=1000.0, max_batch=8) == [8]
    assert suggest_batch_sizes(noise_scale=1000.0, max_batch=12) == [8]
    assert suggest_batch_sizes(noise_scale=0.5, min_batch=48) == [64]
    assert suggest_batch_sizes(noise_scale=0.5, min_batch=48, max_batch=100) == [64]


def test_suggest_batch_sizes_from_an_nqm():
    model = NQM()
    b_crit = model.critical_batch_size()
    sizes = suggest_batch_sizes(nqm=model)
    assert sizes[-1] >= 4 * b_crit > sizes[-2]
    assert sizes[0] >= b_crit / 64 > sizes[0] / 2


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({}, "noise_scale"), ({"noise_scale": 10.0, "nqm": NQM(dim=10)}, "noise_scale"),
     ({"noise_scale": -1.0}, "noise_scale"), ({"noise_scale": 10.0, "above": 0}, "above"),
     ({"noise_scale": 10.0, "min_batch": 8, "max_batch": 4}, "max_batch"),
     ({"noise_scale": 10.0, "min_batch": 0.5}, "min_batch"),
     ({"noise_scale": 10.0, "max_batch": 8.5}, "max_batch"),
     ({"noise_scale": 10.0, "min_batch": 0}, "min_batch"),
     ({"noise_scale": 10.0, "min_batch": 9, "max_batch": 12}, "no power of two")],
)
def test_suggest_batch_sizes_rejects_bad_input(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        suggest_batch_sizes(**kwargs)
