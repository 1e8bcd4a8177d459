"""Metrics on rankings small enough to check by hand, and the item-to-item models' formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.stats import chi2_contingency

from recommender.algorithms import EASE, Cooccurrence, RP3beta
from recommender.algorithms.base import top_n, top_n_rows
from recommender.algorithms.blend import blend_scores
from recommender.algorithms.cooccurrence import log_likelihood_ratio
from recommender.errors import ModelSkippedError
from recommender.evaluation import HeldOut, next_item_metrics, ranking_metrics, top_k


def test_ranking_metrics_by_hand() -> None:
    # Two customers, 5 items, k=2. Customer 0: targets {1, 3} plus one unreachable (3 in all);
    # recommended [3, 0]: a hit at rank 1. Customer 1: target {4}; recommended [2, 4]: hit at rank 2.
    targets = sp.csr_matrix(np.array([[0, 1, 0, 1, 0], [0, 0, 0, 0, 1]], dtype=np.float32))
    held_out = HeldOut(
        np.array([0, 1]),
        sp.csr_matrix((2, 5)),
        targets,
        np.array([3, 1]),
        popularity=np.array([50.0, 40.0, 30.0, 20.0, 10.0]),
    )
    metrics = ranking_metrics(np.array([[3, 0], [2, 4]]), held_out, k=2)
    assert metrics["precision"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert metrics["recall"] == pytest.approx((1 / 3 + 1 / 1) / 2)
    ideal_0 = 1 + 1 / math.log2(3)  # two slots, three targets
    assert metrics["ndcg"] == pytest.approx((1 / ideal_0 + (1 / math.log2(3)) / 1) / 2)
    assert metrics["map"] == pytest.approx((1.0 / 2 + 0.5 / 1) / 2)
    assert metrics["hit_rate"] == 1.0
    assert metrics["coverage"] == pytest.approx(4 / 5)
    assert metrics["novelty"] == pytest.approx(
        (4 + 1 + 3 + 5) / 4
    )  # popularity ranks of 3, 0, 2, 4


def test_top_k_excludes_seen_items() -> None:
    scores = np.array([[0.9, 0.8, 0.7, 0.1], [0.1, 0.2, 0.3, 0.4]])
    seen = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float32))
    assert top_k(scores, seen, 2).tolist() == [[1, 2], [2, 1]]


def test_next_item_metrics_by_hand() -> None:
    table = np.array([[1, 2, -1], [0, 2, -1], [1, 0, -1]])
    metrics = next_item_metrics(
        table, queries=np.array([0, 0, 1]), targets=np.array([2, 1, 0]), k=2
    )
    assert metrics["hit_rate"] == 1.0 and metrics["pairs"] == 3
    assert metrics["mrr"] == pytest.approx((1 / 2 + 1 + 1) / 3)


def test_blend_scores_scale_each_part() -> None:
    item = np.array([2.0, 1.0, 0.0])
    als = np.array([-4.0, 2.0, 4.0])
    trend = np.array([0.0, 0.5, 1.0])
    np.testing.assert_allclose(
        blend_scores(item, als, trend, 0.25, 0.1),
        [0.75 * 1.0 + 0.25 * -1.0, 0.75 * 0.5 + 0.25 * 0.5 + 0.05, 0.25 * 1.0 + 0.1],
    )
    np.testing.assert_allclose(blend_scores(item, None, None, 0.25, 0.0), [0.75, 0.375, 0.0])
    assert blend_scores(None, None, trend, 0.5, 1.0) is None


X = sp.csr_matrix(
    np.array(
        [[1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 0], [1, 1, 0, 1], [0, 0, 1, 1]], dtype=np.float32
    )
)


def test_ease_is_the_closed_form() -> None:
    model = EASE(l2=2.0, neighbours=3).fit(X)
    gram = (X.T @ X).toarray() + 2.0 * np.eye(4)
    inverse = np.linalg.inv(gram)
    weights = -inverse / np.diag(inverse)
    np.fill_diagonal(weights, 0)
    for item in range(4):
        ids = model.neighbour_ids_[item][model.neighbour_ids_[item] >= 0]
        np.testing.assert_allclose(
            model.neighbour_scores_[item][: len(ids)], weights[item, ids], rtol=1e-5
        )
        expected = [
            j
            for j in np.argsort(-weights[item], kind="stable")
            if j != item and weights[item, j] != 0
        ][:3]
        assert ids.tolist() == expected


def _dense_ease(l2: float) -> np.ndarray:
    inverse = np.linalg.inv((X.T @ X).toarray() + l2 * np.eye(4))
    weights = -inverse / np.diag(inverse)
    np.fill_diagonal(weights, 0)
    return weights


def test_ease_scaled_l2_is_a_multiple_of_the_mean_item_count() -> None:
    # Items are bought by 3, 4, 3 and 2 customers: the binary Gram matrix's mean diagonal is 3.
    model = EASE(l2=0.5, scale_l2=True, neighbours=3).fit(X)
    assert model.l2_ == pytest.approx(1.5)
    plain = EASE(l2=1.5, neighbours=3).fit(X)
    np.testing.assert_array_equal(model.neighbour_ids_, plain.neighbour_ids_)
    np.testing.assert_allclose(model.neighbour_scores_, plain.neighbour_scores_, rtol=1e-6)


def test_signed_ease_keeps_the_strongest_weights_negative_ones_included() -> None:
    weights = _dense_ease(2.0)
    assert (weights < 0).any()  # this matrix has "bought this, not that" weights
    signed = EASE(l2=2.0, neighbours=2, signed=True, min_pair_support=0).fit(X)
    unsigned = EASE(l2=2.0, neighbours=2).fit(X)
    for item in range(4):
        strongest = sorted(
            np.argsort(-np.abs(weights[item]), kind="stable")[:2], key=lambda j: -weights[item, j]
        )
        assert signed.neighbour_ids_[item].tolist() == strongest
        np.testing.assert_allclose(
            signed.neighbour_scores_[item], weights[item, strongest], rtol=1e-5
        )
        assert (unsigned.neighbour_scores_[item][unsigned.neighbour_ids_[item] >= 0] > 0).all()
    # Scoring a customer sums the signed weights of what they bought.
    row = sp.csr_matrix(np.array([[1, 0, 0, 1]], dtype=np.float32))
    table = np.zeros((4, 4))
    for item in range(4):
        table[item, signed.neighbour_ids_[item]] = signed.neighbour_scores_[item]
    np.testing.assert_allclose(signed.score_rows(row).ravel(), table[0] + table[3], rtol=1e-5)


def test_ease_is_skipped_beyond_its_size() -> None:
    with pytest.raises(ModelSkippedError, match="4 items exceed max_items=3"):
        EASE(max_items=3).fit(X)


def test_rp3beta_by_hand() -> None:
    model = RP3beta(alpha=1.0, beta=0.5, neighbours=3).fit(X)
    users_per_item = X.sum(axis=0).A1
    items_per_user = X.sum(axis=1).A1
    # item 0 -> users {0, 1, 3} (1/3 each) -> item 1 (1/2, 1/3, 1/3 from those users), / pop(1)^0.5
    walk = (1 / 3) * (1 / 2 + 1 / 3 + 1 / 3) / np.sqrt(users_per_item[1])
    assert items_per_user.tolist() == [2, 3, 2, 3, 2]
    ids = model.neighbour_ids_[0].tolist()
    assert model.neighbour_scores_[0][ids.index(1)] == pytest.approx(walk, rel=1e-5)


def test_log_likelihood_ratio_is_the_g_test() -> None:
    both, first, second, total = 10.0, 30.0, 20.0, 100.0
    table = np.array([[both, first - both], [second - both, total - first - second + both]])
    expected = chi2_contingency(table, correction=False, lambda_="log-likelihood")[0]
    assert log_likelihood_ratio(np.array([both]), np.array([first]), np.array([second]), total)[
        0
    ] == pytest.approx(expected)


def test_cooccurrence_ranks_significant_pairs_and_counts_them() -> None:
    # Items 0 and 1 always together (4 customers); item 2 with 0 once, among many customers.
    rows = [[0, 1]] * 4 + [[0, 2]] + [[2]] * 3 + [[3]] * 12
    matrix = sp.csr_matrix(
        (
            np.ones(sum(map(len, rows)), dtype=np.float32),
            (np.repeat(np.arange(len(rows)), [len(r) for r in rows]), np.concatenate(rows)),
        ),
        shape=(len(rows), 4),
    )
    model = Cooccurrence(shrinkage=1.0, neighbours=2, min_support=1, min_pair_support=1).fit(matrix)
    assert model.neighbour_ids_[0][0] == 1 and model.neighbour_support_[0][0] == 4
    assert model.neighbour_ids_[1].tolist() == [0, -1]


def test_batch_top_rows_rank_as_one_request_does_ties_included() -> None:
    # Few distinct values, so ties at the cut are everywhere: lower index first, as top_n.
    rng = np.random.default_rng(0)
    for _ in range(200):
        scores = rng.integers(0, 4, size=(5, 12)).astype(float)
        scores[rng.random((5, 12)) < 0.2] = -np.inf
        k = int(rng.integers(1, 8))
        batch = top_n_rows(scores, k)
        for row in range(5):
            single = top_n(scores[row], k, positive_only=False)[0]
            assert batch[row][: len(single)].tolist() == single.tolist()
    assert top_n_rows(np.array([[1.0, 3.0, 3.0, 2.0, 3.0]]), 2).tolist() == [[1, 2]]
