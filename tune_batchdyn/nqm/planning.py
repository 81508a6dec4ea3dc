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
from tune_batchdyn.nqm.checks import positive_number
from tune_batchdyn.nqm.model import NQM


def suggest_batch_sizes(noise_scale: float | None = None, nqm: NQM | None = None, *,
                        optimizer: str = "sgd", target: float = 0.01, below: float = 64.0,
                        above: float = 4.0, min_batch: int = 1,
                        max_batch: int | None = None) -> list[int]:
    """Powers of two from ``B_crit / below`` to ``B_crit * above``, within
    ``[min_batch, max_batch]``.

    Give exactly one of ``noise_scale`` (a measured noise scale, taken as ``B_crit``) or ``nqm``
    (its ``critical_batch_size(optimizer, target)``).

    >>> suggest_batch_sizes(noise_scale=1000.0)
    [16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
    """
    if (noise_scale is None) == (nqm is None):
        raise ConfigError("suggest_batch_sizes needs exactly one of noise_scale (a measured "
                          f"noise scale) or nqm (an NQM); got noise_scale={noise_scale!r}, "
                          f"nqm={nqm!r}.")
    if noise_scale is not None:
        b_crit = positive_number("noise_scale", noise_scale)
    else:
        b_crit = nqm.critical_batch_size(optimizer, target)  # type: ignore[union-attr]
        if not math.isfinite(b_crit):
            raise ConfigError(f"the NQM's critical batch size for optimizer={optimizer!r}, "
                              f"target={target!r} could not be fitted; pass noise_scale instead.")
    low = positive_number("below", below)
    high = positive_number("above", above)
    smallest = int(positive_number("min_batch", min_batch))
    largest = None if max_batch is None else int(positive_number("max_batch", max_batch))
    if largest is not None and largest < smallest:
        raise ConfigError(f"max_batch={max_batch!r} is not accepted; use a value >= "
                          f"min_batch={min_batch!r}.")
    first = max(0, math.ceil(math.log2(max(b_crit / low, smallest))))
    last = max(first, math.ceil(math.log2(b_crit * high)))
    sizes = [2**k for k in range(first, last + 1)]
    return [b for b in sizes
            if b >= smallest and (largest is None or b <= largest)] or [smallest]
