"""Shared pieces of the figures: configurations of a records table and an Agg figure."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogFormatter

from tune_batchdyn.predict.trials import Trial
from tune_batchdyn.strategies.dynamic_sampling import run_lengths

#: Longest strategy name shown in a configuration's label.
NAME_WIDTH = 30


@dataclass(frozen=True)
class Configuration:
    """The trials (seeds) of one (strategy, lr, batch size)."""

    strategy: str
    lr: float
    batch_size: int
    trials: tuple[Trial, ...]

    @property
    def label(self) -> str:
        """E.g. ``s128-lr0.1``; a planned schedule's batch list with its repeats as runs
        (``[32×2,128×3]``), cut to `NAME_WIDTH` characters (a 20-epoch list would squeeze the
        plot out of its figure)."""
        name = f"s{self.batch_size}" if self.strategy == "fixed" else run_lengths(self.strategy)
        if len(name) > NAME_WIDTH:
            name = name[: NAME_WIDTH - 2] + "…" + name[-1]
        return f"{name}-lr{self.lr:.3g}"

    @property
    def fixed(self) -> bool:
        return self.strategy == "fixed"

    def mean_at(self, name: str, fraction: float) -> float:
        """Mean over the seeds that reached ``fraction`` without diverging (NaN if none)."""
        values = [t.at(name, fraction) for t in self.trials
                  if not t.diverged and t.fraction >= fraction - 1e-9]
        values = [v for v in values if math.isfinite(v)]
        return float(np.mean(values)) if values else math.nan


def configurations(trials: Iterable[Trial]) -> list[Configuration]:
    """Trials grouped by (strategy, lr, batch size) (``Trial.strategy``, the base lr, the
    config's batch size or else the first epoch's)."""
    groups: dict[tuple[str, float, int], list[Trial]] = {}
    for trial in trials:
        batch = int(trial.config.get("batch_size", trial.rows["batch_size"][0]))
        groups.setdefault((trial.strategy, round(trial.base_lr, 12), batch), []).append(trial)
    return [Configuration(s, lr, b, tuple(ts)) for (s, lr, b), ts in sorted(groups.items())]


def run_colours(n: int) -> list:
    """``n`` colours that tell dynamic runs apart (a qualitative palette, repeated past 10)."""
    return [colormaps["tab10"](i % 10) for i in range(n)]


def new_figure(width: float, height: float) -> Figure:
    """A matplotlib figure on the Agg canvas (no pyplot, no global backend switch)."""
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def log_axes(axes: Axes) -> None:
    """Both axes in log scale with plain tick labels (0.01, 2, 30 rather than 10^-2, 2x10^0)."""
    for axis, scale in ((axes.xaxis, axes.set_xscale), (axes.yaxis, axes.set_yscale)):
        scale("log")
        axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.5)))
