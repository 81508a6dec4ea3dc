"""RMSGD (stable-rank-quality-rmsgd, Algorithm 1): SGD with one learning rate per layer, set
each epoch from the change of the layer's stable rank.

Per layer ℓ, each step k of epoch t and, after the epoch, the rate:

    v_ℓ ← α v_ℓ − η_ℓ(t) g_ℓ,      w_ℓ ← w_ℓ + v_ℓ                       (α = 0.9)
    η_ℓ(t+1) = β η_ℓ(t) + ζ [s_ℓ(t) − s_ℓ(t−1)],   s_ℓ(0) = 0, η_ℓ(0) = lr (β = 0.98, ζ = 1)

with s the stable rank of the layer's weight after EVBMF (``measures.layer_quality``) and g
including weight decay. All parameters of a layer share its rate: a parameter with two or more
dimensions opens a layer, and the 1-D parameters registered after it (bias, the next norm
layer's weight and bias) join it, as the authors' code masks them onto the previous layer.

Departures, all from the authors' code (github.com/mahdihosseini/RMSGD): while a layer's stable
rank has never been non-zero (an empty low-rank part, typical at initialisation) its rate stays
at η(0); rates are kept at least ``min_lr`` (1e-10). The velocity form above is the paper's
(the authors' code uses torch's v ← αv + g, w ← w − ηv, which differs when η changes).
η(0) is the trial's ``lr`` (the seed's is 0.03: ``lr=0.03``), so a swept lr is the initial
rate; the strategy's ``initial_lr`` fixes it instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.measures import layer_quality
from tune_batchdyn.strategies.base import RunView, StepPlan, Strategy
from tune_batchdyn.strategies.registry import register


def layer_param_groups(model: nn.Module) -> list[dict[str, Any]]:
    """One parameter group per layer (see the module docstring), each with the layer's name."""
    groups: list[dict[str, Any]] = []
    pending: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.dim() >= 2:
            groups.append({"params": [param], "layer": name.rsplit(".", 1)[0]})
        elif groups:
            groups[-1]["params"].append(param)
        else:
            pending.append(param)
    if not groups:
        return [{"params": pending, "layer": "all"}]
    groups[0]["params"] = [*pending, *groups[0]["params"]]
    return groups


def rmsgd_rate(*, rate: float, stable_rank: float, previous_stable_rank: float, beta: float,
               zeta: float, initial_rate: float, ready: bool, min_rate: float) -> float:
    """η(t+1) = max(β η(t) + ζ (s(t) − s(t−1)), min_rate); η(0) while the layer is not ready."""
    if not ready:
        return initial_rate
    return max(beta * rate + zeta * (stable_rank - previous_stable_rank), min_rate)


def check_settings(owner: str, **settings: Any) -> None:
    """Raise ConfigError for a setting out of its range (lr > 0, 0 <= momentum, beta < 1, ...)."""
    ranges = {"lr": (0, False, None), "initial_lr": (0, False, None), "momentum": (0, True, 1),
              "beta": (0, True, 1), "zeta": (0, True, None), "weight_decay": (0, True, None),
              "min_lr": (0, True, None)}
    for field, value in settings.items():
        low, closed, high = ranges[field]
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = number and (value >= low if closed else value > low) \
            and (high is None or value < high) and value < float("inf")
        if not ok:
            accepted = f"{'[' if closed else '('}{low}, {high if high is not None else 'inf'})"
            raise ConfigError(f"{owner}: {field}={value!r} is not accepted; use a number in "
                              f"{accepted}.")


class RMSGD(torch.optim.Optimizer):
    """Rank-momentum SGD; call ``epoch_step()`` after each epoch to update the per-layer rates.

    Example::

        optimizer = RMSGD(layer_param_groups(model))
        for epoch in range(epochs):
            for x, y in batches:
                optimizer.zero_grad(); loss_fn(model(x), y).backward(); optimizer.step()
            rates = optimizer.epoch_step()
    """

    def __init__(self, params: Iterable[Any], lr: float = 0.03, momentum: float = 0.9,
                 beta: float = 0.98, zeta: float = 1.0, weight_decay: float = 0.0,
                 min_lr: float = 1e-10) -> None:
        check_settings("RMSGD", lr=lr, momentum=momentum, beta=beta, zeta=zeta,
                       weight_decay=weight_decay, min_lr=min_lr)
        defaults = {"lr": lr, "initial_lr": lr, "momentum": momentum, "beta": beta, "zeta": zeta,
                    "weight_decay": weight_decay, "min_lr": min_lr}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """v ← αv − η(g + λw); w ← w + v, per parameter with its layer's η."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                if group["weight_decay"]:
                    grad = grad.add(param, alpha=group["weight_decay"])
                state = self.state[param]
                if "velocity" not in state:
                    state["velocity"] = torch.zeros_like(param)
                velocity = state["velocity"]
                velocity.mul_(group["momentum"]).add_(grad, alpha=-group["lr"])
                param.add_(velocity)
        return loss

    @torch.no_grad()
    def epoch_step(self) -> list[float]:
        """Update every layer's rate from its weight's stable rank; returns the new rates."""
        for group in self.param_groups:
            weight = next((p for p in group["params"] if p.dim() >= 2), None)
            if weight is None:
                continue
            state = self.state[weight]
            stable_rank = float(layer_quality(weight.detach())["stable_rank"])
            previous = float(state.get("stable_rank", 0.0))
            ready = bool(state.get("ready", False)) or stable_rank != 0.0
            group["lr"] = rmsgd_rate(rate=group["lr"], stable_rank=stable_rank,
                                     previous_stable_rank=previous, beta=group["beta"],
                                     zeta=group["zeta"], initial_rate=group["initial_lr"],
                                     ready=ready, min_rate=group["min_lr"])
            state["stable_rank"] = stable_rank
            state["ready"] = ready
        return [group["lr"] for group in self.param_groups]


class RankMomentum(Strategy):
    """``rmsgd``: the RMSGD optimiser at a fixed batch; the engine leaves its rates alone.

    ``initial_lr``: η(0) of every layer; None (default) takes the trial's ``lr``.
    """

    name = "rmsgd"
    version = 1

    def __init__(self, initial_lr: float | None = None, beta: float = 0.98, zeta: float = 1.0,
                 min_lr: float = 1e-10) -> None:
        super().__init__()
        check_settings("strategy 'rmsgd'", beta=beta, zeta=zeta, min_lr=min_lr,
                       **({} if initial_lr is None else {"initial_lr": initial_lr}))
        self.initial_lr, self.beta, self.zeta, self.min_lr = initial_lr, beta, zeta, min_lr

    def make_optimizer(self, model: nn.Module, run: RunView) -> torch.optim.Optimizer:
        initial = run.base_lr if self.initial_lr is None else self.initial_lr
        return RMSGD(layer_param_groups(model), lr=initial, momentum=run.momentum,
                     beta=self.beta, zeta=self.zeta, weight_decay=run.weight_decay,
                     min_lr=self.min_lr)

    def plan_step(self, run: RunView) -> StepPlan:
        return StepPlan(run.base_batch_size, None)

    def end_epoch(self, run: RunView, record: dict[str, Any]) -> None:
        optimizer = run.optimizer
        if not isinstance(optimizer, RMSGD):
            return
        rates = optimizer.epoch_step()
        layers = ", ".join(f"{group['layer']} {rate:.4g}"
                           for group, rate in zip(optimizer.param_groups, rates, strict=True))
        self.log(f"per-layer lr after epoch {run.epoch + 1}: {layers}")


register("rmsgd", RankMomentum)
