"""examples/optuna_pruner.py --smoke end to end (digits trials: slow; its parts are covered by
the other tests/test_optuna_*.py files)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "optuna_pruner.py"


@pytest.mark.slow
def test_smoke_run_ends_with_the_decisions_line(tmp_path):
    storage = f"sqlite:///{tmp_path / 'example.db'}"
    done = subprocess.run([sys.executable, str(EXAMPLE), "--smoke", "--storage", storage],
                          capture_output=True, text=True, timeout=600, check=True)
    last = done.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"decisions: pruned=\d+ enqueued=\d+", last)
    assert sum(line.startswith("trial ") for line in done.stdout.splitlines()) == 6
