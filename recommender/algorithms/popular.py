"""Popularity: the baseline every model must beat, and the fallback when a model has no answer."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from .base import Ranking, Recommender, check_csr, no_ranking, top_n


class Popular(Recommender):
    """Items ranked by the sum of their column: on a binary matrix, the number of rows
    (customers or orders) that contain them; on a recency-weighted one, "trending".

    Attributes
    ----------
    popularity_ : float32 (n_items,), column sums.
    """

    def __init__(self) -> None:
        pass

    def fit(self, user_items: sp.csr_matrix) -> Popular:
        user_items = check_csr(user_items)
        self.popularity_ = np.asarray(user_items.sum(axis=0), dtype=np.float32).ravel()
        return self

    def similar_items(self, item_idx: int, n: int = 10) -> Ranking:
        self._check_fitted()
        if not 0 <= item_idx < len(self.popularity_):
            return no_ranking()
        return top_n(self.popularity_, n, np.array([item_idx]))

    def recommend(
        self, user_idx: int, user_row: sp.csr_matrix, n: int = 10, exclude_seen: bool = True
    ) -> Ranking:
        self._check_fitted()
        return top_n(self.popularity_, n, user_row.indices if exclude_seen else None)

    def to_arrays(self) -> dict[str, NDArray[Any]]:
        self._check_fitted()
        return {"popularity": self.popularity_}
