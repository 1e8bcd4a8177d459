"""EASE (Steck, WWW 2019): a closed-form item x item model, strong on small catalogs.

``B = -P / diag(P)`` with ``P = (X'X + l2 I)^-1``, zero diagonal. It needs a dense items x
items matrix (and its inverse), so it is only fitted up to ``max_items``; beyond that
``fit`` raises ``ModelSkippedError`` and training says so.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..errors import ModelSkippedError
from .neighbours import NeighbourModel, Pairs, top_per_row


class EASE(NeighbourModel):
    """Embarrassingly shallow autoencoder, kept as its top-K weights per item.

    Parameters
    ----------
    l2 : regularisation added to the diagonal of the Gram matrix.
    max_items : larger catalogs are skipped (a dense float64 items x items matrix: 8,000
        items take 512 MB, twice over while inverting).
    neighbours, min_support, min_pair_support : see ``NeighbourModel``.
    """

    def __init__(
        self,
        l2: float = 250.0,
        neighbours: int = 200,
        min_support: int = 1,
        min_pair_support: int = 1,
        max_items: int = 8000,
    ) -> None:
        self.l2 = l2
        self.neighbours = neighbours
        self.min_support = min_support
        self.min_pair_support = min_pair_support
        self.max_items = max_items

    def describe(self) -> str:
        return f"ease (l2={self.l2:g})"

    def _candidate_pairs(self, user_items: sp.csr_matrix, present: sp.csr_matrix) -> Pairs:
        n_items = present.shape[1]
        if n_items > self.max_items:
            raise ModelSkippedError(
                f"EASE skipped: {n_items} items exceed max_items={self.max_items} "
                f"(a dense {n_items} x {n_items} matrix would need {n_items * n_items * 8 / 2**30:.1f} GiB)"
            )
        gram = (present.T @ present).toarray().astype(np.float64)
        gram[np.diag_indices(n_items)] += self.l2
        inverse = np.linalg.inv(gram)
        weights = -inverse / np.diag(inverse)
        np.fill_diagonal(weights, 0.0)
        return top_per_row(weights, 0, self.neighbours + 1)
