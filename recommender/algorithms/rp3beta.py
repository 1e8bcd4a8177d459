"""RP3beta (Paudel et al. 2017): a three-step random walk item -> customer -> item, with
the destination's popularity divided out (``beta``), so long-tail items get their chance."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .neighbours import NeighbourModel, Pairs, blocked_top_pairs


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

    def _candidate_pairs(self, user_items: sp.csr_matrix, present: sp.csr_matrix) -> Pairs:
        user_degree = np.maximum(np.asarray(present.sum(axis=1)).ravel(), 1.0)
        item_degree = np.maximum(np.asarray(present.sum(axis=0)).ravel(), 1.0)
        user_to_item = sp.diags(1.0 / user_degree) @ present
        item_to_user = (sp.diags(1.0 / item_degree) @ present.T).tocsr()
        if self.alpha != 1.0:
            user_to_item = user_to_item.power(self.alpha)
            item_to_user = item_to_user.power(self.alpha)
        penalty = np.power(item_degree, -self.beta)
        return blocked_top_pairs(
            present.shape[1],
            self.neighbours + 1,
            lambda start, stop: (item_to_user[start:stop] @ user_to_item).toarray() * penalty,
        )
