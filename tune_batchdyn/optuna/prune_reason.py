"""Why ``MeasurePruner`` pruned a trial, kept with the trial in the storage.

The user attribute ``prune/reason`` (`PRUNE_REASON_ATTR`) is ``{"by": "<base pruner's
class>"}`` when the base pruner's rung pruned the trial, or ``{"by": "bound", "lower_bound": b,
"rival": v, "k": k, "confidence": c}`` when the conformal bound b of its final error was above
v, the k-th best completed trial's value; ``"by": "configuration"`` with the same numbers
when the bound was its configuration's, before it trained; ``{"by": "rung", "rung": j,
"step": s, "lower_bound": b, "rival": v, "confidence": c}`` when the bound b of its value at
the base pruner's rung j (step s) was above v, the value that rung would still promote
(before it trained for rung 0; at rung j − 1, once promoted there, for the others).
`reason_text` writes it for people: the objective's ``TrialPruned`` message (Optuna logs it)
and the sweep's decision log, as the Ray scheduler's log gives its numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna
from optuna.trial import FrozenTrial

PRUNE_REASON_ATTR = "prune/reason"


def store_reason(study: optuna.Study, trial: FrozenTrial, reason: dict[str, Any]) -> None:
    """Set ``prune/reason`` on the running trial. A pruner gets a frozen copy of the trial, so
    the attribute goes through the storage, as Optuna's SuccessiveHalvingPruner stores its
    rungs."""
    study._storage.set_trial_user_attr(trial._trial_id, PRUNE_REASON_ATTR, reason)


def reason_text(user_attrs: Mapping[str, Any]) -> str:
    """``by SuccessiveHalvingPruner`` or ``by the bound: lower_bound=0.0213 > rival=0.0139,
    the k=3 best, confidence 0.9`` (``by the configuration's bound: ...``, ``by the bound at
    rung 0 (step 1): lower_bound=0.52 > rival=0.41, the value that rung promotes,
    confidence 0.9``); "" for a trial without a reason (another pruner's)."""
    reason = user_attrs.get(PRUNE_REASON_ATTR)
    if not isinstance(reason, dict) or "by" not in reason:
        return ""
    if reason["by"] == "rung":
        return (f"by the bound at rung {reason['rung']} (step {reason['step']}): "
                f"lower_bound={reason['lower_bound']:.4g} > rival={reason['rival']:.4g}, "
                f"the value that rung promotes, confidence {reason['confidence']:g}")
    if reason["by"] not in ("bound", "configuration"):
        return f"by {reason['by']}"
    whose = "the configuration's bound" if reason["by"] == "configuration" else "the bound"
    return (f"by {whose}: lower_bound={reason['lower_bound']:.4g} > "
            f"rival={reason['rival']:.4g}, the k={reason['k']} best, "
            f"confidence {reason['confidence']:g}")
