"""Scoring many known customers at once, as ``RecommendationService.for_user`` ranks each:
the precomputed lists a training run writes into the version, the campaign export and the
"new for you" alerts. Matrix products over blocks of customers (``Ranker.batch_with_strategy``),
never a Python loop over customers."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import numpy as np
from numpy.typing import NDArray

from ..algorithms.neighbours import row_blocks
from ..artifacts import StreamedArray
from ..bundle import StreamedLists
from .service import RecommendationService


def top_k_for_users(
    service: RecommendationService, user_indices: NDArray[np.int64], k: int
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Top-k items (-1 where fewer) and their scores for many known customers at once."""
    best, best_scores, _ = _ranked(service, user_indices, k)
    return best, best_scores


def _ranked(
    service: RecommendationService, user_indices: NDArray[np.int64], k: int
) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.int8]]:
    factors = service.als.user_factors_[user_indices] if service.als is not None else None
    return service.ranker.batch_with_strategy(service.user_items[user_indices], factors, k)


def stream_lists(
    service: RecommendationService,
    depth: int,
    jobs: int = 1,
    finished: Callable[[float], None] | None = None,
) -> StreamedLists:
    """Every known customer's best ``depth`` candidates, ranked exactly as ``for_user`` ranks
    them, computed as the version is written: in blocks of customers whose dense scores stay
    bounded (``algorithms.neighbours.row_blocks``), ``jobs`` blocks at a time (threads: numpy
    and BLAS release the GIL for the heavy part), each block handed to the writer in order and
    dropped. ``finished`` gets the seconds the whole pass took."""
    from joblib import Parallel, delayed

    n_users, depth = len(service.users), min(depth, len(service.items))
    strategy = np.zeros(n_users, dtype=np.int8)
    blocks = row_blocks(n_users, len(service.items))

    def block(start: int) -> tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.int8]]:
        rows = np.arange(start, min(start + blocks.step, n_users))
        best, best_scores, kinds = _ranked(service, rows, depth)
        packed = np.empty((len(rows), 2, depth), dtype=np.int32)
        packed[:, 0] = best
        packed[:, 1] = np.where(best >= 0, best_scores, 0.0).astype(np.float32).view(np.int32)
        return rows, packed, kinds

    def packed_blocks() -> Iterator[NDArray[np.int32]]:
        started = time.perf_counter()
        for rows, packed, kinds in Parallel(n_jobs=jobs, prefer="threads", return_as="generator")(
            delayed(block)(start) for start in blocks
        ):
            strategy[rows] = kinds
            yield packed
        if finished is not None:
            finished(time.perf_counter() - started)

    def strategy_blocks() -> Iterator[NDArray[np.int8]]:
        yield strategy

    return StreamedLists(
        StreamedArray((n_users, 2, depth), np.int32, packed_blocks()),
        StreamedArray((n_users,), np.int8, strategy_blocks()),
        depth,
    )
