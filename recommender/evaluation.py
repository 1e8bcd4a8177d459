"""Offline evaluation: ranking metrics at K, computed with numpy over whole rankings.

``top_k`` turns dense scores of the evaluated rows into rankings; items a row already
has are excluded before the cut, as in production; targets that no model can reach (items
first sold after the cut-off) stay in the denominators, so figures are honest.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

METRICS = ("precision", "recall", "ndcg", "map", "hit_rate", "coverage", "novelty")


@dataclass(frozen=True)
class HeldOut:
    """What to evaluate: rows of the training matrix and their held-out targets.

    ``targets`` (rows x items, binary) holds the reachable targets; ``n_targets`` counts all,
    unreachable included. ``popularity`` (n_items,) of the training data ranks novelty.
    """

    rows: NDArray[np.int64]
    seen: sp.csr_matrix
    targets: sp.csr_matrix
    n_targets: NDArray[np.int64]
    popularity: NDArray[np.floating]


def top_k(scores: NDArray[np.floating], seen: sp.csr_matrix, k: int) -> NDArray[np.int64]:
    """Best k columns per row, excluding the row's seen items; (n_rows, k), best first."""
    scores = np.array(scores, dtype=np.float64, copy=True)
    rows, cols = seen.nonzero()
    scores[rows, cols] = -np.inf
    k = min(k, scores.shape[1])
    best = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, best, axis=1), axis=1, kind="stable")
    return np.take_along_axis(best, order, axis=1)


def ranking_metrics(
    recommended: NDArray[np.int64], held_out: HeldOut, k: int
) -> dict[str, float]:
    """Precision, recall, NDCG, MAP, hit rate at k, catalog coverage and novelty.

    ``recommended`` is (n_rows, k) item indices, best first. Novelty is the mean popularity
    rank (1 = most popular) of recommended items: higher means less obvious picks.
    """
    n_rows = len(recommended)
    hits = np.asarray(
        held_out.targets[np.repeat(np.arange(n_rows), recommended.shape[1]), recommended.ravel()]
    ).reshape(recommended.shape).astype(np.float64)
    n_targets = np.maximum(held_out.n_targets, 1)
    discount = 1.0 / np.log2(np.arange(2, recommended.shape[1] + 2))
    ideal = np.cumsum(discount)[np.minimum(n_targets, recommended.shape[1]) - 1]
    precision_at = np.cumsum(hits, axis=1) / np.arange(1, recommended.shape[1] + 1)
    rank = np.empty(len(held_out.popularity), dtype=np.int64)
    rank[np.argsort(-held_out.popularity, kind="stable")] = np.arange(1, len(rank) + 1)
    return {
        "precision": float((hits.sum(axis=1) / k).mean()),
        "recall": float((hits.sum(axis=1) / n_targets).mean()),
        "ndcg": float(((hits * discount).sum(axis=1) / ideal).mean()),
        "map": float(((precision_at * hits).sum(axis=1) / np.minimum(n_targets, k)).mean()),
        "hit_rate": float((hits.sum(axis=1) > 0).mean()),
        "coverage": float(len(np.unique(recommended)) / len(held_out.popularity)),
        "novelty": float(rank[recommended].mean()),
    }


def next_item_metrics(
    neighbour_ids: NDArray[np.integer], queries: NDArray[np.int64], targets: NDArray[np.int64], k: int
) -> dict[str, float]:
    """Item-to-item quality: for pairs (item bought, next item bought by the same customer),
    how often and how high the next item is among the first's k neighbours."""
    if not len(queries):
        return {"hit_rate": 0.0, "ndcg": 0.0, "mrr": 0.0, "pairs": 0}
    table = np.asarray(neighbour_ids)[queries, :k]
    match = table == targets[:, None]
    found = match.any(axis=1)
    position = match.argmax(axis=1)
    return {
        "hit_rate": float(found.mean()),
        "ndcg": float(np.where(found, 1.0 / np.log2(position + 2), 0.0).mean()),
        "mrr": float(np.where(found, 1.0 / (position + 1), 0.0).mean()),
        "pairs": int(len(queries)),
    }
