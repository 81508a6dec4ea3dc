"""``DecisionsCallback``: at the end of a run, write the decisions table and print its summary.

``decisions.csv`` goes to the experiment folder in the run's storage (``storage_path`` /
``name``, local or remote: it is written through the storage's own filesystem, after Ray's final
sync), and one line is printed: ``decisions: stopped=<n> rerouted=<n> spawned=<n>``. The
callback holds nothing of its own: the decisions live in the ``TrialHistory`` it reads. Ray
saves callbacks with the experiment (``get_state``) and restores them on ``Tuner.restore``, so
the callback also carries that history through a restore: a ``MeasureScheduler`` used without a
``DynamicSamplingSearcher`` (whose checkpoint carries it otherwise) resumes with its trials and
decisions instead of an empty history.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any

from ray import tune as ray_tune

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.tune.history import TrialHistory

#: File name of the decisions table in the experiment folder.
DECISIONS_FILE = "decisions.csv"


class DecisionsCallback(ray_tune.Callback):
    """Write ``decisions.csv`` and print the summary line when the experiment ends.

    ``source``: a ``MeasureScheduler``, a ``DynamicSamplingSearcher`` or their
    ``TrialHistory``; ``echo``: where the line goes (``print`` by default).
    """

    def __init__(self, source: Any, filename: str = DECISIONS_FILE,
                 echo: Callable[[str], Any] = print) -> None:
        history = source if isinstance(source, TrialHistory) else getattr(source, "history",
                                                                           None)
        if not isinstance(history, TrialHistory):
            raise ConfigError(f"DecisionsCallback: source={source!r} is not accepted; use a "
                              "MeasureScheduler, a DynamicSamplingSearcher or their "
                              "TrialHistory.")
        self.history: TrialHistory = history
        self.filename = filename
        self.echo = echo
        self.path: str | None = None

    def get_state(self) -> dict[str, Any]:
        return {"history": self.history.get_state()}

    def set_state(self, state: dict[str, Any]) -> None:
        self.history.set_state(state["history"])  # in place: the scheduler holds this object

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if trials:
            storage = trials[0].storage
            path = str(PurePosixPath(storage.experiment_fs_path, self.filename))
            text = self.history.decisions.frame().to_csv(index=False)
            with storage.storage_filesystem.open_output_stream(path) as stream:
                stream.write(text.encode())
            self.path = path
        self.echo(self.history.decisions.summary())
