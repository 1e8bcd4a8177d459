"""RP3beta (Paudel et al. 2017): a three-step random walk item -> customer -> item, with
the destination's popularity divided out (``beta``), so long-tail items get their chance."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .neighbours import CountedPairs, NeighbourModel, sparse_top_pairs


class RP3beta(NeighbourModel):
    """Random-walk item similarity with a popularity penalty.

    Parameters
    ----------
    alpha : exponent of the transition probabilities.
    beta : popularity penalty, ``score / popularity(destination) ** beta``.
    neighbours, min_support, min_pair_support : see ``NeighbourModel``.
    """

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 0.5,
        neighbours: int = 100,
        min_support: int = 1,
        min_pair_support: int = 1,
    ) -> None:
        self.alpha = alpha
        self.beta = beta
        self.neighbours = neighbours
        self.min_support = min_support
        self.min_pair_support = min_pair_support

    def describe(self) -> str:
        return f"rp3beta (alpha={self.alpha:g}, beta={self.beta:g})"

    def _candidate_pairs(self, user_items: sp.csr_matrix, present: sp.csr_matrix) -> CountedPairs:
        user_degree = np.maximum(np.asarray(present.sum(axis=1)).ravel(), 1.0)
        item_degree = np.maximum(np.asarray(present.sum(axis=0)).ravel(), 1.0)
        # The walk item i -> customer u -> item j has probability
        # (1 / deg_i) ** alpha * (1 / deg_u) ** alpha on a binary matrix: the first factor is
        # the row's, so the sum over customers is one sparse product of the binary item rows
        # with the customer weights. It only reaches items bought by a customer who bought i,
        # so the search runs over the product's entries; the imaginary unit counts them.
        user_weight = np.power(1.0 / user_degree, self.alpha)
        walk = (sp.diags(user_weight) @ present).tocsr()
        # ``1j * present`` is complex64, so is the sum; both operands are cast to complex128
        # once here rather than by every block's product (a tenth of the fit).
        walk = (walk + 1j * present).astype(np.complex128)
        item_rows = present.T.tocsr().astype(np.complex128)
        row_factor = np.power(1.0 / item_degree, self.alpha)
        penalty = np.power(item_degree, -self.beta)
        return sparse_top_pairs(
            present.shape[1],
            self.neighbours + 1,
            lambda start, stop: item_rows[start:stop] @ walk,
            lambda rows, cols, values: values * row_factor[rows] * penalty[cols],
        )
