"""Travelling paths (the seed's Fig. 5): dynamic-sampling runs over their fixed-batch beacons
in the (C̄K, LK) plane, read at 5, 20, 40, 60, 80 and 100% of the budget."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from tune_batchdyn.figures._common import (
    Configuration,
    configurations,
    log_axes,
    new_figure,
    run_colours,
)
from tune_batchdyn.predict.beacons import nearest_lr
from tune_batchdyn.predict.trials import TrialSet

#: Markers of the dynamic runs, in turn.
MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X")
#: The seed's reading points.
FRACTIONS: tuple[float, ...] = (0.05, 0.2, 0.4, 0.6, 0.8, 1.0)


def plot_travel(trials: TrialSet, fractions: Sequence[float] = FRACTIONS) -> Figure:
    """Beacons dotted (coloured by batch size, labelled at their first point), dynamic runs
    solid, each in its own colour and marker.

    Beacons are the fixed-batch configurations at the dynamic runs' lr, or at the nearest lr
    (log scale) the records have; the title says which. Runs of fewer epochs than
    ``fractions`` are read at each epoch's end instead."""
    figure = new_figure(7.0, 5.5)
    axes = figure.add_subplot()
    configs = configurations(trials)
    dynamic = [c for c in configs if not c.fixed]
    fixed_lrs = sorted({c.lr for c in configs if c.fixed})
    lrs = {_nearest(fixed_lrs, c.lr) for c in dynamic} if dynamic else set(fixed_lrs)
    beacons = [c for c in configs if c.fixed and c.lr in lrs]
    epochs = min((int(t.rows["epoch"][-1]) for c in beacons + dynamic for t in c.trials),
                 default=len(fractions))
    if epochs < len(fractions):  # fewer epochs than points: one point per epoch's end
        fractions = tuple(e / epochs for e in range(1, epochs + 1))
    colours = dict(zip(sorted({c.batch_size for c in configs}),
                       _palette(len({c.batch_size for c in configs})), strict=True))
    for config in beacons:
        ck, lk = _path(config, fractions)
        axes.plot(ck, lk, linestyle=":", color=colours[config.batch_size], marker=".")
        if np.isfinite(ck[0]):
            axes.annotate(f"s{config.batch_size}", (ck[0], lk[0]), fontsize=8,
                          textcoords="offset points", xytext=(-12, 4))
    for index, (config, colour) in enumerate(zip(dynamic, run_colours(len(dynamic)),
                                                 strict=True)):
        ck, lk = _path(config, fractions)
        axes.plot(ck, lk, linestyle="-", marker=MARKERS[index % len(MARKERS)], color=colour,
                  linewidth=2.0, label=config.label)
    log_axes(axes)
    axes.set_xlabel("C̄K")
    axes.set_ylabel("LK")
    reading = ", ".join(f"{f:.0%}" for f in fractions)
    title = "Dynamic sampling over its beacons (dotted)" if dynamic else (
        "Beacons only: no dynamic-sampling trial in the records")
    beacon_lrs = ", ".join(f"{lr:.3g}" for lr in sorted(lrs))
    axes.set_title(f"{title}\nbeacons at lr {beacon_lrs}; points at {reading} of the budget",
                   fontsize=10)
    if dynamic:
        axes.legend(fontsize=8)
    return figure


def _path(config: Configuration, fractions: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    return (np.array([config.mean_at("ck_bar", f) for f in fractions]),
            np.array([config.mean_at("lk", f) for f in fractions]))


def _nearest(rates: list[float], lr: float) -> float:
    """The beacon lr for a dynamic run: its own, else the nearest in log scale."""
    return nearest_lr(rates, lr) if rates else lr


def _palette(n: int) -> list:
    from matplotlib import colormaps

    return [colormaps["plasma"](v) for v in np.linspace(0.0, 0.85, max(n, 1))][:n]
