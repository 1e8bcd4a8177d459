"""The evaluation's blockwise scoring (issue 30, memory) against the all-at-once computation.

The buy-again validation, the test fold's baselines and the search rank dense evaluated rows
x items scores a block of rows at a time, so that no fold's whole matrix is held. These tests
shrink the block to a few rows and check that every ranking is the one the whole dense
matrix gives, row for row: a blockwise path that diverged would change the reported figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
from implicit.nearest_neighbours import CosineRecommender

from recommender import evaluation
from recommender.algorithms.repeat import mixed_cells, mixed_scores
from recommender.config import TrainConfig
from recommender.evaluation import top_k, top_k_blocks
from recommender.model_selection import repeats
from recommender.model_selection.choice import BlendChoice, item_candidates
from recommender.model_selection.folds import make_folds
from recommender.model_selection.measure import _baselines
from recommender.model_selection.repeats import MODES, RepeatChoice, rankings
from recommender.model_selection.scoring import FoldState, choice_scores, choice_top_k, metrics
from recommender.protocols import choose_protocol

from helpers import rebuy_log


def settings(**overrides: Any) -> Any:
    return TrainConfig(data=Path("unused"), test_days=28.0, **overrides).evaluation_settings


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> int:
    """Blocks of about 7 rows of a 460-item catalog: every fold is ranked in many blocks."""
    entries = 7 * 460
    monkeypatch.setattr(evaluation, "RANK_BLOCK_ENTRIES", entries)  # repeats' blocks too
    return entries


@pytest.fixture(scope="module")
def folds() -> tuple[Any, dict[str, list[Any]], Any]:
    purchases = rebuy_log(150, True)
    chosen = settings()
    protocol = choose_protocol(purchases, chosen.test_days, chosen.validation_periods)
    return make_folds(purchases, protocol, chosen)


def blend(n_items: int) -> BlendChoice:
    """An item model, ALS and trending together: every part of the explore scores."""
    kind, params = item_candidates(n_items, settings())[0]["item-knn cosine"]
    return BlendChoice(kind, params, 0.25, 0.25, 14.0, 30.0)


def reference_rankings(
    state: FoldState, choice: BlendChoice, repeat: RepeatChoice, depth: int
) -> dict[str, np.ndarray]:
    """The lists as computed before blocks: whole dense explore scores of the fold's rows."""
    fold = state.fold.everything
    explore = choice_scores(state.sibling(fold), choice, settings())
    cells = repeats.repeat_cells(fold.interactions)
    rows = fold.held_out.rows
    owned = fold.interactions.user_items[rows].tocsr()
    scale = np.abs(explore).max(axis=1)
    scale[scale == 0] = 1.0
    row_of_cell = np.repeat(np.arange(len(rows)), np.diff(owned.indptr))
    explore_owned = explore[row_of_cell, owned.indices] / scale[row_of_cell]
    model = repeat.build(28.0).fit(cells)
    repeat_rows = model.scores_[rows].tocsr()
    mixed_own = mixed_cells(repeat_rows, explore_owned, repeat.mix)
    out = {"buy_again": repeats._rank_cells(owned.indptr, owned.indices, mixed_own, depth)}
    mixed = mixed_scores(repeat_rows.toarray(), explore, repeat.mix)
    out["true"] = top_k(explore, owned, depth)
    out["false"] = top_k(mixed, sp.csr_matrix(owned.shape), depth)
    excluded = owned.copy()
    excluded.data = model.rarely_rebought(owned.indices, cells.rows(rows).times).astype(np.float32)
    excluded.eliminate_zeros()
    out["repeat"] = top_k(mixed, excluded, depth)
    return out


def test_buy_again_lists_by_blocks_are_the_whole_matrix_lists(folds, small_blocks) -> None:
    _, validation, _ = folds
    state = FoldState(next(iter(validation.values()))[0])
    choice = blend(len(state.fold.interactions.item_ids))
    prepared = repeats._prepare(state, choice, settings())
    assert prepared is not None and len(prepared.blocks()) > 3
    candidates = [RepeatChoice(0.0, 0.0, 0.0, 0.75), RepeatChoice(30.0, 1.0, 1.0, 0.5)]
    blocked = rankings(prepared, candidates, 28.0, 20, ("buy_again", *MODES))
    for candidate, lists in zip(candidates, blocked):
        whole = reference_rankings(state, choice, candidate, 20)
        assert set(lists) == set(whole)
        for name in whole:
            assert np.array_equal(lists[name], whole[name]), name


def test_rankings_blockwise_equal_top_k_of_the_whole(folds, small_blocks) -> None:
    test_fold, _, _ = folds
    state = FoldState(test_fold)
    choice = blend(len(test_fold.interactions.item_ids))
    whole = top_k(choice_scores(state, choice, settings()), test_fold.held_out.seen, 20)
    assert np.array_equal(choice_top_k(state, choice, settings(), 20), whole)
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(61, 460)).astype(np.float32)  # many ties
    seen = sp.random(61, 460, density=0.05, format="csr", random_state=1)
    assert np.array_equal(
        top_k_blocks(lambda part: scores[part], seen, 25), top_k(scores, seen, 25)
    )


def test_tifu_knn_by_blocks_is_the_whole_matrix(folds, small_blocks) -> None:
    test_fold, _, _ = folds
    fold = test_fold.everything
    cells = repeats.repeat_cells(fold.interactions)
    rows = fold.held_out.rows
    blocks = repeats.tifu_knn_blocks(cells, rows, neighbours=5)
    whole = blocks(slice(0, len(rows)))
    parts = np.concatenate([blocks(slice(start, start + 7)) for start in range(0, len(rows), 7)])
    assert np.array_equal(parts, whole)
    assert np.array_equal(
        top_k_blocks(blocks, fold.held_out.seen, 20), top_k(whole, fold.held_out.seen, 20)
    )


def test_baselines_by_blocks_are_the_dense_metrics(folds, small_blocks) -> None:
    test_fold, _, _ = folds
    state = FoldState(test_fold)
    measured = _baselines(test_fold, state, settings())
    held = test_fold.held_out
    dense = metrics(test_fold, np.tile(held.popularity, (len(held.rows), 1)), settings())
    assert measured["baseline: popularity"] == dense
    query = test_fold.query()
    model = CosineRecommender(K=100)
    model.fit(test_fold.fit_matrix, show_progress=False)
    cosine = metrics(test_fold, (query @ model.similarity).toarray(), settings())
    assert measured["baseline: implicit cosine K=100"] == cosine
