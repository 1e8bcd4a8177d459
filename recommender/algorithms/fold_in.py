"""ALS fold-in of a few items in one compiled pass (``ALS.fold_in``'s common case).

A page view's shopper has touched a handful of items, so folding them in solves an items x
items system through the kept inverse of ``Y'Y + reg I`` (Woodbury) instead of the factors x
factors one. In numpy that was five products, a LAPACK solve and their wrappers: about 17 µs
of a 28 µs fold-in, most of it the calls' own cost for matrices of 4 x 64. One compiled loop
over the same numbers makes the whole fold-in about 9 µs. The small system is solved by
Gaussian elimination with partial pivoting, as LAPACK's ``dgesv`` solves it; the solution
agrees with it to rounding.

Compiled once per process and cached on disk (``cache=True``); the server compiles it at
model load (``Ranker.warm_up``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numba import njit
from numpy.typing import NDArray


def _fold_in_few(
    item_factors: NDArray[np.floating],
    items: NDArray[np.int64],
    confidence: NDArray[np.float64],
    gram_inverse: NDArray[np.float64],
) -> tuple[NDArray[np.float32], bool]:
    """``x = P'(c - z)`` with ``P' = Y_I G^-1``, ``M = P' Y_I'`` and ``(I + D M) z = D M c``
    (``D = C - 1``): the solution of ``(G + Y_I' D Y_I) x = Y_I' c``. Returns (x, True), or
    (empty, False) when the small system is singular (an exact zero pivot, where ``dgesv``
    reports one): the caller then solves the whole system."""
    count = len(items)
    factors = item_factors.shape[1]
    chosen = np.empty((count, factors), dtype=np.float64)
    for a in range(count):
        for j in range(factors):
            chosen[a, j] = item_factors[items[a], j]
    projected = np.zeros((count, factors), dtype=np.float64)
    for a in range(count):
        for i in range(factors):
            value = chosen[a, i]
            for j in range(factors):
                projected[a, j] += value * gram_inverse[i, j]
    system = np.empty((count, count), dtype=np.float64)
    rhs = np.zeros(count, dtype=np.float64)
    for a in range(count):
        extra = confidence[a] - 1.0
        for b in range(count):
            inner = 0.0
            for j in range(factors):
                inner += projected[a, j] * chosen[b, j]
            system[a, b] = extra * inner + (1.0 if a == b else 0.0)
            rhs[a] += extra * inner * confidence[b]
    for column in range(count):  # elimination with partial pivoting
        pivot = column
        for row in range(column + 1, count):
            if abs(system[row, column]) > abs(system[pivot, column]):
                pivot = row
        if system[pivot, column] == 0.0:
            return np.empty(0, dtype=np.float32), False
        if pivot != column:
            for j in range(count):
                system[column, j], system[pivot, j] = system[pivot, j], system[column, j]
            rhs[column], rhs[pivot] = rhs[pivot], rhs[column]
        for row in range(column + 1, count):
            factor = system[row, column] / system[column, column]
            for j in range(column, count):
                system[row, j] -= factor * system[column, j]
            rhs[row] -= factor * rhs[column]
    z = np.empty(count, dtype=np.float64)
    for row in range(count - 1, -1, -1):
        value = rhs[row]
        for j in range(row + 1, count):
            value -= system[row, j] * z[j]
        z[row] = value / system[row, row]
    solution = np.zeros(factors, dtype=np.float64)
    for a in range(count):
        weight = confidence[a] - z[a]
        for j in range(factors):
            solution[j] += weight * projected[a, j]
    return solution.astype(np.float32), True


fold_in_few: Callable[..., tuple[NDArray[np.float32], bool]] = njit(cache=True, nogil=True)(
    _fold_in_few
)
