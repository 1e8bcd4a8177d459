"""The personal recommender the shop shows: item-to-item, ALS and trending, blended.

``blend_scores`` is the one formula, used per request by the service, in batches by the
export, and by evaluation and tuning, so what is measured is what is served. Each part is
scaled to its largest absolute value per row, so the weights mean the same whatever the
models' scales.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def blend_scores(
    item_scores: NDArray[np.floating] | None,
    als_scores: NDArray[np.floating] | None,
    trend: NDArray[np.floating] | None,
    als_weight: float,
    trend_weight: float,
    item_weight: float | None = None,
    scales: tuple[float, float] | None = None,
) -> NDArray[np.float64] | None:
    """``item_weight * item + als_weight * als + trend_weight * trend``, parts scaled to 1.

    ``item_weight`` defaults to ``1 - als_weight``; 0 with ``als_weight`` 0 is "trending
    alone". Arrays are (n_items,) for one shopper or (n_rows, n_items) for a batch; a missing
    part (None) is left out. Returns None when there is no personal evidence at all (or no
    personal part is weighted): the caller ranks by trending alone.

    ``scales`` (item, ALS) are the parts' largest absolute values when the arrays hold only
    some of the catalog's items (pruned scoring): the scores are then those the whole rows give.
    """
    total = None
    if item_weight is None:
        item_weight = 1.0 - als_weight
    for position, (part, weight) in enumerate(((item_scores, item_weight), (als_scores, als_weight))):
        if part is None or weight == 0:
            continue
        part = np.asarray(part, dtype=np.float64)
        scale = np.abs(part).max(axis=-1, keepdims=True) if scales is None else np.float64(scales[position])
        scaled = np.divide(part, scale, out=np.zeros_like(part), where=scale > 0)
        total = weight * scaled if total is None else total + weight * scaled
    if total is None:
        return None
    if trend is not None and trend_weight:
        total = total + trend_weight * np.asarray(trend, dtype=np.float64)
    return total
