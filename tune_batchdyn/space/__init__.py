"""Search spaces: one TOML declaration (``searchspaces/*.toml``) for Ray Tune and for Optuna.

    from tune_batchdyn.space import load_space, read_space, suggest

    param_space = load_space("searchspaces/digits_mlp.toml")        # Ray Tune param_space
    tuner = tune.Tuner(trainable, param_space=param_space, ...)

    space = load_space("digits_mlp", backend="optuna")              # OptunaSpace
    study.optimize(lambda trial: train(suggest(trial, space)))

    space = read_space("digits_mlp")       # Space: .params, .constants, .search, .grid_size
    space.search.metric, space.search.dynamic, space.to_ray(), space.to_optuna()

The file format is in ``declaration`` (tables), ``params`` (distribution forms) and
``settings`` (the ``[search]`` table). A bare name is looked up among the shipped spaces.
Reading TOML needs Python 3.11+ (``tomllib``); on 3.10 ``read_space`` raises ``ConfigError``.
Ray and Optuna are imported only by the backend conversions, not by this package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tune_batchdyn.errors import ConfigError, check_choice
from tune_batchdyn.space.declaration import Space, parse_space, read_space
from tune_batchdyn.space.files import SEARCHSPACES_DIR, shipped_spaces
from tune_batchdyn.space.optuna_form import OptunaSpace, grid_search_space, suggest
from tune_batchdyn.space.params import FORMS, Param
from tune_batchdyn.space.settings import SearchSettings

BACKENDS = ("ray", "optuna")


def load_space(path: str | Path, backend: str = "ray") -> dict[str, Any] | OptunaSpace:
    """Read a space file into the backend's form.

    ``backend="ray"``: the Ray Tune ``param_space`` dict (constants and ``tune`` sampling
    objects). ``backend="optuna"``: an ``OptunaSpace`` (``distributions``, ``constants``, and
    ``config(params)``), for ``suggest``, ``study.ask`` or ``grid_search_space``. The sweep
    settings (``[search]``) come with ``read_space(path).search``.
    """
    try:
        check_choice("backend", backend, BACKENDS)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err
    space = read_space(path)
    return space.to_ray() if backend == "ray" else space.to_optuna()


__all__ = ["BACKENDS", "FORMS", "SEARCHSPACES_DIR", "OptunaSpace", "Param",
           "SearchSettings", "Space", "grid_search_space", "load_space", "parse_space",
           "read_space", "shipped_spaces", "suggest"]
