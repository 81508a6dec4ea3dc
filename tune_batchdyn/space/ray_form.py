"""A ``Space`` as a Ray Tune ``param_space``: constants as plain values, searched fields as
``tune`` sampling objects.

============  =============================  =========================================
TOML          Ray Tune                        note
============  =============================  =========================================
grid          ``tune.grid_search(values)``    expanded: every value, in every repeat
choice        ``tune.choice(values)``
uniform       ``tune.uniform(low, high)``
loguniform    ``tune.loguniform(low, high)``
randint       ``tune.randint(low, high + 1)``  Ray excludes the upper bound; TOML includes it
lograndint    ``tune.lograndint(low, high + 1)``
============  =============================  =========================================

Ray is imported here, on first use, not when ``tune_batchdyn.space`` is imported. Importing
``ray.tune`` does not start Ray.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tune_batchdyn.space.declaration import Space
    from tune_batchdyn.space.params import Param


def to_ray(space: Space) -> dict[str, Any]:
    """``{**constants, **{field: tune domain}}``, for ``tune.Tuner(param_space=...)``."""
    return {**copy.deepcopy(dict(space.constants)),
            **{key: ray_domain(param) for key, param in space.params.items()}}


def ray_domain(param: Param) -> Any:
    """The ``ray.tune`` sampling object of one searched field."""
    from ray import tune

    if param.kind == "grid":
        return tune.grid_search(copy.deepcopy(list(param.values)))
    if param.kind == "choice":
        return tune.choice(copy.deepcopy(list(param.values)))
    low, high = param.values
    makers = {"uniform": tune.uniform, "loguniform": tune.loguniform}
    if param.kind in makers:
        return makers[param.kind](low, high)
    make_int = tune.lograndint if param.log else tune.randint
    return make_int(low, high + 1)
