"""The personal recommender the shop shows: item-to-item, ALS and trending, blended.

``blend_scores`` is the one formula, used per request by the service and in batches by
evaluation and tuning, so what is measured is what is served. Each part is scaled to its
largest absolute value per row, so the weights mean the same whatever the models' scales.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from .als import ALS
from .base import Ranking, Recommender, top_n
from .neighbours import NeighbourModel


def blend_scores(
    item_scores: NDArray[np.floating] | None,
    als_scores: NDArray[np.floating] | None,
    trend: NDArray[np.floating] | None,
    als_weight: float,
    trend_weight: float,
) -> NDArray[np.float64] | None:
    """``(1 - als_weight) * item + als_weight * als + trend_weight * trend``, parts scaled to 1.

    Arrays are (n_items,) for one shopper or (n_rows, n_items) for a batch; a missing part
    (None) is left out. Returns None when there is no personal evidence at all.
    """
    total = None
    for part, weight in ((item_scores, 1.0 - als_weight), (als_scores, als_weight)):
        if part is None or weight == 0:
            continue
        part = np.asarray(part, dtype=np.float64)
        scale = np.abs(part).max(axis=-1, keepdims=True)
        scaled = np.divide(part, scale, out=np.zeros_like(part), where=scale > 0)
        total = weight * scaled if total is None else total + weight * scaled
    if total is None:
        return None
    if trend is not None and trend_weight:
        total = total + trend_weight * np.asarray(trend, dtype=np.float64)
    return total


class Blend(Recommender):
    """Fitted item-to-item and ALS models plus a trending vector, combined by ``blend_scores``.

    Built from fitted parts (training fits them once and tries several weights), so
    ``fit`` only fits the parts that are not fitted yet.

    Parameters
    ----------
    item_model : a ``NeighbourModel`` (EASE, RP3beta, item kNN, co-occurrence) or None.
    als : an ``ALS`` or None.
    trend : (n_items,) trending popularity scaled to [0, 1], or None.
    als_weight, trend_weight : the blend's weights.
    """

    def __init__(
        self,
        item_model: NeighbourModel | None = None,
        als: ALS | None = None,
        trend: NDArray[np.floating] | None = None,
        als_weight: float = 0.5,
        trend_weight: float = 0.0,
    ) -> None:
        self.item_model = item_model
        self.als = als
        self.trend = trend
        self.als_weight = als_weight
        self.trend_weight = trend_weight

    def fit(self, user_items: sp.csr_matrix) -> Blend:
        for part in (self.item_model, self.als):
            if part is not None and not part.is_fitted():
                part.fit(user_items)
        self.fitted_ = True
        return self

    def score_rows(self, user_idx: NDArray[np.integer], user_items: sp.csr_matrix) -> NDArray[np.float64]:
        """Blended scores of every item for a batch of known rows (``user_items``: their rows)."""
        item_scores = self.item_model.score_rows(user_items) if self.item_model is not None else None
        als_scores = (
            self.als.user_factors_[np.asarray(user_idx)] @ self.als.item_factors_.T if self.als is not None else None
        )
        scores = blend_scores(item_scores, als_scores, self.trend, self.als_weight, self.trend_weight)
        if scores is None:
            scores = np.tile(self.trend if self.trend is not None else 0.0, (user_items.shape[0], 1))
        return np.asarray(scores, dtype=np.float64)

    def recommend(
        self, user_idx: int, user_row: sp.csr_matrix, n: int = 10, exclude_seen: bool = True
    ) -> Ranking:
        scores = self.score_rows(np.array([user_idx]), user_row)[0]
        return top_n(scores, n, user_row.indices if exclude_seen else None, positive_only=False)

    def similar_items(self, item_idx: int, n: int = 10) -> Ranking:
        if self.item_model is not None:
            return self.item_model.similar_items(item_idx, n)
        assert self.als is not None
        return self.als.similar_items(item_idx, n)

    def to_arrays(self) -> dict[str, NDArray[Any]]:
        arrays: dict[str, NDArray[Any]] = {}
        if self.trend is not None:
            arrays["trend"] = np.asarray(self.trend, dtype=np.float32)
        return arrays
