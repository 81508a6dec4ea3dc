"""Argument checks and the warning shared by the iterative measures."""

from __future__ import annotations

from numbers import Integral

from torch import Tensor, nn

from tune_batchdyn.errors import ConfigError


class ConvergenceWarning(RuntimeWarning):
    """An iterative measure stopped at its iteration limit before meeting its tolerance."""


def check_positive_int(name: str, value: object) -> None:
    """Raise `ConfigError` unless ``value`` is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ConfigError(f"{name} must be a positive integer; got {name}={value!r}.")


def check_tolerance(tol: object) -> None:
    """Raise `ConfigError` unless ``tol`` is a relative tolerance in (0, 1)."""
    if isinstance(tol, bool) or not isinstance(tol, int | float) or not 0.0 < tol < 1.0:
        raise ConfigError(f"tol must be a number in (0, 1); got tol={tol!r}.")


def check_fraction(name: str, value: object) -> None:
    """Raise `ConfigError` unless ``value`` is a number in (0, 1)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < value < 1.0:
        raise ConfigError(f"{name} must be a number in (0, 1), e.g. 1e-3; got {name}={value!r}.")


def check_batch(inputs: object, targets: object) -> int:
    """Raise `ConfigError` unless ``inputs`` is a tensor of B >= 1 samples, batch first, and
    ``targets`` (when a tensor) holds one entry per sample; returns B."""
    if not isinstance(inputs, Tensor):
        raise ConfigError(f"inputs must be a torch.Tensor, batch first; got "
                          f"{type(inputs).__name__} (torch.as_tensor converts it).")
    if inputs.dim() == 0 or inputs.shape[0] == 0:
        raise ConfigError(f"inputs must hold at least one sample, batch first; got shape "
                          f"{tuple(inputs.shape)}.")
    batch = inputs.shape[0]
    if isinstance(targets, Tensor) and (targets.dim() == 0 or targets.shape[0] != batch):
        raise ConfigError(f"targets must hold one entry per sample, shape ({batch}, ...) for "
                          f"inputs of shape {tuple(inputs.shape)} (batch first: one sample is "
                          f"x.unsqueeze(0)); got targets of shape {tuple(targets.shape)}.")
    return batch


def check_trainable(model: nn.Module) -> None:
    """Raise `ConfigError` unless ``model`` has a parameter with ``requires_grad``."""
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError(f"{type(model).__name__} has no trainable parameters "
                          "(requires_grad=True): there is no gradient to measure.")
