"""The (C̄K, LK) plane (the seed's Fig. 1b / Fig. 3): finished trials on log axes, the contour
map of the 5-nearest average final error over the trials' hull, and the optimum region (white
boundary, red centre); the best configurations are labelled."""

from __future__ import annotations

import numpy as np
from matplotlib import patheffects
from matplotlib.figure import Figure

from tune_batchdyn.figures._common import configurations, log_axes, new_figure
from tune_batchdyn.predict.region import OptimumRegion
from tune_batchdyn.predict.trials import TrialSet

#: How many of the best configurations get a label.
LABELLED = 5
#: The colour scale ends at this percentile of the trials' final errors.
COLOUR_PERCENTILE = 60


def plot_plane(trials: TrialSet, region: OptimumRegion) -> Figure:
    """The plane at the region's budget fraction, with the region's error map and boundary."""
    figure = new_figure(7.0, 5.5)
    axes = figure.add_subplot()
    ck_axis, lk_axis, error, support = region.grid_
    x, y = np.meshgrid(np.exp(ck_axis), np.exp(lk_axis))
    error = np.where(support, error, np.nan)  # only where the trials say something
    # colours resolve the better half of the trials; worse ones (diverged: chance level)
    # saturate, else they would squeeze the differences that matter into one colour
    low = float(np.nanmin(error))
    high = max(float(np.nanpercentile(region.errors_, COLOUR_PERCENTILE)), low + 1e-6)
    levels = np.linspace(low, high, 13)
    filled = axes.contourf(x, y, np.clip(error, low, high), levels=levels, cmap="viridis",
                           alpha=0.85)
    label = ("final error of the nearest trial" if region.k == 1
             else f"final error, mean of {region.k} nearest trials")
    colour_bar = figure.colorbar(filled, ax=axes, extend="max", label=label)
    colour_bar.ax.ticklabel_format(useOffset=False)  # not "1e-6+7.222e-2" over the title
    axes.contour(x, y, error, levels=[region.threshold_ + 1e-9], colors="white",
                 linewidths=2.0)
    points = np.exp(region.points_)
    axes.scatter(points[:, 0], points[:, 1], c=region.errors_, cmap="viridis", edgecolors="k",
                 vmin=low, vmax=high, s=28, zorder=3)
    axes.plot(*region.centre_, marker="X", color="red", markersize=12, zorder=4,
              linestyle="none", label="optimum region centre (white: boundary)")
    ranked = sorted(configurations(trials.finished()),
                    key=lambda c: np.mean([t.final_error for t in c.trials]))
    ck_range = np.log(x.min()), np.log(x.max())
    for config in ranked[:LABELLED]:
        ck, lk = (config.mean_at(name, region.fraction) for name in ("ck_bar", "lk"))
        if np.isfinite(ck) and np.isfinite(lk):
            # dark text with a light halo: readable on the contours and on the blank paper
            # outside the trials' hull alike; left of points in the right third, so that it
            # stays inside the axes
            right = np.log(ck) > ck_range[0] + 0.67 * (ck_range[1] - ck_range[0])
            axes.annotate(config.label, (ck, lk), textcoords="offset points",
                          xytext=(-5, 5) if right else (5, 5), ha="right" if right else "left",
                          fontsize=8, color="black", zorder=5, clip_on=True,
                          path_effects=[patheffects.withStroke(linewidth=2.5,
                                                               foreground="white")])
    log_axes(axes)
    axes.set_xlabel("C̄K (running mean of the truncated condition number)")
    axes.set_ylabel("LK (weighted cumulative energy)")
    axes.set_title(f"Final error in the (C̄K, LK) plane at {region.fraction:.0%} of the budget")
    axes.legend(loc="lower right", fontsize=8)
    return figure
