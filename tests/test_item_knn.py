"""ItemKNN and Popular against answers worked out by hand (the contract every model keeps: test_contract)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recommender.algorithms import ItemKNN, Popular
from recommender.algorithms.base import top_n

from helpers import USER_ITEMS

A, B, C, D = range(4)
# Cosine on binary columns: shared buyers / sqrt(buyers_i * buyers_j); A 3, B 4, C 2 buyers.
COS_AB, COS_AC, COS_BC = 3 / np.sqrt(12), 1 / np.sqrt(6), 2 / np.sqrt(8)


def fit(**params) -> ItemKNN:
    return ItemKNN(**{"min_support": 2, "min_pair_support": 1, "num_threads": 1, **params}).fit(
        USER_ITEMS
    )


def test_cosine_neighbours_scores_and_shared_buyers_by_hand() -> None:
    model = fit(neighbours=3)
    assert model.neighbour_ids_.tolist() == [[B, C, -1], [A, C, -1], [B, A, -1], [-1, -1, -1]]
    np.testing.assert_allclose(
        model.neighbour_scores_,
        [[COS_AB, COS_AC, 0], [COS_AB, COS_BC, 0], [COS_BC, COS_AC, 0], [0, 0, 0]],
        rtol=1e-6,
    )
    assert model.neighbour_support_.tolist() == [[3, 1, 0], [3, 2, 0], [2, 1, 0], [0, 0, 0]]
    assert model.item_support_.tolist() == [3, 4, 2, 1]


def test_top_k_truncates_to_the_best() -> None:
    assert fit(neighbours=1).neighbour_ids_.ravel().tolist() == [B, A, B, -1]


def test_minimum_pair_support_drops_single_coincidences() -> None:
    model = fit(neighbours=3, min_pair_support=2)
    assert model.neighbour_ids_.tolist() == [[B, -1, -1], [A, C, -1], [B, -1, -1], [-1, -1, -1]]


def test_minimum_support_silences_rare_items_both_ways() -> None:
    model = fit(neighbours=3, min_support=3)  # C has only 2 buyers
    assert model.neighbour_ids_.tolist() == [[B, -1, -1], [A, -1, -1], [-1, -1, -1], [-1, -1, -1]]


def test_similar_items_and_recommend() -> None:
    model = fit(neighbours=3)
    ids, scores = model.similar_items(A, n=5)
    assert ids.tolist() == [B, C]
    np.testing.assert_allclose(scores, [COS_AB, COS_AC], rtol=1e-6)
    assert model.similar_items(D)[0].tolist() == []
    assert model.similar_items(99)[0].tolist() == []
    # u3 holds B and C: A scores cos(B,A) + cos(C,A); B and C themselves are excluded.
    ids, scores = model.recommend(2, USER_ITEMS[2], n=5)
    assert ids.tolist() == [A]
    np.testing.assert_allclose(scores, [COS_AB + COS_AC], rtol=1e-6)
    # Without exclusion, B gets cos(C,B) from C and C gets cos(B,C) from B: a tie, lower index first.
    ids, scores = model.recommend(2, USER_ITEMS[2], n=5, exclude_seen=False)
    assert ids.tolist() == [A, B, C]
    np.testing.assert_allclose(scores, [COS_AB + COS_AC, COS_BC, COS_BC], rtol=1e-6)


@pytest.mark.parametrize("similarity", ["bm25", "tfidf"])
def test_other_similarities_keep_the_same_shape(similarity: str) -> None:
    model = fit(neighbours=2, similarity=similarity)
    assert model.neighbour_ids_.shape == (4, 2)
    assert model.neighbour_ids_[A, 0] == B and model.neighbour_ids_[D, 0] == -1
    assert (np.diff(model.neighbour_scores_, axis=1) <= 0).all()


def test_popular_by_hand() -> None:
    model = Popular().fit(USER_ITEMS)
    assert model.popularity_.tolist() == [3, 4, 2, 1]
    assert model.similar_items(B, n=3)[0].tolist() == [A, C, D]
    assert model.recommend(0, USER_ITEMS[0], n=3)[0].tolist() == [C, D]


def test_top_n_partial_sort_and_ties() -> None:
    scores = np.array([0.5, 2.0, 0.5, 0.0, 3.0, -1.0])
    assert top_n(scores, 3)[0].tolist() == [4, 1, 0]
    assert top_n(scores, 10)[0].tolist() == [4, 1, 0, 2]  # zero and negative scores never returned
    assert top_n(scores, 2, exclude=np.array([4]))[0].tolist() == [1, 0]


def test_cosine_shared_counts_read_from_scores_equal_counted_ones() -> None:
    from recommender.algorithms.neighbours import pair_support

    matrix = sp.random(3000, 400, density=0.02, format="csr", random_state=3, dtype=np.float32)
    matrix.data[:] = 1
    model = ItemKNN(neighbours=20, min_support=1, min_pair_support=1, num_threads=1).fit(matrix)
    valid = model.neighbour_ids_ >= 0
    rows = np.broadcast_to(np.arange(400)[:, None], valid.shape)[valid]
    counted = pair_support(matrix, rows, model.neighbour_ids_[valid])
    assert valid.sum() > 1000
    np.testing.assert_array_equal(model.neighbour_support_[valid], counted)


def test_history_cap_keeps_each_customers_most_recent_items() -> None:
    """u0 bought items 0..3 aged 3, 1, 2, 1 days: a cap of 2 keeps 1 and 3 (equal age: lower
    index first); u1's two items stay; a cap of 0 or one above every history changes nothing."""
    from recommender.data.matrix import cap_history

    user_items = sp.csr_matrix(np.array([[1, 1, 1, 1], [1, 0, 1, 0]], dtype=np.float32))
    ages = sp.csr_matrix(np.array([[3, 1, 2, 1], [5, 0, 5, 0]], dtype=np.float32))
    capped = cap_history(user_items, ages, 2)
    assert capped.toarray().tolist() == [[0, 1, 0, 1], [1, 0, 1, 0]]
    assert cap_history(user_items, ages, 0) is user_items
    assert cap_history(user_items, ages, 4) is user_items
    # Three items cut to two: the pairs a heavy buyer contributes drop from 6 to 1.
    pairs = ItemKNN(neighbours=3, min_support=1, min_pair_support=1).fit(capped)
    assert pairs.neighbour_ids_[1].tolist() == [3, -1, -1]


@pytest.mark.parametrize("similarity", ["cosine", "bm25", "tfidf"])
def test_the_search_is_what_implicits_own_fit_computes(similarity: str) -> None:
    """``ItemKNN`` calls implicit's kNN search on the weighting its recommender applies,
    skipping the recommender's conversion to CSR: the same pairs and scores."""
    from implicit import nearest_neighbours

    from recommender.algorithms.item_knn import _IMPLICIT_MODELS

    rng = np.random.default_rng(3)
    dense = (rng.random((60, 40)) < 0.2) * rng.choice([0.5, 1.0, 2.0], size=(60, 40))
    user_items = sp.csr_matrix(dense.astype(np.float32))
    backend = getattr(nearest_neighbours, _IMPLICIT_MODELS[similarity])(K=7, num_threads=1)
    backend.fit(user_items, show_progress=False)
    expected = sp.coo_matrix(backend.similarity)
    keep = expected.data != 0
    model = ItemKNN(similarity, neighbours=6, min_support=1, min_pair_support=1, num_threads=1)
    rows, cols, scores = model.candidate_pairs(user_items)
    got = sorted(zip(rows.tolist(), cols.tolist(), scores.tolist()))
    want = zip(expected.row[keep].tolist(), expected.col[keep].tolist(), expected.data[keep])
    assert got == sorted((r, c, float(np.float32(s))) for r, c, s in want)
