"""Figures from a study: Optuna's own matplotlib plots (intermediate values; a contour of a
measure through ``target=``), and our (C̄K, LK) figures through records_from_optuna."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from optuna.visualization.matplotlib import plot_contour, plot_intermediate_values  # noqa: E402

from tune_batchdyn.errors import ConfigError  # noqa: E402
from tune_batchdyn.figures import write_figures  # noqa: E402
from tune_batchdyn.optuna import (  # noqa: E402
    enqueue_replay,
    make_storage,
    measure_target,
    replay_objective,
)
from tune_batchdyn.predict.synthetic import synthetic_records  # noqa: E402
from tune_batchdyn.records import RECORD_COLUMNS, records_from_optuna  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


@pytest.fixture(scope="module")
def replayed() -> tuple[pd.DataFrame, optuna.Study]:
    table = synthetic_records(n_configs=12, n_seeds=1, epochs=6, seed=4, diverging=0.1)
    study = optuna.create_study(pruner=optuna.pruners.NopPruner())
    order = enqueue_replay(study, table)
    study.optimize(replay_objective(table), n_trials=len(order))
    return table, study


def test_intermediate_values_plot_has_one_curve_per_trial(replayed):
    _, study = replayed
    ax = plot_intermediate_values(study)
    assert len(ax.get_lines()) == len(study.trials)
    plt.close("all")


def test_contour_of_a_measure_through_target(replayed):
    table, study = replayed
    target = measure_target("lk")
    last = table.sort_values("epoch").groupby("trial_id").tail(1).set_index("trial_id")
    for trial in study.trials:
        expected = last.loc[trial.user_attrs["replay/trial_id"], "lk"]
        value = target(trial)
        assert (math.isnan(value) and math.isnan(expected)) or value == pytest.approx(expected)
    ax = plot_contour(study, params=["batch_size", "lr"], target=target, target_name="LK")
    assert ax.get_xlabel() == "batch_size" and ax.get_ylabel() == "lr"
    plt.close("all")
    assert math.isnan(target(optuna.trial.create_trial(value=1.0)))
    with pytest.raises(ConfigError, match="name='LK'"):
        measure_target("LK")


def test_study_to_records_to_our_figures(replayed, tmp_path):
    table, study = replayed
    records = records_from_optuna(study)
    by_replay = {str(t.number): t.user_attrs["replay/trial_id"] for t in study.trials}
    back = records.assign(trial_id=records["trial_id"].map(by_replay)).sort_values(
        ["trial_id", "epoch"]).reset_index(drop=True)
    original = table.sort_values(["trial_id", "epoch"]).reset_index(drop=True)
    for column in RECORD_COLUMNS:
        np.testing.assert_allclose(back[column].to_numpy(dtype=float),
                                   original[column].to_numpy(dtype=float), rtol=1e-12)
    paths = write_figures(records, tmp_path)
    assert sorted(p.name for p in paths) == ["measures.png", "plane.png", "travel.png"]
    assert all(p.stat().st_size > 1000 for p in paths)
    plt.close("all")


def test_plot_command_reads_a_study_from_its_storage(replayed, tmp_path, capsys):
    from tune_batchdyn.cli import main

    _, study = replayed
    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.copy_study(from_study_name=study.study_name, from_storage=study._storage,
                      to_storage=url, to_study_name="digits")
    assert main(["plot", "--storage", url, "--study", "digits", "--out",
                 str(tmp_path / "fig")]) == 0
    assert sorted(p.name for p in (tmp_path / "fig").iterdir()) == [
        "measures.png", "plane.png", "travel.png"]
    assert main(["plot", "--storage", url, "--study", "other", "--out", str(tmp_path)]) == 2
    assert "--study 'other' is not in" in capsys.readouterr().err
    plt.close("all")


def test_plot_command_takes_a_journal_and_creates_no_file(replayed, tmp_path, capsys):
    """``plot --storage`` takes what ``sweep --storage`` takes; a file that is not there is an
    error, not created empty (review: a journal path crashed; a missing SQLite file was
    created)."""
    from tune_batchdyn.cli import main

    _, study = replayed
    journal = tmp_path / "study.journal"
    optuna.copy_study(from_study_name=study.study_name, from_storage=study._storage,
                      to_storage=make_storage(journal), to_study_name="digits")
    assert main(["plot", "--storage", str(journal), "--study", "digits", "--out",
                 str(tmp_path / "fig")]) == 0
    assert sorted(p.name for p in (tmp_path / "fig").iterdir()) == [
        "measures.png", "plane.png", "travel.png"]
    plt.close("all")
    for storage, file in ((f"sqlite:///{tmp_path / 'none.db'}", tmp_path / "none.db"),
                          (str(tmp_path / "none.journal"), tmp_path / "none.journal")):
        assert main(["plot", "--storage", storage, "--study", "digits", "--out",
                     str(tmp_path / "fig2")]) == 2
        assert f"there is no file '{file}' to read a study from" in capsys.readouterr().err
        assert not file.exists()
