"""Co-occurrence with a significance score: Dunning's log-likelihood ratio, shrunk for rare pairs.

"57 customers bought both" is the explanation; the LLR says whether 57 is more than the two
items' popularity alone would give, and the shrinkage ``n / (n + shrinkage)`` keeps a pair
seen twice from outranking one seen fifty times.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from scipy.special import xlogy

from .neighbours import CountedPairs, NeighbourModel, sparse_top_pairs


def _xlogx(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """``x log x``, 0 at 0 (one ufunc pass: it runs on every co-occurring pair)."""
    return xlogy(values, values)


def log_likelihood_ratio(
    both: NDArray[np.float64], first: NDArray[np.float64], second: NDArray[np.float64], total: float
) -> NDArray[np.float64]:
    """Dunning's G statistic of the 2 x 2 table of two items over ``total`` rows:
    ``2 (N log N + sum k log k - sum row log row - sum col log col)`` (Mahout's form, regrouped)."""
    return np.maximum(
        2.0 * (_xlogx(np.asarray(total, dtype=np.float64)) + _cells(both, first, second, total))
        - 2.0 * (_margins(first, total) + _margins(second, total)),
        0.0,
    )


def _margins(count: NDArray[np.float64], total: float) -> NDArray[np.float64]:
    """A 2 x 2 table's margin term for an item in ``count`` of ``total`` rows (per item, so a
    caller scoring many pairs can compute it once per item)."""
    return _xlogx(count) + _xlogx(total - count)


def _cells(
    both: NDArray[np.float64], first: NDArray[np.float64], second: NDArray[np.float64], total: float
) -> NDArray[np.float64]:
    """The cells' term of the G statistic, ``sum k log k`` over the four cells."""
    only_first = first - both
    only_second = second - both
    return (
        _xlogx(both)
        + _xlogx(only_first)
        + _xlogx(only_second)
        + _xlogx(total - both - only_first - only_second)
    )


class Cooccurrence(NeighbourModel):
    """Items bought together more often than chance, ranked by shrunk LLR.

    Parameters
    ----------
    shrinkage : a pair seen n times is weighted ``n / (n + shrinkage)``.
    neighbours, min_support, min_pair_support : see ``NeighbourModel``.
    """

    def __init__(
        self,
        shrinkage: float = 10.0,
        neighbours: int = 100,
        min_support: int = 2,
        min_pair_support: int = 2,
    ) -> None:
        self.shrinkage = shrinkage
        self.neighbours = neighbours
        self.min_support = min_support
        self.min_pair_support = min_pair_support

    def describe(self) -> str:
        return f"cooccurrence-llr (shrinkage={self.shrinkage:g})"

    def _candidate_pairs(self, user_items: sp.csr_matrix, present: sp.csr_matrix) -> CountedPairs:
        total = float(present.shape[0])
        item_rows = present.T.tocsr()
        counts = np.asarray(present.sum(axis=0)).ravel().astype(np.float64)
        margins = _margins(counts, total)
        total_term = _xlogx(np.asarray(total, dtype=np.float64))

        # Every count here is a whole number of rows: ``x log x`` is looked up, not computed
        # (the same values: the table is the same function of the same numbers). Pairs
        # bought together no more often than chance score 0 and are not computed at all.
        xlogx_of = _xlogx(np.arange(present.shape[0] + 1, dtype=np.float64))
        whole = counts.astype(np.int64)

        def score(
            rows: NDArray[np.int64], cols: NDArray[np.int64], both: NDArray[np.float64]
        ) -> NDArray[np.float64]:
            # Pairs never bought together score 0 (the shrinkage factor is 0): only the
            # product's stored entries, the pairs that co-occur, are scored.
            scores = np.zeros(len(both), dtype=np.float64)
            above = np.flatnonzero(both > counts[rows] * counts[cols] / total)
            rows, cols, both = rows[above], cols[above], both[above]
            shared, first, second = both.astype(np.int64), whole[rows], whole[cols]
            cells = (
                xlogx_of[shared]
                + xlogx_of[first - shared]
                + xlogx_of[second - shared]
                + xlogx_of[len(xlogx_of) - 1 - first - second + shared]
            )
            llr = np.maximum(
                2.0 * (total_term + cells) - 2.0 * (margins[rows] + margins[cols]), 0.0
            )
            scores[above] = llr * both / (both + self.shrinkage)
            return scores

        return sparse_top_pairs(
            present.shape[1],
            self.neighbours + 1,
            lambda start, stop: item_rows[start:stop] @ present,
            score,
            min_count=self.min_pair_support,
        )
