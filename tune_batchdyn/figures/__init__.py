"""Figures from a records table (matplotlib on the Agg canvas, PNG files).

- ``plane.png``: the (C̄K, LK) plane on log axes with the 5-nearest-average error contours and
  the optimum region (the seed's Fig. 1b / 3);
- ``travel.png``: dynamic-sampling paths over their fixed-batch beacons (Fig. 5);
- ``measures.png``: C̄K and LK against the epoch (Fig. 2 c, d).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from tune_batchdyn.figures.measures import plot_measures
from tune_batchdyn.figures.plane import plot_plane
from tune_batchdyn.figures.travel import plot_travel
from tune_batchdyn.predict.region import OptimumRegion, informative_k
from tune_batchdyn.predict.trials import TrialSet

__all__ = ["plot_measures", "plot_plane", "plot_travel", "write_figures"]


def write_figures(records: pd.DataFrame, out_dir: str | os.PathLike, *, fraction: float = 1.0,
                  dpi: int = 120) -> list[Path]:
    """Write the three figures as PNG files in ``out_dir``; returns their paths.

    ``fraction``: the budget fraction at which the plane and its optimum region are drawn; with
    fewer than 2k trials there, the map averages fewer neighbours (``informative_k``), as the
    planners do, so that it is not one colour."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    trials = TrialSet.from_records(records)
    region = OptimumRegion(fraction=fraction).fit(trials)
    k = informative_k(region.k, len(region.points_))
    if k != region.k:
        region = region.set_params(k=k).fit(trials)
    figures = {"plane.png": plot_plane(trials, region), "travel.png": plot_travel(trials),
               "measures.png": plot_measures(trials)}
    paths = []
    for name, figure in figures.items():
        path = out / name
        figure.savefig(path, dpi=dpi)
        paths.append(path)
    return paths
