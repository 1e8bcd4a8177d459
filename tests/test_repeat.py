"""Buy it again: the repeat model by hand, its place in the evaluation, the endpoint, the
repeat-aware personal list, and the reorder reminder (counted at a real SMTP server)."""

from __future__ import annotations

import math
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recommender import training
from recommender.activity import ActivityStore, Event
from recommender.algorithms.repeat import RepeatBuyer, RepeatCells, mixed_cells, mixed_scores
from recommender.config import AlertsConfig, TrainConfig
from recommender.data.matrix import build_interactions
from recommender.model_selection import select_and_evaluate
from recommender.model_selection.repeats import repeat_cells, tifu_knn_scores
from recommender.serving.catalog import Filters
from recommender.serving.repeat import repeat_reason

from helpers import PYTHON, REPEAT_LOG, ROOT, Inbox, make_app, rebuy_log, tiny_config

DAY = 86400.0


# ------------------------------------------------------------------ the model, by hand
def two_customers() -> RepeatCells:
    """Customer 0: item 0 at ages 0, 10, 20 days; item 1 at age 5. Customer 1: item 1 at
    ages 40 and 100."""
    cells = sp.csr_matrix((np.ones(3, dtype=np.float32), [0, 1, 1], [0, 2, 3]), shape=(2, 2))
    return RepeatCells.from_purchases(
        cells, np.array([0, 0, 0, 1, 2, 2]), np.array([0, 10, 20, 5, 40, 100], dtype=np.float32)
    )


def test_repeat_model_by_hand() -> None:
    cells = two_customers()
    assert cells.times.tolist() == [3, 1, 2]
    assert cells.first_age.tolist() == [20, 5, 100] and cells.last_age.tolist() == [0, 5, 40]
    model = RepeatBuyer(decay_days=10, rate_weight=1, due_weight=1, horizon_days=30, min_rebuyers=1)
    model.fit(cells)
    # Cycles: item 0, 20 days over 2 rebuys; item 1, 60 days over 1. Rates: 2/3 and 2/4.
    assert model.cycle_days_.tolist() == pytest.approx([10.0, 60.0])
    assert model.rate_.tolist() == pytest.approx([2 / 3, 0.5])
    assert model.shop_rate_ == pytest.approx(2 / 3)
    frequency_0 = 1 + math.exp(-1) + math.exp(-2)
    # Item 0 is due (its own 10-day interval passes within the horizon); item 1 bought 5 days
    # ago is (5 + 30) / 60 of its cycle along; customer 1's item 1 (own interval 60 days, last
    # 40 days ago) is due.
    expected = [
        frequency_0 * (2 / 3),
        math.exp(-0.5) * 0.5 * (35 / 60),
        (math.exp(-4) + math.exp(-10)) * 0.5,
    ]
    assert model.scores_.data.tolist() == pytest.approx(expected, rel=1e-5)
    assert model.recommend(0)[0].tolist() == [0, 1]
    # Plain P-TopFreq: the number of orders.
    plain = RepeatBuyer(decay_days=0).fit(cells)
    assert plain.scores_.data.tolist() == [3, 1, 2]


def test_purchase_times_are_distinct_orders_per_cell(tmp_path: Path) -> None:
    log = pd.read_csv(pd.io.common.StringIO(REPEAT_LOG), parse_dates=["timestamp"])
    log = pd.concat([log, log.iloc[[0]]])  # a repeated line is not another order
    interactions = build_interactions(log.astype({"user_id": "string", "item_id": "string"}))
    cells = repeat_cells(interactions)
    c1 = interactions.user_ids.index("c1")
    row = slice(interactions.user_items.indptr[c1], interactions.user_items.indptr[c1 + 1])
    items = interactions.item_ids.ids(interactions.user_items.indices[row])
    facts = dict(zip(items, zip(cells.times[row], cells.first_age[row], cells.last_age[row])))
    # The log ends 2024-01-31 09:00: Milk first 30 days, last 9 days before.
    assert facts == {"Bread": (2, 16, 9), "Lamp": (1, 23, 23), "Milk": (4, 30, 9)}


def test_the_mix_on_own_cells_is_the_dense_mix_there() -> None:
    rng = np.random.default_rng(0)
    repeat = sp.random(5, 30, density=0.2, random_state=1, format="csr", dtype=np.float64)
    explore = rng.normal(size=(5, 30))
    dense = mixed_scores(repeat.toarray(), explore, 0.75)
    scale = np.abs(explore).max(axis=1)
    rows = np.repeat(np.arange(5), np.diff(repeat.indptr))
    cells = mixed_cells(repeat, explore[rows, repeat.indices] / scale[rows], 0.75)
    assert np.allclose(cells, dense[rows, repeat.indices])


def test_tifu_knn_reference_by_hand() -> None:
    # c0 bought item 0; c1 items 0 and 1; c2 item 2. c0's nearest customer is c1 (cosine
    # 1/sqrt 2), whose unit vector is (1, 1, 0) / sqrt 2.
    cells = sp.csr_matrix((np.ones(4, dtype=np.float32), [0, 0, 1, 2], [0, 1, 3, 4]), shape=(3, 3))
    repeat = RepeatCells.from_purchases(cells, np.arange(4), np.zeros(4, dtype=np.float32))
    scores = tifu_knn_scores(repeat, np.array([0]), decay_days=0.0, neighbours=1, own=0.5)
    half = 0.5 / math.sqrt(2)
    assert scores[0].tolist() == pytest.approx([0.5 + half, half, 0.0])


def test_reasons_in_words() -> None:
    assert repeat_reason(4, 7.0) == "you buy this every week"
    assert repeat_reason(2, 14.0) == "you buy this every 2 weeks"
    assert repeat_reason(3, 3.0) == "you buy this every 3 days"
    assert repeat_reason(1, 8.75) == "its buyers buy it again every week"
    assert repeat_reason(2, 90.0) == "you buy this every 3 months"
    assert repeat_reason(5, None) == "you bought this 5 times"


# ------------------------------------------------------------------ the evaluation
def settings(**overrides: Any) -> Any:
    return TrainConfig(data=Path("unused"), test_days=28.0, **overrides).evaluation_settings


@pytest.mark.parametrize("staples", [True, False])
def test_the_data_decides_whether_purchases_come_back(staples: bool) -> None:
    selection = select_and_evaluate(rebuy_log(150, staples), settings())
    repeats = selection.evaluation["repeats"]
    models = repeats["models"]
    buy_again = next(name for name in models if name.startswith("buy again"))
    ptopfreq = models["baseline: P-TopFreq (orders holding the item)"]["ndcg"]
    assert {"baseline: popularity", "personal, exclude_purchased=true"} <= set(models)
    assert repeats["protocol"]["targets"].startswith("every item bought")
    assert selection.repeat is not None
    if staples:
        # Each customer's 3 staples are 3 of their 4 items each week (and of about 7 a month).
        assert repeats["protocol"]["rebought_share"] > 0.35
        assert selection.repeat.exclude_purchased == "repeat"
        assert models[buy_again]["ndcg"] >= ptopfreq - 1e-9
        assert models["personal, exclude_purchased=repeat"]["ndcg"] > (
            models["personal, exclude_purchased=true"]["ndcg"] + 0.3
        )
        # Not worse than the customer's own frequency (the interval of the paired difference).
        assert repeats["paired"]["personal, exclude_purchased=repeat"]["ci95"][1] >= 0
    else:
        assert repeats["protocol"]["rebought_share"] == 0
        assert selection.repeat.exclude_purchased == "true"
        assert "purchases stay excluded" in repeats["validation"]["rule"]
    # The headline question is unchanged: items new to the customer.
    assert selection.evaluation["headline"] == "ndcg"
    assert "rebought_share" not in selection.evaluation["protocol"]


# ------------------------------------------------------------------ serving
@pytest.fixture(scope="module")
def repeat_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repeat")
    log = root / "repeat.csv"
    log.write_text(REPEAT_LOG)
    training.run(tiny_config(log, root / "models", min_support=1))
    return root / "models"


@pytest.fixture
def client(repeat_models: Path, tmp_path: Path):
    return make_app(repeat_models, tmp_path / "activity.sqlite3").test_client()


def entries(body: dict) -> dict[str, dict]:
    return {entry["item_id"]: entry for entry in body["recommendations"]}


def test_buy_again_lists_own_items_with_their_facts(client) -> None:
    body = client.get("/v1/users/c1/buy-again?k=10").get_json()
    assert body["strategy"] == "repeat" and body["known_customer"] is True
    # Milk scores 3/4 of the mix at least; Lamp, a quarter of Milk's orders, at most 7/16.
    assert [e["item_id"] for e in body["recommendations"]][0] == "Milk"
    assert set(entries(body)) == {"Milk", "Bread", "Lamp"}
    milk, bread, lamp = (entries(body)[item] for item in ("Milk", "Bread", "Lamp"))
    assert (milk["times_bought"], milk["last_bought"], milk["usually_every_days"]) == (
        4,
        "2024-01-22",
        7.0,
    )
    assert milk["because"] == {"text": "you buy this every week"} and milk["source"] == "repeat"
    assert (bread["times_bought"], bread["usually_every_days"]) == (2, 7.0)
    # Nobody rebought a lamp: no interval to tell.
    assert lamp["times_bought"] == 1 and "usually_every_days" not in lamp
    # c4 bought Milk once: the item's cycle, (21 + 14) / 4 days.
    c4 = entries(client.get("/v1/users/c4/buy-again").get_json())
    assert c4["Milk"]["usually_every_days"] == 8.8
    assert c4["Milk"]["because"]["text"] == "its buyers buy it again every week"


def test_buy_again_applies_the_filters_and_knows_nobody(client) -> None:
    body = client.get("/v1/users/c1/buy-again?max_price=5&k=10").get_json()
    assert set(entries(body)) == {"Milk", "Bread"}
    assert (
        client.get("/v1/users/c1/buy-again?k=1").get_json()["recommendations"][0]["item_id"]
        == "Milk"
    )
    empty = client.get("/v1/users/c1/buy-again?category=toys").get_json()
    assert empty["recommendations"] == [] and empty["fallback_reason"] == "filtered_out"
    nobody = client.get("/v1/users/zz/buy-again").get_json()
    assert nobody["recommendations"] == [] and nobody["fallback_reason"] == "nothing_bought"
    assert client.get("/v1/users/c1/buy-again?k=0").status_code == 400


def test_a_purchase_since_training_counts_at_once(repeat_models: Path, store_location: str) -> None:
    client = make_app(repeat_models, store_location).test_client()
    now = time.time()
    response = client.post(
        "/v1/events",
        json={
            "events": [
                {"user_id": "c1", "item_id": "Lamp", "type": "purchase", "timestamp": now},
                {"user_id": "zz", "item_id": "Jam", "type": "purchase", "timestamp": now},
            ]
        },
    )
    assert response.status_code == 201, response.get_json()
    lamp = entries(client.get("/v1/users/c1/buy-again?k=10").get_json())["Lamp"]
    assert lamp["times_bought"] == 2 and lamp["last_bought"] == time.strftime(
        "%Y-%m-%d", time.gmtime(now)
    )
    newcomer = client.get("/v1/users/zz/buy-again").get_json()
    assert [e["item_id"] for e in newcomer["recommendations"]] == ["Jam"]


def test_buy_again_is_empty_for_an_opted_out_customer(client, tmp_path: Path) -> None:
    ActivityStore(tmp_path / "activity.sqlite3").set_opt_out("c1", True)
    body = client.get("/v1/users/c1/buy-again").get_json()
    assert body["recommendations"] == [] and body["fallback_reason"] == "opted_out"


def test_exclude_purchased_modes(client) -> None:
    # Lamp (rate 1/5) and Jam (1/4) are rebought less often than the shop's pairs (3/10).
    repeat = client.get("/v1/users/c1/recommendations?k=10&exclude_purchased=repeat").get_json()
    assert repeat["exclude_purchased"] == "repeat"
    assert set(entries(repeat)) == {"Milk", "Bread", "Jam"}
    assert entries(repeat)["Milk"]["source"] == "repeat"
    assert entries(repeat)["Milk"]["because"]["text"] == "you buy this every week"
    assert entries(repeat)["Jam"]["source"] != "repeat"
    everything = client.get("/v1/users/c1/recommendations?k=10&exclude_purchased=false")
    assert set(entries(everything.get_json())) == {"Milk", "Bread", "Lamp", "Jam"}
    new_only = client.get("/v1/users/c1/recommendations?k=10&exclude_purchased=true").get_json()
    assert set(entries(new_only)) == {"Jam"} and new_only["exclude_purchased"] == "true"
    # c3 bought Bread once, but Bread is rebought: it may come back; Lamp and Jam may not.
    c3 = client.get("/v1/users/c3/recommendations?k=10&exclude_purchased=repeat").get_json()
    assert set(entries(c3)) == {"Bread", "Milk"}
    # Untuned (no evaluation), the default keeps every purchase out, as before.
    default = client.get("/v1/users/c1/recommendations?k=10").get_json()
    assert default["exclude_purchased"] == "true" and set(entries(default)) == {"Jam"}
    bad = client.get("/v1/users/c1/recommendations?exclude_purchased=sometimes")
    assert bad.status_code == 400
    assert "exclude_purchased" in bad.get_json()["error"]["message"]


def test_a_version_without_a_repeat_model_answers_as_before(repeat_models: Path) -> None:
    # A version written before "buy it again" (or of a log without timestamps) has none.
    from recommender import artifacts
    from recommender.serving.service import RecommendationService

    bundle = artifacts.load_current_bundle(repeat_models)
    bundle.repeat = None
    service = RecommendationService(bundle)
    assert service.buy_again("c1", 5, Filters(), ())["fallback_reason"] == "no_repeat_model"
    picks = service.for_user("c1", 10, exclude_purchased="repeat")
    assert picks["exclude_purchased"] == "repeat"
    assert not {"Milk", "Bread", "Lamp"} & {e["item_id"] for e in picks["recommendations"]}


# ------------------------------------------------------------------ the reminder, by e-mail
def reorder_log(now: float) -> str:
    """r1, r2 (opted out) and r3 (rebought since) buy Coffee every 10 days, last 12 days ago,
    and Tea every 5 days, last 4 days ago; r1 a Lamp once; the log ends 2 days ago."""

    def stamp(days_ago: float) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now - days_ago * DAY))

    lines = ["user_id,item_id,timestamp,quantity,order_id,price,name"]
    for customer in ("r1", "r2", "r3"):
        for days_ago in (32, 22, 12):
            lines.append(f"{customer},Coffee,{stamp(days_ago)},1,{customer}-{days_ago},5.0,Coffee")
        for days_ago in (14, 9, 4):
            lines.append(f"{customer},Tea,{stamp(days_ago)},1,{customer}-t{days_ago},3.0,Tea")
    lines.append(f"r1,Lamp,{stamp(30)},1,r1-lamp,30.0,Lamp")
    lines.append(f"r4,Tea,{stamp(2)},1,r4-1,3.0,Tea")
    return "\n".join(lines) + "\n"


def test_time_to_reorder_reaches_the_customer_who_is_due(tmp_path: Path, smtp_server: Any) -> None:
    now = time.time()
    log = tmp_path / "log.csv"
    log.write_text(reorder_log(now))
    models = tmp_path / "models"
    db = tmp_path / "activity.sqlite3"
    training.run(tiny_config(log, models, min_support=1, activity_db=db))
    store = ActivityStore(db)
    store.create_schema()
    store.add_events([Event("r3", "Coffee", "purchase", now - 3600)], now=now - 3600)
    customers = tmp_path / "customers.csv"
    customers.write_text(
        "id,email,name,opted_out\n"
        "r1,r1@example.com,R One,false\nr2,r2@example.com,R Two,true\n"
        "r3,r3@example.com,R Three,false\nr4,r4@example.com,R Four,false\n"
    )
    inbox = Inbox()
    port = smtp_server(inbox)
    command = [
        PYTHON, "-m", "recommender", "alerts", "--models-dir", str(models),
        "--activity-db", str(db), "--customers-file", str(customers),
        "--rules", "time_to_reorder", "--smtp-host", "127.0.0.1", "--smtp-port", str(port),
    ]  # fmt: skip
    first = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert inbox.recipients() == {"r1@example.com": 1}
    body = inbox.messages[0].get_body(("plain",)).get_content()
    assert "Coffee" in body and "every 10 days" in body and "Tea" not in body
    assert "Lamp" not in body and "running low" in str(inbox.messages[0]["Subject"])
    # Reminded once per purchase: a second run sends nothing new.
    again = subprocess.run(
        [*command, "--cap-days", "0"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 0, again.stderr
    assert len(inbox.messages) == 1
    # Not a default rule: a run without it sends no reminder.
    assert "time_to_reorder" not in AlertsConfig().rules
