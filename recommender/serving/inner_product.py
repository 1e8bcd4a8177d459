"""ALS scores for one shopper without the whole catalog's product, with the same values.

A shopper's ALS score for an item is the dot product of two factor vectors, so it is at most
the product of their lengths (Cauchy-Schwarz). With the items ordered by the length of their
factors, a scan can stop where the longest factors left cannot reach a bound: the largest
absolute score (the blend's scale), or the least score that could still enter an answer.
On the 50,000-item model a pruned answer reads about 0.1% of the items for the scale and
6-10% for its candidates, where the whole product read all of them (12.8 MB) per request.

Every score is computed by ``dot_rows``, one row at a time in a fixed order (``einsum``'s
loop), so an item's score is the same bits whether it was scored with the whole catalog, in
a chunk of the ordered copy or among a few gathered rows. BLAS's matrix-vector product is
not: its kernels round a row differently depending on where it falls in the call.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

# Relative slack on the length bound: a float32 dot product of 64 terms can exceed the exact
# one by far less than this, so no item that could reach the bound is skipped.
BOUND_SLACK = 1e-4
# The first chunk of the scan; each next one is twice as long.
FIRST_CHUNK = 256


def dot_rows(factors: NDArray[np.float32], vector: NDArray[np.float32]) -> NDArray[np.float32]:
    """``factors @ vector``, each row's sum taken in the same order whatever the rows around it."""
    return np.einsum("ij,j->i", factors, vector)


def dot_pairs(
    user_factors: NDArray[np.float32],
    item_factors: NDArray[np.float32],
    rows: NDArray[np.integer],
    cols: NDArray[np.integer],
) -> NDArray[np.float32]:
    """``user_factors[rows[i]] . item_factors[cols[i]]`` for each pair, summed in ``dot_rows``'
    order (the same einsum loop over a pair's factors): the same bits as a request's score."""
    return np.einsum(
        "ij,ij->i", np.take(user_factors, rows, axis=0), np.take(item_factors, cols, axis=0)
    )


class NormOrderedFactors:
    """Item factors sorted by length, longest first, for scans that stop early.

    Parameters
    ----------
    item_factors : (n_items, n_factors) float32, the model's (memory-mapped) factors. A
        sorted copy is kept (n_items x n_factors x 4 bytes, made once per model load).
    """

    def __init__(self, item_factors: NDArray[np.float32]) -> None:
        factors = np.asarray(item_factors)
        lengths = np.sqrt(np.einsum("ij,ij->i", factors, factors, dtype=np.float64))
        self.order = np.argsort(-lengths, kind="stable")
        self.lengths = lengths[self.order]
        self.factors = np.ascontiguousarray(factors[self.order])

    def scan(self, vector: NDArray[np.float32]) -> Scan:
        """A scan of ``vector``'s scores, longest factors first (``Scan.until``)."""
        return Scan(self, vector)


class Scan:
    """Scores of one vector, computed in length order only as far as a caller's bound needs."""

    def __init__(self, index: NormOrderedFactors, vector: NDArray[np.float32]) -> None:
        self.index = index
        self.vector = np.asarray(vector, dtype=np.float32)
        wide = self.vector.astype(np.float64)
        self.length = math.sqrt(wide.dot(wide))  # np.linalg.norm's own sum, without its checks
        self.scores = np.empty(len(index.order), dtype=np.float32)  # valid up to ``done``
        self.done = 0
        self.largest = 0.0  # the largest absolute score among the first ``done``
        self._chunk = FIRST_CHUNK

    def reach(self, position: int) -> float:
        """The most any item from ``position`` on can score, in absolute value (slack included)."""
        if position >= len(self.index.order):
            return -np.inf
        return float(self.index.lengths[position]) * self.length * (1.0 + BOUND_SLACK)

    def until(self, bound: float) -> None:
        """Score items in length order until every item left scores below ``bound`` in
        absolute value (a bound of 0 or less scores everything)."""
        while self.done < len(self.index.order) and (bound <= 0 or self.reach(self.done) >= bound):
            self._next_chunk()

    def scale(self) -> float:
        """The largest absolute score over the whole catalog: scanned until no item left can
        exceed the largest seen."""
        while self.done < len(self.index.order) and self.reach(self.done) >= self.largest:
            self._next_chunk()
        return self.largest

    def at_least(self, threshold: float) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """Every item scoring ``threshold`` or more (item indices ascending, their scores);
        a threshold of 0 or less needs the whole catalog scanned."""
        self.until(threshold)
        if threshold > self.largest:  # nothing read reaches it (a pruned answer's usual case)
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        hits = np.flatnonzero(self.scores[: self.done] >= threshold)
        items = self.index.order[hits]
        order = np.argsort(items, kind="stable")
        return items[order], self.scores[hits][order]

    def _next_chunk(self) -> None:
        stop = min(len(self.index.order), self.done + self._chunk)
        part = dot_rows(self.index.factors[self.done : stop], self.vector)
        self.scores[self.done : stop] = part
        if len(part):
            self.largest = max(self.largest, float(np.abs(part).max()))
        self.done, self._chunk = stop, self._chunk * 2
