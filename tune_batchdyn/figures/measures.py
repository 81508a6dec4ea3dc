"""C̄K and LK against the epoch (the seed's Fig. 2 c, d), one line per configuration (mean over
seeds): fixed batches solid, coloured by batch size and marked by lr (so the lrs of one batch
size are told apart); dynamic runs dashed, each in its own colour."""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from tune_batchdyn.figures._common import (
    Configuration,
    configurations,
    new_figure,
    run_colours,
)
from tune_batchdyn.predict.trials import TrialSet

#: One marker per learning rate, in increasing order of lr.
LR_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


def plot_measures(trials: TrialSet) -> Figure:
    """Two panels: C̄K(epoch) and LK(epoch), log scale."""
    figure = new_figure(11.0, 4.5)
    panels = figure.subplots(1, 2)
    configs = configurations(trials)
    sizes = sorted({c.batch_size for c in configs})
    shades = np.linspace(0.0, 0.85, max(len(sizes), 1))
    colour = {b: colormaps["plasma"](s) for b, s in zip(sizes, shades, strict=False)}
    dynamic = [c for c in configs if not c.fixed]
    run_colour = {id(c): rgb for c, rgb in zip(dynamic, run_colours(len(dynamic)), strict=True)}
    lrs = sorted({c.lr for c in configs})
    marker = {lr: LR_MARKERS[i % len(LR_MARKERS)] for i, lr in enumerate(lrs)}
    for config in configs:
        epochs = int(max(t.rows["epoch"][-1] for t in config.trials))
        grid = np.arange(1, epochs + 1)
        for axes, name in zip(panels, ("ck_bar", "lk"), strict=True):
            values = [_mean_by_epoch(config, name, e) for e in grid]
            axes.plot(grid, values,
                      color=colour[config.batch_size] if config.fixed else run_colour[id(config)],
                      linestyle="-" if config.fixed else "--", label=config.label,
                      marker=marker[config.lr] if config.fixed else None, markersize=3,
                      markevery=max(1, epochs // 10))
    for axes, title in zip(panels, ("C̄K up to each epoch", "LK up to each epoch"), strict=True):
        axes.set_yscale("log")
        axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_title(title)
    panels[0].set_ylabel("C̄K")
    panels[1].set_ylabel("LK")
    if len(configs) <= 16:
        panels[1].legend(fontsize=7, ncols=2)
    else:
        figure.suptitle(f"{len(configs)} configurations; colour = batch size ({sizes[0]} dark "
                        f".. {sizes[-1]} light), marker = lr ({lrs[0]:g} "
                        f"{LR_MARKERS[0]} .. {lrs[-1]:g} {marker[lrs[-1]]}); dashed = dynamic, "
                        "each its own colour", fontsize=9)
    return figure


def _mean_by_epoch(config: Configuration, name: str, epoch: int) -> float:
    values = []
    for trial in config.trials:
        rows = trial.rows
        hit = np.flatnonzero(rows["epoch"] == epoch)
        if len(hit) and np.isfinite(rows[name][hit[0]]):
            values.append(rows[name][hit[0]])
    return float(np.mean(values)) if values else np.nan
