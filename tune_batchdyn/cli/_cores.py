"""Share a machine's cores among the Optuna sweep's trials running on it.

Every worker process of a shared study trains in its own process with torch's default thread
count, the machine's cores; several workers on one machine then run more threads than cores,
and OpenMP's threads wait on each other: two workers on a 2-core machine took 31 s for the
digits grid at 5 epochs where one took 17 s, and 15.5 s with one thread each. Ray avoids this by
giving each trial ``cpus_per_trial`` threads. Here each trial notes its machine in the study
(system attribute ``worker/host``) as it starts, and its worker takes an equal share of the
cores among the study's trials running there. An ``OMP_NUM_THREADS`` set by the user is left
as it is.
"""

from __future__ import annotations

import functools
import os
import socket

import optuna
import torch

#: Trial system attribute: the machine the trial runs on.
HOST_ATTR = "worker/host"


@functools.cache
def machine_threads() -> int:
    """torch's thread count before any sharing: the process's default (the machine's cores)."""
    return torch.get_num_threads()


def share_cores(trial: optuna.trial.Trial) -> int:
    """Mark ``trial`` as running on this machine and set torch's threads to the machine's
    share for it: its cores divided by the study's trials running here (at least 1). Returns
    the thread count."""
    host = socket.gethostname()
    trial.storage.set_trial_system_attr(trial._trial_id, HOST_ATTR, host)
    if "OMP_NUM_THREADS" in os.environ:
        return torch.get_num_threads()
    running = trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    here = sum(t.system_attrs.get(HOST_ATTR) == host for t in running)
    threads = max(1, machine_threads() // max(here, 1))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads
