"""Co-occurrence with a significance score: Dunning's log-likelihood ratio, shrunk for rare pairs.

"57 customers bought both" is the explanation; the LLR says whether 57 is more than the two
items' popularity alone would give, and the shrinkage ``n / (n + shrinkage)`` keeps a pair
seen twice from outranking one seen fifty times.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from .neighbours import NeighbourModel, Pairs, blocked_top_pairs


def _xlogx(values: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.where(values > 0, values * np.log(np.maximum(values, 1e-300)), 0.0)


def log_likelihood_ratio(
    both: NDArray[np.float64], first: NDArray[np.float64], second: NDArray[np.float64], total: float
) -> NDArray[np.float64]:
    """Dunning's G statistic of the 2 x 2 table of two items over ``total`` rows (Mahout's form)."""
    k11 = both
    k12 = first - both
    k21 = second - both
    k22 = total - k11 - k12 - k21
    matrix = _xlogx(k11 + k12 + k21 + k22) - _xlogx(k11) - _xlogx(k12) - _xlogx(k21) - _xlogx(k22)
    rows = _xlogx(k11 + k12 + k21 + k22) - _xlogx(k11 + k12) - _xlogx(k21 + k22)
    cols = _xlogx(k11 + k12 + k21 + k22) - _xlogx(k11 + k21) - _xlogx(k12 + k22)
    return np.maximum(2.0 * (rows + cols - matrix), 0.0)


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

    def _candidate_pairs(self, user_items: sp.csr_matrix, present: sp.csr_matrix) -> Pairs:
        total = float(present.shape[0])
        item_rows = present.T.tocsr()
        counts = np.asarray(present.sum(axis=0)).ravel().astype(np.float64)

        def score_rows(start: int, stop: int) -> NDArray[np.float64]:
            both = (item_rows[start:stop] @ present).toarray().astype(np.float64)
            first = counts[start:stop, None]
            llr = log_likelihood_ratio(both, first, counts[None, :], total)
            expected = first * counts[None, :] / total
            return np.where(both > expected, llr, 0.0) * both / (both + self.shrinkage)

        return blocked_top_pairs(present.shape[1], self.neighbours + 1, score_rows)
