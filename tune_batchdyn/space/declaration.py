"""``Space``: one declared search space, checked against ``TrialConfig`` when it is read.

A space file has three optional tables::

    [search]                      # sweep settings (``settings.SearchSettings``)
    metric = "val_error"
    mode = "min"
    [fixed]                       # TrialConfig fields held constant
    dataset = "digits"
    model = "mlp"
    epochs = 20
    [params]                      # TrialConfig fields searched (``params.FORMS``)
    batch_size = { grid = [8, 32, 128, 512] }
    lr = { loguniform = [0.001, 1.0] }

Keys of ``[fixed]`` and ``[params]`` are ``TrialConfig`` fields; a field may not be in both.
Reading builds a ``TrialConfig`` from the fixed values and the first value of every searched
field, then once more per further grid/choice value and range bound, so a bad value fails at
load time with ``TrialConfig``'s own message, prefixed by the file name.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.space.files import read_toml, resolve_space_path
from tune_batchdyn.space.params import Param, parse_param
from tune_batchdyn.space.settings import SearchSettings, parse_search

if TYPE_CHECKING:
    from tune_batchdyn.space.optuna_form import OptunaSpace

TABLES = ("search", "fixed", "params")


@dataclass(frozen=True)
class Space:
    """A checked search space: ``params`` searched, ``constants`` fixed, ``search`` settings.

    ``path`` is the file it was read from (``None`` when built from a mapping). Treat the
    mappings as read-only; ``to_ray`` and ``to_optuna`` hand out copies.
    """

    params: Mapping[str, Param]
    constants: Mapping[str, Any]
    search: SearchSettings = field(default_factory=SearchSettings)
    path: Path | None = None

    @property
    def source(self) -> str:
        """How error messages name this space: its file, or ``<space>``."""
        return str(self.path) if self.path is not None else "<space>"

    @property
    def grid_size(self) -> int:
        """Configurations in the grid: the product of the grid lengths (1 without grids)."""
        return math.prod(len(p.values) for p in self.params.values() if p.kind == "grid")

    @property
    def num_trials(self) -> int:
        """Trials Ray Tune starts for this space: ``grid_size * search.num_samples``."""
        return self.grid_size * self.search.num_samples

    def check_trials(self, overrides: Mapping[str, Any], flag: str = "--set") -> None:
        """Raise ``ConfigError`` (naming the file, ``flag`` and the field) unless the space's
        trials, with ``overrides`` in place of fixed or searched values, make valid
        ``TrialConfig`` objects (checked as at reading) whose torchvision data have a
        ``data_dir``: before any trial starts."""
        from tune_batchdyn.train.data import check_data_dir

        shown = " ".join(f"{key}={value!r}" for key, value in overrides.items())
        source = f"{self.source} with {flag} {shown}" if overrides else self.source
        params = {key: p for key, p in self.params.items() if key not in overrides}
        fixed = {**self.constants, **overrides}
        if overrides:
            _check_trial_configs(source, fixed, params)
        for dataset in self.listed("dataset", overrides):
            try:
                check_data_dir(dataset, fixed.get("data_dir"))
            except ConfigError as err:
                raise ConfigError(f"{source}: {err}") from err

    def listed(self, key: str, overrides: Mapping[str, Any]) -> list[Any]:
        """The values ``key`` takes: its override, else its fixed value (None when unset), else
        its grid or choice values (a range's bounds are not values: an empty list)."""
        if key in overrides:
            return [overrides[key]]
        param = self.params.get(key)
        if param is None:
            return [self.constants.get(key)]
        return list(param.values) if param.is_categorical else []

    def user_code_configs(self, overrides: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Config values (first choices elsewhere) for each combination of ``dataset``,
        ``model``, ``dataset_options`` and ``data_seed`` that names a user's code
        (``module:function``): what a command loads and probes before any trial starts."""
        from tune_batchdyn.user_code import is_import_path

        params = {key: p for key, p in self.params.items() if key not in overrides}
        fixed = {**self.constants, **overrides}
        fields = [key for key in ("dataset", "model", "dataset_options", "data_seed")
                  if key in params or key in fixed]
        first = {**fixed, **{key: p.values[0] for key, p in params.items()}}
        choices = [params[key].values if key in params else [fixed[key]] for key in fields]
        configs = [{**first, **dict(zip(fields, combination, strict=True))}
                   for combination in itertools.product(*choices)]
        return [values for values in configs
                if is_import_path(values.get("dataset")) or is_import_path(values.get("model"))]

    def to_ray(self) -> dict[str, Any]:
        """The Ray Tune ``param_space`` (``ray_form.to_ray``)."""
        from tune_batchdyn.space.ray_form import to_ray

        return to_ray(self)

    def to_optuna(self) -> OptunaSpace:
        """The Optuna form (``optuna_form.to_optuna``)."""
        from tune_batchdyn.space.optuna_form import to_optuna

        return to_optuna(self)


#: Most grid configurations a space may declare: every one is materialised (Ray's grid
#: search, Optuna's enqueued trials), and a grid beyond this runs for years anyway.
MAX_GRID = 100_000


def parse_space(declaration: Mapping[str, Any], *, path: Path | None = None) -> Space:
    """Check a declaration (a parsed TOML document) and return its ``Space``."""
    source = str(path) if path is not None else "<space>"
    unknown = sorted(set(declaration) - set(TABLES))
    if unknown:
        raise ConfigError(f"{source}: unknown table(s) {unknown}; accepted tables: "
                          f"{', '.join(f'[{t}]' for t in TABLES)}.")
    for table in TABLES:
        if not isinstance(declaration.get(table, {}), Mapping):
            raise ConfigError(f"{source}: {table}={declaration[table]!r} is not accepted; use "
                              f"a [{table}] table.")
    fixed = dict(declaration.get("fixed", {}))
    declared = dict(declaration.get("params", {}))
    accepted = _config_fields()
    for table, keys in (("fixed", fixed), ("params", declared)):
        unknown = sorted(set(keys) - set(accepted))
        if unknown:
            raise ConfigError(f"{source}: unknown [{table}] key(s) {unknown}; accepted keys "
                              f"(TrialConfig fields): {', '.join(accepted)}.")
    both = sorted(set(fixed) & set(declared))
    if both:
        raise ConfigError(f"{source}: key(s) {both} are in both [fixed] and [params]; keep each "
                          "field in one table.")
    params = {key: parse_param(source, key, raw) for key, raw in declared.items()}
    grid = math.prod(len(p.values) for p in params.values() if p.kind == "grid")
    if grid > MAX_GRID:
        sizes = " × ".join(f"{key} {len(p.values)}" for key, p in params.items()
                           if p.kind == "grid")
        raise ConfigError(f"{source}: the [params] grids make {grid:,} configurations ({sizes})"
                          f"; at most {MAX_GRID:,} are accepted: sample a large space with "
                          "choice or a range and [search] num_samples instead.")
    _check_trial_configs(source, fixed, params)
    search = parse_search(source, declaration.get("search", {}), params, fixed)
    return Space(params=params, constants=fixed, search=search, path=path)


def read_space(space: str | Path) -> Space:
    """Read a space file (a path, or the name of a shipped space such as ``"digits_mlp"``)."""
    path = resolve_space_path(space)
    return parse_space(read_toml(path), path=path)


def _config_fields() -> list[str]:
    from tune_batchdyn.train.config import config_fields

    return config_fields()


def _check_trial_configs(source: str, fixed: Mapping[str, Any],
                         params: Mapping[str, Param]) -> None:
    """Build a TrialConfig from the first configuration, then vary one searched value at a time."""
    from tune_batchdyn.train.config import TrialConfig

    first = {**fixed, **{key: p.values[0] for key, p in params.items()}}
    attempts = [(f"{source}: ", first)]
    attempts += [(f"{source}: [params] {key} = {value!r}: ", {**first, key: value})
                 for key, p in params.items() for value in p.values[1:]]
    for prefix, values in attempts:
        try:
            TrialConfig.from_dict(values)
        except ConfigError as err:
            raise ConfigError(f"{prefix}{err}") from err
        except (ValueError, TypeError) as err:  # a value of the wrong type deep inside
            raise ConfigError(f"{prefix}{type(err).__name__}: {err}, building a TrialConfig "
                              f"from {values!r}.") from err
    for key, p in params.items():
        if p.is_categorical:
            _check_same_meaning(source, key, p)


def _meaning(key: str, value: Any) -> Any:
    """What a listed value means to a trial: numbers by value (1 is 1.0), a strategy name
    as its spec table ("gg" is {name = "gg"})."""
    if key == "strategy" and isinstance(value, str):
        return {"name": value}
    return value


def _check_same_meaning(source: str, key: str, param: Param) -> None:
    """Two listed values that configure the same trial would train it twice."""
    for first, second in itertools.combinations(param.values, 2):
        if _meaning(key, first) == _meaning(key, second):
            raise ConfigError(f"{source}: [params] {key} = {{ {param.kind} = "
                              f"{list(param.values)!r} }}: {first!r} and {second!r} configure "
                              f"the same trial (it would train twice); list each {key} once.")
