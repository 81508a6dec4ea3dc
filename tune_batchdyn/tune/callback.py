"""``DecisionsCallback``: at the end of a run, write the decisions table and print its summary.

``decisions.csv`` goes to the experiment folder in the run's storage (``storage_path`` /
``name``, local or remote: it is written through the storage's own filesystem, after Ray's final
sync), and one line is printed: ``decisions: stopped=<n> rerouted=<n> spawned=<n>``. The
callback holds nothing of its own: the decisions live in the ``TrialHistory`` it reads.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any

from ray import tune as ray_tune

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
        self.history: TrialHistory = source if isinstance(source, TrialHistory) \
            else source.history
        self.filename = filename
        self.echo = echo
        self.path: str | None = None

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if trials:
            storage = trials[0].storage
            path = str(PurePosixPath(storage.experiment_fs_path, self.filename))
            text = self.history.decisions.frame().to_csv(index=False)
            with storage.storage_filesystem.open_output_stream(path) as stream:
                stream.write(text.encode())
            self.path = path
        self.echo(self.history.decisions.summary())
