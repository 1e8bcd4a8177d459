"""``top_n_rows`` ranks wide rows from the candidates at or above a lower bound of each row's
n-th score; these tests hold it to the full-partition ranking it replaced, bit for bit, on
rows with many ties, -inf, and n larger than the finite scores."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from numpy.typing import NDArray

from recommender.algorithms.base import top_n_rows
from recommender.evaluation import top_k


def reference_top_n_rows(scores: NDArray[np.floating], n: int) -> NDArray[np.int64]:
    """The previous ``top_n_rows`` (partition of every score), copied as the reference."""
    scores = np.asarray(scores)
    n = min(n, scores.shape[1])
    if n == 0:
        return np.empty((len(scores), 0), dtype=np.int64)
    columns = scores.shape[1]
    threshold = np.partition(scores, columns - n, axis=1)[:, columns - n : columns - n + 1]
    above = scores > threshold
    at = scores == threshold
    places = n - above.sum(axis=1, keepdims=True)
    chosen = above | at
    crowded = np.flatnonzero(at.sum(axis=1, keepdims=True) > places)
    if len(crowded):
        chosen[crowded] = above[crowded] | (
            at[crowded] & (np.cumsum(at[crowded], axis=1, dtype=np.int32) <= places[crowded])
        )
    best = np.flatnonzero(chosen).reshape(len(scores), n) % columns
    best_scores = np.take_along_axis(scores, best, axis=1)
    order = np.lexsort((best, -best_scores), axis=1)
    return np.take_along_axis(best, order, axis=1).astype(np.int64)


def scores_with_ties(rng: np.random.Generator, rows: int, columns: int) -> NDArray[np.float64]:
    """Rows of every kind the evaluation ranks: continuous scores, coarse values with many
    ties (zeros of a sparse part, -0.0 among them), rows mostly or wholly -inf, popular
    items bunched at low columns, and rows with a handful of distinct values."""
    kind = rng.integers(0, 6, size=rows)
    scores = rng.standard_normal((rows, columns))
    coarse = np.round(rng.standard_normal((rows, columns)), 1)
    scores[kind == 1] = coarse[kind == 1]
    scores[kind == 2] = np.where(rng.random((rows, columns)) < 0.001, scores, 0.0)[kind == 2]
    scores[kind == 3] = rng.integers(0, 3, size=((kind == 3).sum(), columns))
    scores[kind == 4] += np.linspace(3.0, 0.0, columns)
    scores[rng.random((rows, columns)) < 0.01] = -np.inf
    scores[kind == 5] = np.where(rng.random((rows, columns)) < 0.0005, scores, -np.inf)[kind == 5]
    scores[0] = -np.inf
    scores[1] = 0.0
    scores[2, ::2] = -0.0
    return scores


@pytest.mark.parametrize("columns", [7, 300, 2048, 5000, 9000])
@pytest.mark.parametrize("n", [0, 1, 5, 20, 100, 257])
def test_same_as_reference(columns: int, n: int) -> None:
    rng = np.random.default_rng(columns * 1000 + n)
    scores = scores_with_ties(rng, 40, columns)
    got = top_n_rows(scores, n)
    expected = reference_top_n_rows(scores, n)
    assert got.dtype == expected.dtype == np.int64
    np.testing.assert_array_equal(got, expected)
    narrow = scores.astype(np.float32)
    np.testing.assert_array_equal(top_n_rows(narrow, n), reference_top_n_rows(narrow, n))


def test_top_k_same_as_reference_with_seen_items() -> None:
    """Through ``top_k``: seen items excluded, k beyond a row's unseen items."""
    rng = np.random.default_rng(7)
    rows, columns = 60, 6000
    scores = scores_with_ties(rng, rows, columns)
    seen = sp.random(rows, columns, density=0.01, random_state=3, format="lil")
    seen[5] = 1.0
    seen = sp.csr_matrix(seen)
    masked = scores.copy()
    masked[seen.nonzero()] = -np.inf
    for k in (1, 10, 20, 100):
        np.testing.assert_array_equal(top_k(scores, seen, k), reference_top_n_rows(masked, k))


def test_empty_rows() -> None:
    assert top_n_rows(np.zeros((0, 5000)), 20).shape == (0, 20)
