"""The precomputed lists: who gets one (``--personal-list-days``), that each answers as scoring
the whole catalog does, and that the pass ranks as serving ranks (``serving.batch.TopScorer``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from recommender import artifacts, training
from recommender.bundle import PersonalLists, _lists
from recommender.serving.batch import TopScorer
from recommender.serving.catalog import Filters
from recommender.serving.ranking import BlendWeights
from recommender.serving.service import RecommendationService

from helpers import PYTHON, ROOT, TINY_LOG, shop_log, tiny_config

CASES = [Filters(), Filters(exclude=frozenset({"B"})), Filters(max_per_category=1)]


def _train(
    tmp_path: Path, log_text: str | None = None, **overrides: object
) -> RecommendationService:
    log = tmp_path / "log.csv"
    if log_text is None:
        shop_log(60, lambda c: range(c % 5, 120, 9 + c % 4), seed=2).to_csv(log, index=False)
    else:
        log.write_text(log_text)
    training.run(tiny_config(log, tmp_path / "models", **overrides))
    return RecommendationService(artifacts.load_current_bundle(tmp_path / "models"))


def _same_answers(listed: RecommendationService, models_dir: Path, users: list[str]) -> None:
    scored = RecommendationService(artifacts.load_current_bundle(models_dir))
    scored.lists = None
    for user in users:
        for k in (1, 2, 3):
            for filters in CASES:
                want = scored.for_user(user, k, filters, exclude_purchased=True)
                got = listed.for_user(user, k, filters, exclude_purchased=True)
                assert [r["item_id"] for r in got["recommendations"]] == [
                    r["item_id"] for r in want["recommendations"]
                ]
                assert got["strategy"] == want["strategy"]


def test_only_customers_active_within_the_window_get_a_list(tmp_path: Path, monkeypatch) -> None:
    # The tiny log ends on 2024-01-06: u5 bought that day, u4 a day before, u3 three days before.
    service = _train(tmp_path, TINY_LOG, personal_list_days=2)
    lists = service.lists
    assert lists is not None and lists.rows is not None
    assert lists.items.shape[0] == 2  # room for the two lists only
    with_list = {
        user for user in service.users.ids_.tolist() if lists.row(service.users.index(user)) >= 0
    }
    assert with_list == {"u4", "u5"}
    assert service.manifest["components"]["personal_lists"]["customers"] == 2
    assert service.manifest["components"]["personal_lists"]["days"] == 2
    for user in ("u1", "u2", "u3"):
        assert lists.strategy[service.users.index(user)] == 0
    # Outside the window: scored per request, the same answer as with no lists at all.
    _same_answers(service, tmp_path / "models", ["u1", "u2", "u3", "u4", "u5"])
    # Inside: answered off the list, no whole-catalog scoring.
    want = service.for_user("u4", 1, exclude_purchased=True)["recommendations"]
    monkeypatch.setattr(service.ranker, "rank", lambda *a: pytest.fail("scored the catalog"))
    assert service.for_user("u4", 1, exclude_purchased=True)["recommendations"] == want


def test_window_zero_lists_every_customer(tmp_path: Path) -> None:
    service = _train(tmp_path, TINY_LOG, personal_list_days=0)
    assert service.lists is not None and service.lists.items.shape[0] == len(service.users)
    assert service.manifest["components"]["personal_lists"]["customers"] == len(service.users)


@pytest.mark.parametrize(
    "weights", [None, BlendWeights(0.4, 0.3, None), BlendWeights(0.9, 0.0, 0.05)]
)
def test_the_pass_ranks_as_serving_does(tmp_path: Path, weights: BlendWeights | None) -> None:
    service = _train(tmp_path, personal_list_depth=0)
    if weights is not None:
        service.ranker.weights = weights
    users = np.arange(len(service.users))
    best, scores, strategy = TopScorer(service).top(users, 30)
    want_strategy = {"popular": 0, "item-knn": 1, "als": 2, "blend": 3}
    for user in users.tolist():
        answer = service.for_user(str(service.users.ids_[user]), 30, exclude_purchased=True)
        assert strategy[user] == want_strategy[answer["strategy"]]
        if not strategy[user]:
            continue  # nothing personal: trending items, no list
        picks = [r for r in answer["recommendations"] if r["source"] != "popular"]
        assert best[user][best[user] >= 0].tolist() == [
            service.items.index(r["item_id"]) for r in picks
        ]
        assert scores[user][: len(picks)] == pytest.approx([r["score"] for r in picks], abs=1e-6)


def test_the_pass_equals_the_whole_row_blend_with_ties_and_few_items(tmp_path: Path) -> None:
    service = _train(tmp_path, personal_list_depth=0)
    # Ties everywhere: factors rounded (ALS scores on a grid), item-to-item weights made equal.
    als = service.als
    als.user_factors_ = (np.round(np.asarray(als.user_factors_) * 2) / 2).astype(np.float32)
    als.item_factors_ = (np.round(np.asarray(als.item_factors_) * 2) / 2).astype(np.float32)
    service.ranker.matrix = service.ranker.matrix.copy()
    service.ranker.matrix.data[:] = 0.5
    users = np.arange(len(service.users))
    for k in (1, 7, len(service.items)):
        best, _, strategy = TopScorer(service).top(users, k)
        want, _, want_strategy = service.ranker.batch_with_strategy(
            service.user_items[users], service.als.user_factors_[users], k
        )
        assert (best == want).all() and (strategy == want_strategy).all()


def test_bad_list_days_is_a_one_line_error(tmp_path: Path) -> None:
    for value in ("-1", "soon"):
        done = subprocess.run(
            [
                PYTHON,
                str(ROOT / "train.py"),
                "--data",
                str(tmp_path / "log.csv"),
                "--models-dir",
                str(tmp_path / "models"),
                "--personal-list-days",
                value,
            ],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=120,
        )
        assert done.returncode == 2
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "personal_list_days" in lines[0]
    assert not (tmp_path / "models").exists()


def test_active_customers_counts_back_from_the_last_purchase() -> None:
    # 1 + age in days of each cell's latest purchase; rows are customers (one bought nothing).
    ages = sp.csr_matrix(np.array([[1.0, 40.0], [0, 91.0], [95.0, 0], [0, 0]]))
    assert training.active_customers(ages, 90).tolist() == [0, 1]
    assert training.active_customers(ages, 0).tolist() == [0, 1, 2, 3]


def test_versions_before_the_row_index_load_one_list_per_customer() -> None:
    packed = np.zeros((3, 2, 2), dtype=np.int32)
    packed[:, 0] = [[1, 0], [0, -1], [1, 0]]
    lists = _lists(
        {"personal_lists.packed": packed, "personal_lists.strategy": np.array([1, 0, 3], np.int8)}
    )
    assert isinstance(lists, PersonalLists) and lists.rows is None
    assert lists.row(2) == 2 and lists.items[lists.row(2)].tolist() == [1, 0]
    indexed = _lists(
        {
            "personal_lists.packed": packed[:1],
            "personal_lists.strategy": np.array([0, 3, 0], np.int8),
            "personal_lists.rows": np.array([-1, 0, -1], np.int32),
        }
    )
    assert indexed.row(1) == 0 and indexed.row(0) == -1


def test_the_pass_scores_bit_for_bit_as_a_request_whatever_the_block(
    tmp_path: Path, monkeypatch
) -> None:
    """A block's ALS product (BLAS) rounds differently from a request's row-by-row
    ``dot_rows``, and differently again for another block shape: the lists must still hold
    the scores, and so the order, a request computes, in blocks of any size."""
    import recommender.serving.batch as batch

    service = _train(tmp_path, personal_list_depth=0)
    users = np.arange(len(service.users))
    want = {}
    for user in users.tolist():
        history, weights, vector = service.evidence(user, ())
        ranked = service.ranker.rank(
            history, weights, vector, 40, Filters(), service._owned(user, ())
        )
        if ranked.strategy != "popular":
            want[user] = (ranked.items, ranked.scores)
    assert len(want) > len(users) // 2
    for rows_per_block in (1, 7, len(users)):
        monkeypatch.setattr(batch, "BLOCK_ENTRIES", rows_per_block * len(service.items))
        best, scores, _ = TopScorer(service).top(users, 40)
        for user, (items, item_scores) in want.items():
            kept = best[user] >= 0
            assert best[user][kept].tolist() == items[: int(kept.sum())]
            assert scores[user][kept].tolist() == item_scores[: int(kept.sum())]
