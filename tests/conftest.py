import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread per test: CI has 2 cores, and Ray and Optuna tests start worker
    processes beside the test process; numbers are never compared across thread counts."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
