"""The seed's k-nearest average: the mean final error of the k trials nearest a point of the
(ln C̄K, ln LK) plane (its contour maps average the 5 nearest errors, §4.1)."""

from __future__ import annotations

import numpy as np


def nearest_average(points: np.ndarray, values: np.ndarray, queries: np.ndarray,
                    k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (population) std of ``values`` over the ``k`` nearest ``points`` of each query.

    ``points`` (n, 2) and ``queries`` (m, 2) are in the same (log) coordinates, Euclidean
    distance; with fewer than ``k`` points all are used. Returns two arrays of length m.
    """
    points = np.asarray(points, dtype=float)
    values = np.asarray(values, dtype=float)
    queries = np.atleast_2d(np.asarray(queries, dtype=float))
    k = min(int(k), len(points))
    distance = (np.sum(queries * queries, axis=1)[:, None] + np.sum(points * points, axis=1)
                - 2.0 * queries @ points.T)
    nearest = np.argpartition(distance, k - 1, axis=1)[:, :k] if k < len(points) else (
        np.broadcast_to(np.arange(len(points)), (len(queries), len(points))))
    chosen = values[nearest]
    return chosen.mean(axis=1), chosen.std(axis=1)
