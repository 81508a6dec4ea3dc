"""Figures: written as PNG files from a small records table, by the function and by the CLI."""

from __future__ import annotations

import argparse

import pytest

from tune_batchdyn.cli import plot
from tune_batchdyn.errors import ConfigError
from tune_batchdyn.figures import write_figures
from tune_batchdyn.predict.synthetic import synthetic_records
from tune_batchdyn.records import write_records

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def records():
    return synthetic_records(n_configs=8, n_seeds=2, epochs=6, seed=2,
                             dynamic=("s16-to-64", "s64-to-16-MS"))


def test_write_figures(tmp_path, records):
    paths = write_figures(records, tmp_path / "figs", fraction=0.5, dpi=60)
    assert [p.name for p in paths] == ["plane.png", "travel.png", "measures.png"]
    for path in paths:
        data = path.read_bytes()
        assert data.startswith(PNG) and len(data) > 5000


def test_a_plane_of_few_trials_averages_fewer_neighbours(tmp_path, monkeypatch):
    """With k trials or fewer the k-nearest map would be one colour: the plane averages at
    most half of them (``informative_k``), as the planners do."""
    import tune_batchdyn.figures as figures

    few = synthetic_records(n_configs=3, n_seeds=1, epochs=4, seed=2, diverging=0.0)
    drawn = []
    monkeypatch.setattr(figures, "plot_plane",
                        lambda trials, region: drawn.append(region) or figures_plane(trials,
                                                                                      region))
    write_figures(few, tmp_path / "few", dpi=40)
    (region,) = drawn
    assert region.k == 1 and len(region.points_) == 3
    _, _, error, support = region.grid_
    assert len(set(error[support].round(12))) == 3  # three colours, not one (their mean)


def figures_plane(trials, region):
    from tune_batchdyn.figures.plane import plot_plane

    return plot_plane(trials, region)


def test_planned_schedule_labels_show_runs_and_are_cut():
    from tune_batchdyn.figures._common import NAME_WIDTH, Configuration

    schedule = "[" + ",".join(["128"] * 10 + ["512"] * 10) + "]"
    assert Configuration(schedule, 0.05, 128, ()).label == "[128×10,512×10]-lr0.05"
    varied = "[" + ",".join(["32", "128", "512", "128"] * 5) + "]"
    label = Configuration(varied, 0.05, 128, ()).label
    assert label == varied[: NAME_WIDTH - 2] + "…]-lr0.05"
    assert Configuration("[128,512]-MS", 0.1, 128, ()).label == "[128,512]-MS-lr0.1"
    assert Configuration("fixed", 0.1, 32, ()).label == "s32-lr0.1"


def test_dynamic_runs_are_told_apart(records):
    """Dynamic runs share a configured batch size; each still gets its own colour and marker
    in the travel figure and its own colour in the measures figure."""
    from tune_batchdyn.figures import plot_measures, plot_travel
    from tune_batchdyn.predict import TrialSet

    trials = TrialSet.from_records(records)
    travel = plot_travel(trials).axes[0]
    solid = [line for line in travel.get_lines() if line.get_linestyle() == "-"]
    assert len(solid) == 2
    assert solid[0].get_color() != solid[1].get_color()
    assert solid[0].get_marker() != solid[1].get_marker()
    panel = plot_measures(trials).axes[0]
    dashed = [line.get_color() for line in panel.get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 2 and dashed[0] != dashed[1]


def _cli(argv):
    parser = argparse.ArgumentParser()
    plot.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_prints_the_paths(tmp_path, records, capsys):
    source = write_records(records, tmp_path / "records.parquet")
    assert _cli(["plot", str(source), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / "out" / name)
                       for name in ("plane.png", "travel.png", "measures.png")]
    with pytest.raises(ConfigError, match="fraction"):
        _cli(["plot", str(source), "--out", str(tmp_path), "--fraction", "0"])


def test_cli_reads_one_ray_results_folder(tmp_path, records, capsys, monkeypatch):
    import tune_batchdyn.records

    read = []
    monkeypatch.setattr(tune_batchdyn.records, "records_from_ray_dir",
                        lambda folder: read.append(folder) or records)
    (tmp_path / "experiment").mkdir()
    assert _cli(["plot", str(tmp_path / "experiment"), "--out", str(tmp_path / "out")]) == 0
    assert read == [str(tmp_path / "experiment")] and capsys.readouterr().out.count(".png") == 3
    source = write_records(records, tmp_path / "records.parquet")
    with pytest.raises(ConfigError, match="is a folder: give one Ray results folder, or"):
        _cli(["plot", str(tmp_path / "experiment"), str(source), "--out", str(tmp_path)])
