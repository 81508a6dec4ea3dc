"""The NQM's diagonal problem: curvatures h, per-sample gradient-noise variances c, counts.

The loss is ``L(x) = sum_i h_i x_i**2 / 2`` with the optimum at the origin; one gradient query
is ``h_i x_i + sqrt(c_i) * xi_i`` with unit-variance noise ``xi_i`` (C diagonal in H's basis,
i.e. codiagonal). ``x(0)`` has mean zero and ``E[x_i(0)**2] = x0_var``.

Binning (the seed: 100 bins): the eigenvalues fall into geometric bins over ``[h_min, h_max]``;
each non-empty bin is one representative dimension with the bin's mean ``h`` and mean ``c`` and
a ``count``. Every quantity of the model is a sum over dimensions of a function of ``(h, c)``,
so the bin sum ``count * f(mean h, mean c)`` is the midpoint rule for that sum; ``bins=None``
keeps every dimension (exact).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.nqm.checks import positive_number, whole_number

SPECTRUM_FORMS = ("'1/i'", "'1/i^<a>' (a > 0)", "a sequence of positive eigenvalues")
NOISE_FORMS = ("'C=H'", "'C=I'", "'C=H^<q>'", "a sequence of non-negative variances (one per dim)")

_POWER_SPECTRUM = re.compile(r"^1/i(?:\^(?P<a>[0-9.eE+-]+))?$")
_POWER_NOISE = re.compile(r"^C=H(?:\^(?P<q>[0-9.eE+-]+))?$")


@dataclass(frozen=True)
class Spectrum:
    """The (possibly binned) diagonal problem; arrays of one length, one entry per bin."""

    curvature: np.ndarray  # h, > 0
    noise: np.ndarray  # c, per-sample gradient-noise variance, >= 0
    count: np.ndarray  # dimensions in the bin (1 when unbinned)
    x0_var: float  # E[x_i(0)^2]

    @property
    def dim(self) -> int:
        return int(self.count.sum())

    def initial_risk(self) -> float:
        """Expected risk at step 0: ``sum_i h_i x0_var / 2``."""
        return float(np.sum(self.count * self.curvature) * self.x0_var / 2.0)


def eigenvalues(dim: int, spectrum: str | Sequence[float] | np.ndarray) -> np.ndarray:
    """Hessian eigenvalues ``h_1..h_dim``: ``'1/i'`` (the seed), ``'1/i^a'``, or given values."""
    if isinstance(spectrum, str):
        match = _POWER_SPECTRUM.match(spectrum.replace(" ", ""))
        if match is None:
            raise ConfigError(
                f"spectrum={spectrum!r} is not accepted; use one of: {', '.join(SPECTRUM_FORMS)}."
            )
        power = positive_number("spectrum power", match["a"] or 1.0)
        return np.arange(1, dim + 1, dtype=float) ** -power
    values = np.asarray(spectrum, dtype=float)
    if values.shape != (dim,) or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ConfigError(
            f"spectrum (a sequence) must hold {dim} finite values > 0 (dim={dim}); got shape "
            f"{values.shape}. Accepted: {', '.join(SPECTRUM_FORMS)}."
        )
    return values


def noise_variances(curvature: np.ndarray, noise: str | Sequence[float] | np.ndarray) -> np.ndarray:
    """Per-sample gradient-noise variances ``c_i``: ``'C=H'`` (the seed), ``'C=I'``, ``'C=H^q'``."""
    if isinstance(noise, str):
        text = noise.replace(" ", "")
        if text == "C=I":
            return np.ones_like(curvature)
        match = _POWER_NOISE.match(text)
        if match is None:
            raise ConfigError(
                f"noise={noise!r} is not accepted; use one of: {', '.join(NOISE_FORMS)}."
            )
        power = positive_number("noise power", match["q"] or 1.0, allow_zero=True)
        return curvature**power
    values = np.asarray(noise, dtype=float)
    if values.shape != curvature.shape or not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ConfigError(
            f"noise (a sequence) must hold {curvature.size} finite values >= 0; got shape "
            f"{values.shape}. Accepted: {', '.join(NOISE_FORMS)}."
        )
    return values


def bin_spectrum(curvature: np.ndarray, noise: np.ndarray, bins: int) -> tuple[np.ndarray, ...]:
    """Group dimensions into ``bins`` geometric bins of curvature; drop empty bins.

    Returns ``(mean h, mean c, count)`` per non-empty bin, in increasing curvature.
    """
    low, high = float(curvature.min()), float(curvature.max())
    if low == high:
        return np.array([low]), np.array([noise.mean()]), np.array([float(curvature.size)])
    edges = np.geomspace(low, high, bins + 1)
    index = np.clip(np.searchsorted(edges, curvature, side="right") - 1, 0, bins - 1)
    count = np.bincount(index, minlength=bins).astype(float)
    keep = count > 0
    mean_h = np.bincount(index, weights=curvature, minlength=bins)[keep] / count[keep]
    mean_c = np.bincount(index, weights=noise, minlength=bins)[keep] / count[keep]
    return mean_h, mean_c, count[keep]


def build_spectrum(
    dim: int,
    spectrum: str | Sequence[float] | np.ndarray,
    noise: str | Sequence[float] | np.ndarray,
    bins: int | None,
    x0_var: float,
) -> Spectrum:
    """Validate the settings and build the (binned) problem."""
    size = whole_number("dim", dim, minimum=1)
    if bins is not None and (isinstance(bins, bool) or not isinstance(bins, int | np.integer)
                             or bins < 1):
        raise ConfigError(f"bins={bins!r} is not accepted; use an integer >= 1 or None.")
    variance = positive_number("x0_var", x0_var)
    curvature = eigenvalues(size, spectrum)
    variances = noise_variances(curvature, noise)
    if bins is None:
        order = np.argsort(curvature)
        return Spectrum(curvature[order], variances[order], np.ones(size), variance)
    mean_h, mean_c, count = bin_spectrum(curvature, variances, int(bins))
    return Spectrum(mean_h, mean_c, count, variance)
