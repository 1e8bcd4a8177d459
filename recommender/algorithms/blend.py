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
        # One float64 copy per part, then in place: a batch of rows is large, and every
        # temporary is another pass over it. (max of |x| without the |x| array.)
        scaled = np.array(part, dtype=np.float64)
        if scales is None:
            scale = np.maximum(scaled.max(axis=-1, keepdims=True), -scaled.min(axis=-1, keepdims=True))
        else:
            scale = np.full((1,) * scaled.ndim, scales[position], dtype=np.float64)
        empty = scale <= 0  # every value is 0 there (or no part's scale is known): the part adds 0
        np.divide(scaled, np.where(empty, 1.0, scale), out=scaled)
        if empty.any():
            scaled[np.broadcast_to(empty, scaled.shape)] = 0.0
        scaled *= weight
        if total is None:
            total = scaled
        else:
            total += scaled
    if total is None:
        return None
    if trend is not None and trend_weight:
        total += trend_weight * np.asarray(trend, dtype=np.float64)
    return total
