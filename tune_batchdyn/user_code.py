"""A user's own model or dataset, named by import path: ``"package.module:function"``.

A string names the code, so it travels wherever a config goes (Ray workers, Optuna storages,
records, checkpoints, TOML spaces, ``--set model=...``) and every process imports it itself; the
module must be importable where trials run (installed, or on ``PYTHONPATH``; the command line
adds its working directory, as ``uvicorn module:app`` does).
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable
from typing import Any

from tune_batchdyn.errors import ConfigError

#: How the error messages name the form.
IMPORT_FORM = "'package.module:function'"
#: The calls a user's model and dataset functions must accept (``build_model``, ``load_data``).
MODEL_FORM = "function(input_shape, num_classes)"
DATASET_FORM = "function(data_seed, **dataset_options)"


def is_import_path(name: object) -> bool:
    """``name`` is of the form ``module:attribute`` (built-in names never hold a colon)."""
    return isinstance(name, str) and ":" in name


def import_callable(field: str, path: str) -> Callable[..., Any]:
    """The callable that ``path`` (``"package.module:function"``, attributes may be dotted)
    names; a ``ConfigError`` naming ``field`` when it cannot be imported or is not callable."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"{field}={path!r} is not accepted; an import path has the form "
                          f"{IMPORT_FORM}.")
    if module_name.endswith(".py") or "/" in module_name or "\\" in module_name:
        raise ConfigError(f"{field}={path!r} names a file; name the module instead, as "
                          f"{IMPORT_FORM} (e.g. 'mymodels:make_net' for mymodels.py in the "
                          "working directory).")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"{field}={path!r}: cannot import module {module_name!r} ({err}); "
                          "it must be importable where trials run (installed, or on "
                          "PYTHONPATH).") from err
    except Exception as err:  # the module itself raised while being imported
        raise ConfigError(f"{field}={path!r}: importing module {module_name!r} raised "
                          f"{type(err).__name__}: {err}") from err
    for part in attribute.split("."):
        if not hasattr(target, part):
            hint = (" (__main__ is the running script, which other processes such as Ray's "
                    "workers do not import: move the function into a module of its own)"
                    if module_name == "__main__" else "")
            raise ConfigError(f"{field}={path!r}: module {module_name!r} has no attribute "
                              f"{attribute!r}{hint}.")
        target = getattr(target, part)
    if not callable(target):
        kind = type(target).__name__
        article = "an" if kind[0].lower() in "aeiou" else "a"
        raise ConfigError(f"{field}={path!r} names {article} {kind}, not a function.")
    return target


def checked_callable(field: str, path: str, form: str, *args: Any,
                     **kwargs: Any) -> Callable[..., Any]:
    """The function ``path`` names, once its signature takes the arguments of ``form`` (how
    the contract writes the call, for the error); checked without calling it."""
    function = import_callable(field, path)
    try:
        inspect.signature(function).bind(*args, **kwargs)
    except TypeError as err:
        raise ConfigError(f"{field}={path!r} cannot be called as {form}: {err}.") from err
    except ValueError:  # no signature to inspect (some builtins): the call decides
        pass
    return function


def import_from_working_directory() -> None:
    """Let ``module:function`` name a module in the working directory, here and in the
    processes started from here (local Ray workers inherit ``PYTHONPATH``)."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.append(cwd)  # last: a stray torch.py there does not shadow the real one
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if cwd not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([cwd, *paths])
