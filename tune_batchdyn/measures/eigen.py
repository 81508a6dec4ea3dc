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


def _finite_rows(matrix: Tensor) -> Tensor:
    """Per matrix of a (..., n, n) stack: whether all its entries are finite."""
    return torch.isfinite(matrix).flatten(-2).all(dim=-1)


def eigvalsh(matrix: Tensor) -> Tensor:
    """``torch.linalg.eigvalsh`` on one CPU thread; NaN eigenvalues for each matrix of a stack
    that is not finite (a diverged model's), where LAPACK would fail to converge; the others
    are solved as usual."""
    finite = _finite_rows(matrix)
    if bool(finite.all()):
        with _one_cpu_thread(matrix):
            return torch.linalg.eigvalsh(matrix)
    values = matrix.new_full(matrix.shape[:-1], float("nan"))
    if matrix.dim() > 2 and bool(finite.any()):
        values[finite] = eigvalsh(matrix[finite])
    return values


def eigh(matrix: Tensor) -> tuple[Tensor, Tensor]:
    """``torch.linalg.eigh`` on one CPU thread; NaN for each matrix that is not finite."""
    finite = _finite_rows(matrix)
    if bool(finite.all()):
        with _one_cpu_thread(matrix):
            return torch.linalg.eigh(matrix)
    values = matrix.new_full(matrix.shape[:-1], float("nan"))
    vectors = matrix.new_full(matrix.shape, float("nan"))
    if matrix.dim() > 2 and bool(finite.any()):
        values[finite], vectors[finite] = eigh(matrix[finite])
    return values, vectors
