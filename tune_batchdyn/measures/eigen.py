"""Symmetric eigenvalue problems of the measures, on one CPU thread.

The matrices here (a B×B Gram, a layer's smaller Gram side) are a few hundred rows: LAPACK's
symmetric solvers are fastest single-threaded at that size, and multi-threaded they stall when
the cores are shared (a 500×500 ``eigvalsh`` took 1.19 s on 2 threads and 0.019 s on 1, on a
loaded 2-core machine). On a GPU nothing changes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor


@contextlib.contextmanager
def _one_cpu_thread(tensor: Tensor) -> Iterator[None]:
    if tensor.device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def eigvalsh(matrix: Tensor) -> Tensor:
    """``torch.linalg.eigvalsh`` on one CPU thread; NaN eigenvalues for a matrix that is not
    finite (a diverged model's), where LAPACK would fail to converge."""
    if not bool(torch.isfinite(matrix).all()):
        return matrix.new_full(matrix.shape[:-1], float("nan"))
    with _one_cpu_thread(matrix):
        return torch.linalg.eigvalsh(matrix)


def eigh(matrix: Tensor) -> tuple[Tensor, Tensor]:
    """``torch.linalg.eigh`` on one CPU thread; NaN for a matrix that is not finite."""
    if not bool(torch.isfinite(matrix).all()):
        return (matrix.new_full(matrix.shape[:-1], float("nan")),
                matrix.new_full(matrix.shape, float("nan")))
    with _one_cpu_thread(matrix):
        return torch.linalg.eigh(matrix)
