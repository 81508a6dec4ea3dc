"""benchmarks/gpu_sweep.py: nvidia-smi samples and the throughput figures it prints."""

from __future__ import annotations

import pandas as pd
import pytest
from _benchmarks import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("gpu_sweep")


def test_one_sample_averages_utilisation_and_sums_memory_over_the_gpus(bench) -> None:
    assert bench.parse_smi("80, 1000\n40, 3000\n") == [(60.0, 4000.0)]
    assert bench.parse_smi("[N/A], [N/A]\n") == []
    assert bench.parse_smi("") == []


def test_throughput_counts_trials_and_trial_epochs_per_hour(bench) -> None:
    records = pd.DataFrame({"trial_id": ["a", "a", "a", "b", "c", "c"]})
    figures = bench.throughput(records, wall_s=1800.0)
    assert figures == {"trials": 3, "trial_epochs": 6, "trials_per_hour": 6.0,
                       "trial_epochs_per_hour": 12.0}
