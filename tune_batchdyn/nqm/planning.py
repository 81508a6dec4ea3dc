"""Which batch sizes are worth sweeping: powers of two around the critical batch size.

Below ``B_crit`` steps to target halve when the batch doubles (perfect scaling: the sweep only
needs a few points there to see it); a few times above it the steps stop falling, so larger
batches only cost compute. The suggestion is every power of two from ``B_crit / below`` to
``B_crit * above``. ``B_crit`` comes from a measured gradient noise scale (McCandlish et al.:
``B_crit ~ B_noise``; a ``B_simple`` measurement is the usual estimate) or from a fitted
:class:`~.model.NQM`'s steps-vs-batch curve.
"""

from __future__ import annotations

import math

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.nqm.checks import positive_number, whole_number
from tune_batchdyn.nqm.model import NQM


def suggest_batch_sizes(noise_scale: float | None = None, nqm: NQM | None = None, *,
                        optimizer: str = "sgd", target: float = 0.01, below: float = 64.0,
                        above: float = 4.0, min_batch: int = 1,
                        max_batch: int | None = None) -> list[int]:
    """Powers of two from ``B_crit / below`` to ``B_crit * above``, within
    ``[min_batch, max_batch]`` (integers).

    Give exactly one of ``noise_scale`` (a measured noise scale, taken as ``B_crit``) or ``nqm``
    (its ``critical_batch_size(optimizer, target)``). When that window lies wholly outside
    ``[min_batch, max_batch]``, the allowed power of two nearest it is the one size worth
    running (the largest that fits when ``B_crit`` is far above ``max_batch``: perfect scaling
    there, so the largest batch takes the fewest steps); a range that holds no power of two is
    refused.

    >>> suggest_batch_sizes(noise_scale=1000.0)
    [16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
    >>> suggest_batch_sizes(noise_scale=1000.0, max_batch=8)
    [8]
    """
    if (noise_scale is None) == (nqm is None):
        raise ConfigError("suggest_batch_sizes needs exactly one of noise_scale (a measured "
                          f"noise scale) or nqm (an NQM); got noise_scale={noise_scale!r}, "
                          f"nqm={nqm!r}.")
    low = positive_number("below", below)
    high = positive_number("above", above)
    smallest = whole_number("min_batch", min_batch, minimum=1)
    largest = None if max_batch is None else whole_number("max_batch", max_batch, minimum=1)
    if largest is not None and largest < smallest:
        raise ConfigError(f"max_batch={max_batch!r} is not accepted; use a value >= "
                          f"min_batch={min_batch!r}.")
    low_k = (smallest - 1).bit_length()  # the first power of two >= min_batch
    high_k = None if largest is None else largest.bit_length() - 1  # the last <= max_batch
    if high_k is not None and high_k < low_k:
        raise ConfigError(f"min_batch={min_batch!r}, max_batch={max_batch!r} is not accepted: "
                          "no power of two lies between them; widen the range.")
    if noise_scale is not None:
        b_crit = positive_number("noise_scale", noise_scale)
    else:
        b_crit = nqm.critical_batch_size(optimizer, target)  # type: ignore[union-attr]
        if not math.isfinite(b_crit):
            raise ConfigError(f"the NQM's critical batch size for optimizer={optimizer!r}, "
                              f"target={target!r} could not be fitted; pass noise_scale instead.")
    window_first = math.ceil(math.log2(b_crit / low))
    window_last = max(window_first, math.ceil(math.log2(b_crit * high)))
    first = max(window_first, low_k)
    last = window_last if high_k is None else min(window_last, high_k)
    if first > last:  # the window lies below min_batch or above max_batch: its nearest end
        return [2 ** (low_k if window_last < low_k else high_k)]
    return [2**k for k in range(first, last + 1)]
