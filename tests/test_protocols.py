"""The validation protocol rule on hand-made logs, the splits behind each protocol, the
decayed matrix, the "simplest within noise" shipping rule, and the reported figure recomputed
from the test predictions saved in the model version."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recommender import artifacts, model_selection, training
from recommender.algorithms import EASE
from recommender.data.matrix import build_interactions, decayed
from recommender.data.split import next_purchase_split, random_holdout_split
from recommender.model_selection import BlendChoice, simplest_within_noise
from recommender.protocols import (
    NEXT_PURCHASE,
    RANDOM_HOLDOUT,
    ROLLING,
    choose_protocol,
)

from helpers import ORIGIN, shop_log, tiny_config, write_uniform_log

EASE_PARAMS = {"l2": 10.0, "neighbours": 20, "max_items": 100}


def test_uniform_activity_gets_the_rolling_time_split_with_next_purchase_measured_too() -> None:
    # 200 customers each buying every 10 days for a year: every 30-day period holds all of them.
    log = shop_log(200, lambda c: range(c % 10, 365, 10))
    protocol = choose_protocol(log, test_days=30, validation_periods=3)
    assert protocol.name == ROLLING and protocol.also == (NEXT_PURCHASE,)
    assert protocol.stats["repeat_customers"] == 200
    assert [period["evaluable_customers"] for period in protocol.stats["periods"]] == [
        200,
        200,
        200,
        200,
    ]
    assert "rolling time split" in protocol.reason


def test_customers_active_in_bursts_get_each_customers_next_purchase() -> None:
    # 400 customers, each active for 3 orders within 20 days, bursts spread over two years: a
    # 30-day period holds about 1/24 of them.
    log = shop_log(400, lambda c: [c * 1.8, c * 1.8 + 7, c * 1.8 + 14])
    protocol = choose_protocol(log, test_days=30, validation_periods=3)
    assert protocol.name == NEXT_PURCHASE and protocol.also == ()
    worst = min(period["coverage"] for period in protocol.stats["periods"])
    assert worst < 0.2 and "too few" in protocol.reason


def test_uneven_periods_get_next_purchase() -> None:
    # Everyone active in the last month, a quarter of them in each of the two months before.
    log = shop_log(
        300, lambda c: [0, 340, 350] + ([310] if c % 4 == 0 else []) + ([280] if c % 4 == 1 else [])
    )
    protocol = choose_protocol(log, test_days=30, validation_periods=2)
    coverages = [period["coverage"] for period in protocol.stats["periods"]]
    assert min(coverages) >= 0.2 and max(coverages) > 3 * min(coverages)
    assert protocol.name == NEXT_PURCHASE and "unevenly" in protocol.reason


def test_constant_or_missing_timestamps_get_random_holdout() -> None:
    log = shop_log(100, lambda c: range(0, 100, 20))
    constant = log.assign(timestamp=ORIGIN)
    assert choose_protocol(constant).name == RANDOM_HOLDOUT
    assert "same timestamp" in choose_protocol(constant).reason
    assert choose_protocol(log.drop(columns="timestamp")).name == RANDOM_HOLDOUT
    assert choose_protocol(log.assign(user_id=pd.NA)).name == RANDOM_HOLDOUT
    # Times exist, but no customer bought twice at different times.
    single = shop_log(100, lambda c: [c])
    assert choose_protocol(single).name == RANDOM_HOLDOUT


def test_next_purchase_split_holds_out_each_customers_last_order_only() -> None:
    log = pd.DataFrame(
        {
            "user_id": ["a", "a", "a", "b", "b", "c"],
            "item_id": ["x", "y", "z", "x", "w", "x"],
            "timestamp": pd.to_datetime(
                ["2024-01-01", "2024-01-05", "2024-01-05", "2024-01-02", "2024-01-09", "2024-01-03"]
            ),
            "order_id": ["a1", "a2", "a2", "b1", "b2", "c1"],
        }
    )
    split = next_purchase_split(log)
    assert split.customers == 2  # c has one order
    assert sorted(zip(split.test["user_id"], split.test["item_id"])) == [
        ("a", "y"),
        ("a", "z"),
        ("b", "w"),
    ]
    assert len(split.train) == 3
    later = next_purchase_split(log, after=pd.Timestamp("2024-01-06"))
    assert list(later.test["user_id"]) == ["b"]


def test_a_share_of_next_purchase_customers_is_held_out_the_same_way_each_run() -> None:
    log = pd.DataFrame(
        {
            "user_id": [f"u{n // 2}" for n in range(400)],
            "item_id": [f"i{n % 9}" for n in range(400)],
            "timestamp": [ORIGIN + pd.Timedelta(days=n % 2) for n in range(400)],
            "order_id": [f"o{n}" for n in range(400)],
        }
    )
    everyone = next_purchase_split(log)
    half = next_purchase_split(log, share=0.5, seed=3)
    assert everyone.customers == 200 and 70 < half.customers < 130
    assert set(half.test.index) < set(
        everyone.test.index
    )  # the same last orders, for fewer customers
    assert len(half.train) + len(half.test) == len(log)
    assert half.test.equals(next_purchase_split(log, share=0.5, seed=3).test)


def test_random_holdout_split_holds_out_customers_with_one_item_hidden() -> None:
    log = pd.DataFrame(
        {
            "user_id": [f"u{n // 3}" for n in range(300)],
            "item_id": [f"i{n % 7}" for n in range(300)],
            "timestamp": ORIGIN,
        }
    )
    split = random_holdout_split(log, test_share=0.2, seed=1)
    assert split.unit == "customers" and len(split.queries) == 20
    held = set(log["user_id"]) - set(split.train["user_id"])
    assert len(held) == 20
    for query, hidden in zip(split.queries, split.hidden):
        assert len(query) == 2 and hidden not in query


def test_decayed_weights_by_hand() -> None:
    log = pd.DataFrame(
        {
            "user_id": ["a", "a", "b"],
            "item_id": ["x", "y", "x"],
            "timestamp": pd.to_datetime(["2024-01-01", "2024-01-11", "2024-01-31"]),
            "order_id": ["1", "2", "3"],
        }
    )
    interactions = build_interactions(log)
    weights = decayed(interactions.purchase_age, 10.0).toarray()
    # Ages relative to the last purchase (Jan 31): a-x 30 days, a-y 20 days, b-x 0 days.
    np.testing.assert_allclose(weights, [[math.exp(-3), math.exp(-2)], [1.0, 0.0]], rtol=1e-6)
    np.testing.assert_array_equal(
        decayed(interactions.purchase_age, 0.0).toarray(), [[1, 1], [1, 0]]
    )


def test_ease_on_weighted_rows_is_the_closed_form_on_those_weights() -> None:
    weighted = sp.csr_matrix(
        np.array([[1.0, 0.5, 0.0], [0.2, 1.0, 1.0], [0.0, 0.3, 1.0]], dtype=np.float32)
    )
    model = EASE(l2=0.5, neighbours=2).fit(weighted)
    gram = weighted.T.toarray() @ weighted.toarray() + 0.5 * np.eye(3)
    inverse = np.linalg.inv(gram)
    expected = -inverse / np.diag(inverse)
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(
        model.neighbour_matrix().toarray(),
        expected * (model.neighbour_matrix().toarray() != 0),
        rtol=1e-4,
    )
    # Support counts rows holding both items, whatever their weights: 0 and 1 share rows 0 and 1,
    # 0 and 2 only row 1.
    support = dict(zip(model.neighbour_ids_[0].tolist(), model.neighbour_support_[0].tolist()))
    assert support == {1: 2, 2: 1}


def rows_for(values: dict[BlendChoice, list[float]]) -> dict[BlendChoice, dict[str, np.ndarray]]:
    return {choice: {"next-purchase": np.asarray(v, dtype=float)} for choice, v in values.items()}


def test_a_blend_within_noise_of_its_part_is_not_shipped() -> None:
    rng = np.random.default_rng(0)
    part = BlendChoice("ease", EASE_PARAMS, 0.0, 0.0, 14.0)
    trending = BlendChoice("ease", EASE_PARAMS, 0.0, 1.0, 14.0, 0.0, 0.0)
    blend = BlendChoice("ease", EASE_PARAMS, 0.0, 0.25, 14.0)
    base = rng.uniform(0, 1, 400)
    noisy_gain = base + rng.normal(0.002, 0.2, 400)  # better on average, by far less than the noise
    choice, rule = simplest_within_noise(
        rows_for({part: base, trending: base * 0.5, blend: noisy_gain})
    )
    assert blend.parts() == [part, trending]
    assert choice == part and "the part ships" in rule
    clear_gain = base + 0.05
    choice, rule = simplest_within_noise(
        rows_for({part: base, trending: base * 0.5, blend: clear_gain})
    )
    assert choice == blend and "beats its best part" in rule


def test_the_primary_protocol_ranks_and_the_other_guards() -> None:
    rng = np.random.default_rng(1)
    base = rng.uniform(0, 1, 2000)
    slow = BlendChoice("ease", EASE_PARAMS, 0.0, 0.0, 14.0, 90.0)
    fast = BlendChoice("ease", EASE_PARAMS, 0.0, 0.0, 14.0, 30.0)
    fastest = BlendChoice("ease", EASE_PARAMS, 0.0, 0.0, 14.0, 14.0)
    noise = lambda scale: rng.normal(0, scale, 2000)  # noqa: E731
    rows = {
        # primary: fastest > fast > slow; secondary: slow best, fast within noise, fastest far below
        slow: {"rolling-time": base, "next-purchase": base},
        fast: {"rolling-time": base + 0.02, "next-purchase": base - 0.001 + noise(0.05)},
        fastest: {"rolling-time": base + 0.04, "next-purchase": base - 0.1 + noise(0.05)},
    }
    choice, rule = simplest_within_noise(rows)
    assert choice == fast and rule == "the best configuration is a single component"
    # With the secondary protocol alone, its own best wins.
    assert (
        simplest_within_noise({c: {"next-purchase": v["next-purchase"]} for c, v in rows.items()})[
            0
        ]
        == slow
    )


def test_labels_and_parts_of_single_components() -> None:
    als_alone = BlendChoice("ease", EASE_PARAMS, 1.0, 0.0, 14.0)
    trending_alone = BlendChoice("ease", EASE_PARAMS, 0.0, 1.0, 7.0, 0.0, 0.0)
    assert als_alone.label() == "ALS alone" and als_alone.parts() == [als_alone]
    assert trending_alone.label() == "trending(7d) alone"
    blend = BlendChoice("ease", EASE_PARAMS, 0.25, 0.5, 7.0, 30.0)
    assert blend.label() == "ease(l2=10.0, decay 30d) x0.75 + ALS x0.25 + trending(7d) x0.5"
    assert blend.parts()[1] == als_alone  # the ALS part ignores the item model's parameters


@pytest.mark.slow
def test_too_few_validation_customers_ship_the_untuned_default(tmp_path: Path) -> None:
    # Bursts of two orders, a third for one customer in ten: the next-purchase validation fold
    # (the order before the last, for half of those with three) evaluates a handful of customers.
    log = shop_log(
        300, lambda c: [c * 2.5, c * 2.5 + 5] + ([c * 2.5 + 9] if c % 10 == 0 else []), seed=5
    )
    log.to_csv(tmp_path / "bursts.csv", index=False)
    config = tiny_config(
        tmp_path / "bursts.csv", tmp_path / "models", evaluate=True, als_factors=4, jobs=1
    )
    version = training.run(config)
    evaluation = json.loads((version / "evaluation.json").read_text())
    assert evaluation["protocol"]["name"] == NEXT_PURCHASE
    assert evaluation["validation"]["rule"].startswith("not tuned: the validation folds evaluate ")
    assert evaluation["validation"]["configurations_measured"] == 0
    shipped = artifacts.load(version).manifest["blend"]
    # Its item-to-item part alone: no blend can be shown to beat its part on so few customers.
    default = model_selection.default_choice(400, config.evaluation_settings)
    assert default.als_weight > 0
    assert (
        shipped["item_model"],
        shipped["item_params"]["l2"],
        shipped["als_weight"],
        shipped["trend_weight"],
    ) == (default.item_model, default.item_params["l2"], 0.0, 0.0)
    assert "item-to-item part ships alone" in evaluation["validation"]["rule"]
    # The test fold still measures it against the baselines, on 300 customers' last orders.
    assert evaluation["protocol"]["customers_evaluated"] == 300
    assert "baseline: implicit cosine K=100" in evaluation["models"]


@pytest.mark.slow
def test_reported_figure_equals_the_one_recomputed_from_saved_predictions(tmp_path: Path) -> None:
    log = tmp_path / "shop.csv"
    write_uniform_log(log)
    version = training.run(
        tiny_config(log, tmp_path / "models", evaluate=True, als_factors=4, jobs=1)
    )
    evaluation = json.loads((version / "evaluation.json").read_text())
    assert evaluation["protocol"]["name"] == ROLLING
    arrays = artifacts.load(version).arrays
    recommended = arrays["evaluation.recommended"]
    indptr, target_items = arrays["evaluation.targets.indptr"], arrays["evaluation.targets.items"]
    n_targets = arrays["evaluation.n_targets"]
    assert recommended.shape == (len(arrays["evaluation.row_ids"]), 20)
    values = []
    for row in range(len(recommended)):
        targets = set(target_items[indptr[row] : indptr[row + 1]].tolist())
        gains = sum(
            1 / math.log2(rank + 2)
            for rank, item in enumerate(recommended[row][:10])
            if item in targets
        )
        ideal = sum(1 / math.log2(rank + 2) for rank in range(min(int(n_targets[row]), 10)))
        values.append(gains / ideal)
    assert evaluation["headline_value"] == pytest.approx(np.mean(values), abs=1e-9)
    low, high = evaluation["headline_ci95"]
    assert low <= evaluation["headline_value"] <= high
    manifest = artifacts.load(version).manifest
    assert manifest["evaluation"]["protocol"]["name"] == ROLLING
    assert manifest["evaluation"]["ci95"] == evaluation["headline_ci95"]
    assert "also" in evaluation and NEXT_PURCHASE in evaluation["also"]
