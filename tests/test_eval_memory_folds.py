"""What the evaluation holds through its search (issue 30, fifth round), and that holding less
changes nothing: the time folds without an orders' matrix, the test folds built after the
search, a fold's ALS cut to the rows it scores, and the binary matrix shared, not copied."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from recommender.config import TrainConfig
from recommender.data.matrix import build_interactions
from recommender.errors import DataError
from recommender.model_selection.choice import build_als
from recommender.model_selection.folds import _binary, make_folds, plan_folds
from recommender.model_selection.scoring import FoldState, _als_factors, _RowFactors
from recommender.protocols import choose_protocol

from helpers import rebuy_log


def settings() -> Any:
    return TrainConfig(data=Path("unused"), test_days=28.0).evaluation_settings


def test_interactions_without_orders_keep_every_customer_matrix() -> None:
    purchases = rebuy_log(80, True)
    whole = build_interactions(purchases, "binary")
    cut = build_interactions(purchases, "binary", orders=False)
    assert cut.order_items.shape == (0, whole.order_items.shape[1]) and cut.n_orders == 0
    for name in ("user_items", "user_counts", "purchase_age"):
        assert (getattr(whole, name) != getattr(cut, name)).nnz == 0
    assert np.array_equal(whole.purchase_cells, cut.purchase_cells)
    assert np.array_equal(whole.purchase_days, cut.purchase_days)


def test_test_folds_built_later_are_the_ones_built_first() -> None:
    purchases = rebuy_log(150, True)
    chosen = settings()
    protocol = choose_protocol(purchases, chosen.test_days, chosen.validation_periods)
    test_fold, validation, secondary = make_folds(purchases, protocol, chosen)
    tests, later_validation = plan_folds(purchases, protocol, chosen)
    assert tests.n_items == len(test_fold.interactions.item_ids)
    assert tests.basket == test_fold.basket
    built, built_secondary = tests.build()
    assert built.description == test_fold.description
    assert (built.held_out.targets != test_fold.held_out.targets).nnz == 0
    assert built_secondary is not None and secondary is not None
    assert built_secondary.description == secondary.description
    assert [f.description for f in later_validation["rolling-time"]] == [
        f.description for f in validation["rolling-time"]
    ]


def test_a_log_too_short_for_a_test_fold_fails_before_any_search() -> None:
    purchases = rebuy_log(150, True)
    chosen = settings()
    protocol = choose_protocol(purchases, chosen.test_days, chosen.validation_periods)
    start = purchases["timestamp"].max() - np.timedelta64(20, "D")
    recent = purchases[purchases["timestamp"] >= start]
    with pytest.raises(DataError, match="no purchases before"):
        plan_folds(recent, protocol, chosen)


def test_a_fold_keeps_the_als_rows_it_and_its_sibling_score() -> None:
    purchases = rebuy_log(150, True)
    chosen = settings()
    protocol = choose_protocol(purchases, chosen.test_days, chosen.validation_periods)
    fold = plan_folds(purchases, protocol, chosen)[1]["rolling-time"][0]
    assert fold.everything is not None
    als = build_als(chosen.als, num_threads=1).fit(fold.interactions.user_counts)
    state = FoldState(fold)
    state.fitted["als"] = _RowFactors.of(als, fold)
    rows, items = _als_factors(state, chosen)  # type: ignore[misc]
    assert np.array_equal(rows, als.user_factors_[fold.held_out.rows])
    assert np.array_equal(items, als.item_factors_)
    sibling = _als_factors(state.sibling(fold.everything), chosen)
    assert sibling is not None
    assert np.array_equal(sibling[0], als.user_factors_[fold.everything.held_out.rows])
    kept = state.fitted["als"].rows
    n_rows = len(fold.interactions.user_ids)
    for missing in (np.setdiff1d(np.arange(n_rows), kept)[:1], np.array([n_rows])):
        if len(missing):
            with pytest.raises(ValueError, match="did not keep"):
                state.fitted["als"].rows_factors(missing)


def test_binary_matrix_shared_other_weights_copied() -> None:
    binary = sp.csr_matrix(np.array([[1, 0, 1], [0, 1, 0]], dtype=np.float32))
    assert _binary(binary) is binary
    counts = sp.csr_matrix(np.array([[2, 0, 1], [0, 3, 0]], dtype=np.float32))
    copied = _binary(counts)
    assert copied is not counts and np.all(copied.data == 1.0) and counts.data.max() == 3.0
