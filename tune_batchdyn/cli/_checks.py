"""Checks a command runs before any trial starts, so a mistake is one line, not a failed trial
each."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tune_batchdyn.errors import ConfigError

if TYPE_CHECKING:
    from tune_batchdyn.space import Space


def check_user_code(space: Space, overrides: Mapping[str, Any]) -> None:
    """Load and probe each user dataset and model the space (with ``overrides``) names, once
    per combination (``train.engine.check_user_code``), naming the space in the error; a
    model whose C̄K/LK needs the torch.func fallback is said here, once (the trials' own log
    lines stay in their workers)."""
    configs = space.user_code_configs(overrides)
    if not configs:
        return
    from tune_batchdyn.train import TrialConfig
    from tune_batchdyn.train.engine import check_user_code as check_config

    said: set[tuple[str, ...]] = set()
    for values in configs:
        try:
            config = TrialConfig.from_dict(values)
            fallback = tuple(check_config(config))
        except ConfigError as err:
            raise ConfigError(f"{space.source}: {err}") from err
        if fallback and fallback not in said:
            said.add(fallback)
            print(f"note: model={config.model!r}: no per-sample rule for "
                  f"{', '.join(fallback)}; torch.func computes their share of C̄K/LK (slower)",
                  flush=True)
