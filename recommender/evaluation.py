"""Offline evaluation: ranking metrics at K, computed with numpy over whole rankings.

``top_k`` turns dense scores of the evaluated rows into rankings; items a row already
has are excluded before the cut, as in production; targets that no model can reach (items
first sold after the cut-off) stay in the denominators, so figures are honest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from .algorithms.base import top_n_rows

# Dense scores are ranked this many entries (rows x items) at a time: 8 MB in float64. Ranking
# makes several copies of a block and the search ranks two folds at once, so the block, not
# the fold, sets the evaluation's transient memory; a smaller block only adds loop turns.
RANK_BLOCK_ENTRIES = 1_000_000

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


def row_slices(n_rows: int, n_columns: int) -> list[slice]:
    """Consecutive blocks of rows whose dense scores hold about ``RANK_BLOCK_ENTRIES`` values."""
    step = max(1, RANK_BLOCK_ENTRIES // max(1, n_columns))
    return [slice(start, min(start + step, n_rows)) for start in range(0, n_rows, step)]


def top_k(scores: NDArray[np.floating], seen: sp.csr_matrix, k: int) -> NDArray[np.int64]:
    """Best k columns per row, excluding the row's seen items; (n_rows, k), best first.

    Ranked a block of rows at a time (row by row the same): the masked copy and the
    partition's copy then take a block's memory, not the whole score matrix's twice over.
    """
    scores = np.asarray(scores)
    return top_k_blocks(lambda part: scores[part], seen, k)


def top_k_blocks(
    score_block: Callable[[slice], NDArray[np.floating]], seen: sp.csr_matrix, k: int
) -> NDArray[np.int64]:
    """``top_k`` of scores that ``score_block(rows)`` forms a block of rows at a time (``rows``
    a slice within ``seen``'s rows): row for row the same as ranking the whole matrix, which
    is never held. Dense evaluated rows x items scores are a fold's largest object (2,000 rows
    of 10,000 items: 160 MB in float64, and ranking copies them); a block is a few MB."""
    seen = sp.csr_matrix(seen)
    n_rows, n_items = seen.shape
    blocks = []
    for part in row_slices(n_rows, n_items):
        block = np.array(score_block(part), dtype=np.float64, copy=True)
        rows, cols = seen[part].nonzero()
        block[rows, cols] = -np.inf
        blocks.append(top_n_rows(block, k))
    if not blocks:
        return top_n_rows(np.zeros((0, n_items)), k)
    return np.concatenate(blocks)


def row_hits(recommended: NDArray[np.int64], held_out: HeldOut) -> NDArray[np.float64]:
    """(n_rows, k) 1.0 where the recommended item is one of the row's targets."""
    n_rows = len(recommended)
    return (
        np.asarray(
            held_out.targets[
                np.repeat(np.arange(n_rows), recommended.shape[1]), recommended.ravel()
            ]
        )
        .reshape(recommended.shape)
        .astype(np.float64)
    )


def row_ndcg(recommended: NDArray[np.int64], held_out: HeldOut) -> NDArray[np.float64]:
    """NDCG at ``recommended.shape[1]`` of each row (the mean is ``ranking_metrics``' ndcg)."""
    hits = row_hits(recommended, held_out)
    discount = 1.0 / np.log2(np.arange(2, recommended.shape[1] + 2))
    ideal = np.cumsum(discount)[
        np.minimum(np.maximum(held_out.n_targets, 1), recommended.shape[1]) - 1
    ]
    return (hits * discount).sum(axis=1) / ideal


def bootstrap_interval(
    values: NDArray[np.floating], level: float = 0.95, resamples: int = 1000, seed: int = 0
) -> tuple[float, float, float]:
    """Percentile bootstrap over rows (customers, baskets) of the mean of ``values``:
    (low, high, standard error). The rows are the unit of sampling because they are what
    varies from one period or shop to the next."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        mean = float(values.mean()) if len(values) else 0.0
        return mean, mean, 0.0
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, 100):  # blocks of resamples bound the index matrix
        stop = min(start + 100, resamples)
        means[start:stop] = values[
            rng.integers(0, len(values), size=(stop - start, len(values)))
        ].mean(axis=1)
    tail = (1.0 - level) / 2
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high), float(means.std(ddof=1))


def ranking_metrics(recommended: NDArray[np.int64], held_out: HeldOut, k: int) -> dict[str, float]:
    """Precision, recall, NDCG, MAP, hit rate at k, catalog coverage and novelty.

    ``recommended`` is (n_rows, k) item indices, best first. Novelty is the mean popularity
    rank (1 = most popular) of recommended items: higher means less obvious picks.
    """
    hits = row_hits(recommended, held_out)
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
    neighbour_ids: NDArray[np.integer],
    queries: NDArray[np.int64],
    targets: NDArray[np.int64],
    k: int,
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
