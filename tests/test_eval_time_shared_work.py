"""The evaluation's fits do less work and give the same tables to the last bit.

``largest_per_row`` orders each row's best entries on their own instead of one lexsort of
every pair; LLR looks ``x log x`` up for whole counts; the search keeps the runner-up of the
decay stage's item models for the finalists instead of refitting it. Each is checked against
what it replaced.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recommender.algorithms import Cooccurrence
from recommender.algorithms.cooccurrence import log_likelihood_ratio
from recommender.algorithms.neighbours import largest_per_row


def _lexsorted_best(rows: np.ndarray, cols: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    """The order the search used before: every pair by (row, -score, column), k per row."""
    order = np.lexsort((cols, -scores, rows))
    ordered = rows[order]
    rank = np.arange(len(order)) - np.searchsorted(ordered, ordered, side="left")
    return order[rank < k]


@pytest.mark.parametrize("seed", range(40))
def test_largest_per_row_is_the_lexsort_order(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_rows = int(rng.integers(1, 40))
    n = int(rng.integers(0, 2000))
    k = int(rng.integers(1, 25))
    rows = np.sort(rng.integers(0, n_rows, n))
    cols = rng.integers(0, 30, n)  # repeated columns: duplicate pairs keep their order
    if seed % 2:
        scores = rng.integers(-2, 4, n).astype(np.float64)  # many ties at the cut
    else:
        scores = rng.random(n)
    if seed % 5 == 0:
        scores[rng.random(n) < 0.1] = -np.inf
    got = largest_per_row(rows, cols, scores, n_rows, k)
    np.testing.assert_array_equal(got, _lexsorted_best(rows, cols, scores, k))


def test_largest_per_row_with_rows_of_very_different_lengths() -> None:
    rng = np.random.default_rng(7)
    lengths = np.array([0, 1, 3, 5, 40, 300, 2, 1000, 7])
    rows = np.repeat(np.arange(len(lengths)), lengths)
    cols = np.concatenate([rng.permutation(length) for length in lengths])
    scores = np.round(rng.random(len(rows)) * 20) / 4
    for k in (1, 4, 6, 50):
        got = largest_per_row(rows, cols, scores, len(lengths), k)
        np.testing.assert_array_equal(got, _lexsorted_best(rows, cols, scores, k))


def _binary(n_rows: int, n_items: int, density: float, seed: int) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.7
    keep = rng.random((n_rows, n_items)) < density * n_items * popularity / popularity.sum()
    return sp.csr_matrix(keep.astype(np.float32))


@pytest.mark.parametrize("shrinkage", [0.0, 10.0])
def test_llr_scores_are_the_computed_ones_bit_for_bit(shrinkage: float) -> None:
    """The looked-up ``x log x`` and the pairs skipped below chance give exactly the scores of
    ``log_likelihood_ratio`` on every co-occurring pair."""
    user_items = _binary(150, 80, 0.1, 3)
    present = user_items.copy()
    total = float(present.shape[0])
    counts = np.asarray(present.sum(axis=0)).ravel().astype(np.float64)
    both = (present.T @ present).toarray().astype(np.float64)
    llr = log_likelihood_ratio(both, counts[:, None], counts[None, :], total)
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = (
            np.where(both > counts[:, None] * counts[None, :] / total, llr, 0.0)
            * both
            / (both + shrinkage)
        )
    expected[both == 0] = 0.0  # never bought together: not a candidate (0 / 0 unshrunk)
    np.fill_diagonal(expected, 0.0)
    model = Cooccurrence(shrinkage=shrinkage, neighbours=80, min_support=1, min_pair_support=1)
    model.fit(user_items)
    got = np.zeros_like(expected)
    ids, scores = model.neighbour_ids_, model.neighbour_scores_
    rows = np.broadcast_to(np.arange(len(ids))[:, None], ids.shape)
    got[rows[ids >= 0], ids[ids >= 0]] = scores[ids >= 0]
    np.testing.assert_array_equal(got, expected.astype(np.float32))


def test_the_search_fits_each_item_model_once_per_fold(tmp_path, monkeypatch) -> None:
    """The decay stage's runner-up is a finalist here (the ranking is fixed so that it is):
    its model, fitted on every fold in the decay stage, is kept for the blends, not refitted."""
    import dataclasses
    import importlib
    from collections import Counter

    from bench.synthetic import generate
    from recommender.config import TrainConfig
    from recommender.model_selection import item_candidates, make_folds, scoring
    from recommender.protocols import choose_protocol
    from recommender.training import load_purchases

    search_module = importlib.import_module("recommender.model_selection.search")
    data = tmp_path / "log.parquet"
    generate(30_000, 150, 1_500, 1, data)
    config = TrainConfig(data=data)
    settings = dataclasses.replace(config.evaluation_settings, ease_max_items=0, jobs=1)
    purchases, _ = load_purchases(config)
    protocol = choose_protocol(purchases, settings.test_days, settings.validation_periods)
    _, validation, _ = make_folds(purchases, protocol, settings)
    candidates, _ = item_candidates(1_500, settings)

    def preference(choice) -> float:
        if choice.item_part == 0:
            return 0.0
        if choice.item_params.get("similarity") != "cosine":
            return 0.05
        order = {30.0: 1.0, 60.0: 0.9}.get(choice.decay_days, 0.1)
        return order if choice.als_weight == choice.trend_weight == 0 else order / 2

    monkeypatch.setattr(
        search_module, "rank_keys", lambda rows: {c: (True, preference(c)) for c in rows}
    )
    fitted: Counter = Counter()
    fit_item = scoring.fit_item

    def counted(state, choice):
        key = choice.item_key(scoring.fit_decay(choice))
        if key not in state.items:
            fitted[(id(state.fold), key)] += 1
        return fit_item(state, choice)

    monkeypatch.setattr(scoring, "fit_item", counted)
    outcome = search_module.search(validation, candidates, settings)
    assert outcome["decay_chosen_days"] == 30.0
    runner_up = [key for _, key in fitted if key[0] == "item_knn" and key[2] == 60.0]
    assert len(runner_up) == sum(len(folds) for folds in validation.values())
    assert max(fitted.values()) == 1


@pytest.mark.parametrize("seed", range(12))
def test_largest_per_row_float32_and_long_rows_are_the_lexsort_order(seed: int) -> None:
    """Float32 scores (one int64 key per entry) and rows far longer than k (cut first by a
    lower bound of their k-th score) keep the lexsort's entries in its order, ties included."""
    rng = np.random.default_rng(100 + seed)
    k = int(rng.integers(1, 12))
    lengths = rng.integers(0, 12 * k, 30)
    lengths[: int(rng.integers(1, 5))] = rng.integers(4 * k + 1, 60 * k, 1)
    lengths = rng.permutation(lengths)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    cols = np.concatenate([rng.permutation(2 * length + 1)[:length] for length in lengths])
    if seed % 3 == 0:
        scores = rng.integers(-3, 4, len(rows)).astype(np.float32)  # ties, and -0.0 next to 0.0
        scores[rng.random(len(rows)) < 0.1] *= -1
    else:
        scores = rng.standard_normal(len(rows)).astype(np.float32)
    if seed % 4 == 0:
        scores[rng.random(len(rows)) < 0.05] = -np.inf
    for dtype in (np.float32, np.float64):
        got = largest_per_row(rows, cols, scores.astype(dtype), len(lengths), k)
        np.testing.assert_array_equal(got, _lexsorted_best(rows, cols, scores.astype(dtype), k))


@pytest.mark.parametrize("kind", ["cosine", "bm25", "rp3beta", "cooccurrence"])
def test_unranked_fit_keeps_the_same_neighbour_matrix(kind: str) -> None:
    """``fit(ranked=False)`` (the search's fits) keeps the same neighbours and scores, so the
    neighbour matrix the search scores with is the same to the last bit; identical columns
    (ties at the top) give rows with more candidates than K."""
    from recommender.algorithms import ItemKNN, RP3beta

    rng = np.random.default_rng(5)
    binary = _binary(120, 90, 0.12, 11)
    user_items = binary.copy()
    user_items.data = rng.choice([0.25, 0.5, 1.0], size=user_items.nnz).astype(np.float32)
    user_items = sp.hstack([user_items, user_items[:, :6]]).tocsr()  # twins of 6 items
    for neighbours in (3, 10):
        if kind in ("cosine", "bm25"):
            model = ItemKNN(kind, neighbours, min_support=1, min_pair_support=1, num_threads=1)
        elif kind == "rp3beta":
            model = RP3beta(neighbours=neighbours)
        else:
            model = Cooccurrence(neighbours=neighbours, min_support=1, min_pair_support=1)
        ranked = model.fit(user_items, count_support=False).neighbour_matrix()
        unranked = model.fit(user_items, count_support=False, ranked=False).neighbour_matrix()
        np.testing.assert_array_equal(ranked.indptr, unranked.indptr)
        np.testing.assert_array_equal(ranked.indices, unranked.indices)
        np.testing.assert_array_equal(ranked.data, unranked.data)
