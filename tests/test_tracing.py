"""What recommendations earn: signed recommendation ids, attribution of the events that cite
them, impression counts, experiments and their privacy, on real stores and real servers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from itsdangerous import URLSafeTimedSerializer

from recommender import artifacts, training
from recommender.activity import ActivityStore, Event
from recommender.activity.base import Attribution
from recommender.activity.performance import ShopperOutcome
from recommender.errors import ConfigError
from recommender.experiments import analyse, parse
from recommender.serving.tracing import ImpressionCounter, ShownList, Tracer

from helpers import (
    PYTHON,
    ROOT,
    TINY_LOG,
    free_port,
    make_app,
    start_server,
    tiny_config,
)

TOKEN = "t" * 24
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
NOW = 1_750_000_000.0


def shown(items: tuple[str, ...] = ("A", "B", "C")) -> ShownList:
    return ShownList("recommendations", "blend", "v1", "", "", "u1", items)


def flush(app) -> None:
    assert app.extensions["recommender_tracing"].counter.flush()


# ------------------------------------------------------------------ the id itself
def test_an_id_reads_back_and_a_tampered_or_old_one_does_not(monkeypatch) -> None:
    tracer = Tracer("s" * 32, max_age_seconds=7 * 86400)
    token = tracer.issue(shown())
    read = tracer.read(token)
    assert isinstance(read, ShownList) and read.items == ("A", "B", "C")
    assert read.position("B") == 2 and read.position("Z") is None
    accented = tracer.read(tracer.issue(shown(("Café", "日本"))))
    assert isinstance(accented, ShownList) and accented.items == ("Café", "日本")
    assert abs(read.shown_at - time.time()) < 5
    # Another secret, a changed payload, garbage: forged.
    assert Tracer("x" * 32, 86400).read(token) == "forged"
    other = URLSafeTimedSerializer("x" * 32, salt="recommender.recommendation_id")
    payload, signature = token.rsplit(".", 1)
    assert tracer.read(other.dumps([1, "recommendations", "blend", "v1", "", "", "u1", ["Z"]]))
    assert tracer.read(payload + "." + signature[::-1]) == "forged"
    assert tracer.read("not an id") == "forged"
    # Eight days later: expired.
    later = time.time() + 8 * 86400
    monkeypatch.setattr("itsdangerous.timed.time.time", lambda: later)
    assert tracer.read(token) == "expired"


# ------------------------------------------------------------------ the store's part
def test_counts_add_up_and_forget_erases_what_names_a_customer(store_location: str) -> None:
    store = ActivityStore(store_location)
    key = ("2026-12-01", "recommendations", "blend", "v1", "", "")
    store.add_impressions({key: (2, 20)}, {("ab", "ana"): ("b", 2, NOW)})
    store.add_impressions(
        {key: (1, 10)}, {("ab", "ana"): ("b", 1, NOW), ("ab", "ben"): ("a", 1, NOW)}
    )
    attribution = Attribution(
        "ana",
        "ana",
        "A",
        "purchase",
        NOW,
        "recommendations",
        "blend",
        "v1",
        "ab",
        "b",
        1,
        NOW,
        2,
        7.0,
    )
    store.add_events(
        [Event("ana", "A", "purchase", NOW)],
        now=NOW,
        attributions=[attribution],
        unattributed={("2026-12-01", "forged", "view"): 2},
    )
    store.add_events([], now=NOW, unattributed={("2026-12-01", "forged", "view"): 1})
    daily = store.daily_performance("2000-01-01")
    assert daily["impressions"] == [("2026-12-01", "recommendations", "v1", 3, 30)]
    assert daily["unattributed"] == [("2026-12-01", "forged", "view", 3)]
    assert daily["attributed"][0][3:] == ("purchase", 1, 7.0)
    assert store.experiment_outcomes("ab") == [
        ShopperOutcome("a", 1, 0, 0, 0, 0.0),
        ShopperOutcome("b", 3, 0, 0, 1, 7.0),
    ]
    erased = store.forget("ana", now=NOW)
    assert erased["attributed_events_erased"] == 1
    assert store.experiment_outcomes("ab") == [ShopperOutcome("a", 1, 0, 0, 0, 0.0)]
    # The counters hold no ids and stay; a forgotten shopper's exposure is not stored again.
    assert store.daily_performance("2000-01-01")["impressions"][0][3] == 3
    store.add_impressions({}, {("ab", "ana"): ("b", 1, NOW)})
    assert [o.variant for o in store.experiment_outcomes("ab")] == ["a"]
    assert store.shared_secret("trace", "one") == store.shared_secret("trace", "two") == "one"
    store.close()


def test_the_counter_keeps_what_it_could_not_write(tmp_path: Path) -> None:
    written: list[dict] = []
    failing = [True]

    def write(counts, exposures) -> None:
        if failing[0]:
            raise OSError("store away")
        written.append(counts)

    counter = ImpressionCounter(write, interval=3600)
    key = ("2026-12-01", "recommendations", "blend", "v1", "", "")
    counter.add(key, 10)
    counter.add(key, 5, ("ab", "b", "ana"))
    assert not counter.flush() and counter.pending() == 2
    counter.add(key, 1)
    failing[0] = False
    assert counter.flush() and counter.pending() == 0
    assert written == [{key: (3, 16)}]
    counter.close()


# ------------------------------------------------------------------ over the API
@pytest.fixture
def world(shared_models: Path, activity_db: Path):
    app = make_app(
        shared_models, activity_db, admin_token=TOKEN, customers_file=_customers(activity_db)
    )
    return app, app.test_client()


def _customers(activity_db: Path) -> Path:
    path = activity_db.parent.parent / "customers.csv"
    path.write_text("id,name,opted_out\nu5,Eve,true\n")
    return path


def _revenue(client, name: str) -> dict[str, float]:
    body = client.get(f"/v1/admin/experiments/{name}/results", headers=ADMIN).get_json()
    return {variant["name"]: variant["revenue"] for variant in body["variants"]}


def test_a_cited_purchase_adds_exactly_its_price_times_quantity(world) -> None:
    app, client = world
    assert (
        client.put(
            "/v1/admin/experiments/ab",
            json={"variants": [{"name": "a"}, {"name": "b"}]},
            headers=ADMIN,
        ).status_code
        == 201
    )
    listed = client.get("/v1/users/u1/recommendations?k=3").get_json()
    variant = listed["experiment"]["variant"]
    first, second = (entry["item_id"] for entry in listed["recommendations"][:2])
    rid = listed["recommendation_id"]
    prices = {entry["item_id"]: entry["price"] for entry in listed["recommendations"]}
    events = [
        {"user_id": "u1", "item_id": first, "type": "view", "recommendation_id": rid},
        {
            "user_id": "u1",
            "item_id": first,
            "type": "purchase",
            "recommendation_id": rid,
            "quantity": 3,
            "price": 2.5,
        },
        # Without a price, the catalog's.
        {"user_id": "u1", "item_id": second, "type": "purchase", "recommendation_id": rid},
        # Not shown by that list, a forged id, no id: stored, not attributed.
        {"user_id": "u1", "item_id": "NOPE", "type": "purchase", "recommendation_id": rid},
        {
            "user_id": "u1",
            "item_id": first,
            "type": "purchase",
            "recommendation_id": rid[:-3] + "abc",
        },
        {"user_id": "u1", "item_id": first, "type": "purchase"},
    ]
    answer = client.post("/v1/events", json={"events": events})
    assert answer.status_code == 201
    assert answer.get_json() == {"stored": 6, "attributed": 3, "not_attributed": 2}
    flush(app)
    assert _revenue(client, "ab")[variant] == pytest.approx(3 * 2.5 + prices[second])
    performance = client.get("/v1/admin/performance", headers=ADMIN).get_json()
    assert performance["not_attributed"] == {"not_shown": 1, "forged": 1}
    assert performance["totals"]["impressions"] == 1 and performance["totals"]["clicks"] == 1
    data = client.get("/v1/users/u1/data", headers=ADMIN).get_json()
    assert (
        data["experiments"][0]["experiment"] == "ab"
        and data["experiments"][0]["variant"] == variant
    )
    assert [(e["item_id"], e["position"]) for e in data["attributed_events"]] == [
        (first, 1),
        (first, 1),
        (second, 2),
    ]
    # Forget erases them; the variant's revenue goes with them.
    client.delete("/v1/users/u1", headers=ADMIN)
    assert _revenue(client, "ab")[variant] == 0
    data = client.get("/v1/users/u1/data", headers=ADMIN).get_json()
    assert data["attributed_events"] == [] and data["experiments"] == []


def test_bad_citations_are_400s_naming_the_field(world) -> None:
    _, client = world
    for event, field in (
        ({"recommendation_id": 5}, "recommendation_id"),
        ({"recommendation_id": "x", "quantity": 0}, "quantity"),
        ({"recommendation_id": "x", "price": -1}, "price"),
        ({"price": 3}, "price"),
    ):
        answer = client.post(
            "/v1/events", json=[{"user_id": "u1", "item_id": "A", "type": "purchase", **event}]
        )
        assert answer.status_code == 400, event
        assert answer.get_json()["error"]["details"][0]["message"].startswith(field), event


def test_experiments_split_shoppers_and_stop(world, tmp_path: Path) -> None:
    app, client = world
    put = lambda body: client.put("/v1/admin/experiments/hold", json=body, headers=ADMIN)  # noqa: E731
    # Bad definitions name the field.
    for body, field in (
        ({"variants": [{"name": "a"}]}, "variants"),
        ({"variants": [{"name": "a"}, {"name": "a"}]}, "variants"),
        (
            {"variants": [{"name": "a"}, {"name": "b", "strategy": "random"}]},
            "variants[1].strategy",
        ),
        (
            {"variants": [{"name": "a"}, {"name": "b", "model_version": "nope"}]},
            "variants[1].model_version",
        ),
        ({"variants": [{"name": "a"}, {"name": "b"}], "control": "c"}, "control"),
        ({"variants": [{"name": "a"}, {"name": "b"}], "metric": "x"}, "metric"),
    ):
        answer = put(body)
        assert answer.status_code == 400 and answer.get_json()["error"]["message"].startswith(field)
    body = {
        "variants": [
            {"name": "model", "weight": 1},
            {"name": "holdout", "weight": 1, "strategy": "popular"},
        ],
        "endpoints": ["recommendations", "also-bought"],
    }
    assert put(body).status_code == 201 and put(body).status_code == 200
    # Another definition under the same name: refused (recorded variants would be wrong).
    changed = put({**body, "variants": [{"name": "model", "weight": 3}, body["variants"][1]]})
    assert changed.status_code == 409 and changed.get_json()["error"]["code"] == "experiment_exists"
    overlapping = client.put(
        "/v1/admin/experiments/other",
        json={"variants": [{"name": "a"}, {"name": "b"}], "endpoints": ["also-bought"]},
        headers=ADMIN,
    )
    assert overlapping.status_code == 409
    experiment = parse("hold", body)
    seen = {}
    for user in ("u1", "u2", "u3", "u4"):
        listed = client.get(f"/v1/users/{user}/recommendations?k=3").get_json()
        expected = experiment.assign(user).name
        assert listed["experiment"] == {"name": "hold", "variant": expected}
        assert (listed["strategy"] == "popular") == (expected == "holdout")
        seen[user] = expected
    # A second server on the same store assigns alike.
    twin = make_app(
        app.extensions["recommender_config"].models_dir,
        app.extensions["recommender_config"].activity_db,
        admin_token=TOKEN,
    )
    for user, variant in seen.items():
        listed = twin.test_client().get(f"/v1/users/{user}/recommendations?k=3").get_json()
        assert listed["experiment"]["variant"] == variant
    # Item pages take part with a shopper id, and not without one.
    page = client.get("/v1/items/A/also-bought?shopper_id=u1").get_json()
    assert page["experiment"]["variant"] == seen["u1"]
    assert "experiment" not in client.get("/v1/items/A/also-bought").get_json()
    # Not covered: page-you-made.
    assert "experiment" not in client.get("/v1/users/u1/page-you-made").get_json()
    # An opted-out customer gets the non-personal control, never a variant.
    opted = client.get("/v1/users/u5/recommendations?k=3").get_json()
    assert opted["fallback_reason"] == "opted_out" and "experiment" not in opted
    assert "experiment" not in client.get("/v1/items/A/also-bought?shopper_id=u5").get_json()
    flush(app)
    results = client.get("/v1/admin/experiments/hold/results", headers=ADMIN).get_json()
    assert sum(v["shoppers"] for v in results["variants"]) == 4
    assert client.post("/v1/admin/experiments/hold/stop", headers=ADMIN).status_code == 200
    assert client.post("/v1/admin/experiments/hold/stop", headers=ADMIN).status_code == 200
    assert client.post("/v1/admin/experiments/nope/stop", headers=ADMIN).status_code == 404
    for user in seen:
        listed = client.get(f"/v1/users/{user}/recommendations?k=3").get_json()
        assert "experiment" not in listed and listed["strategy"] != "popular"
    listed = client.get("/v1/admin/experiments", headers=ADMIN).get_json()["experiments"]
    assert [(e["name"], e["status"]) for e in listed] == [("hold", "stopped")]


def test_a_variant_serves_another_model_version(trained_models: Path, tmp_path: Path) -> None:
    older = artifacts.current_version(trained_models)
    log = tmp_path / "tiny.csv"
    log.write_text(TINY_LOG + "u6,A,2024-01-07T10:00:00,1,o7,2.00,Apple\n")
    training.run(tiny_config(log, trained_models))
    newer = artifacts.current_version(trained_models)
    assert newer != older
    app = make_app(trained_models, tmp_path / "a.sqlite3", admin_token=TOKEN)
    client = app.test_client()
    definition = {"variants": [{"name": "current"}, {"name": "older", "model_version": older}]}
    answer = client.put("/v1/admin/experiments/versions", json=definition, headers=ADMIN)
    assert answer.status_code == 201
    experiment = parse("versions", definition)
    versions = {}
    for user in ("u1", "u2", "u3", "u4", "u5", "x1", "x2", "x3"):
        listed = client.get(f"/v1/users/{user}/recommendations?k=3").get_json()
        versions[experiment.assign(user).name] = listed["model_version"]
    assert versions == {"current": newer, "older": older}
    # Pruning keeps the version while the experiment serves it, and not after.
    assert artifacts.prune(trained_models, keep_versions=1) == []
    client.post("/v1/admin/experiments/versions/stop", headers=ADMIN)
    assert artifacts.prune(trained_models, keep_versions=1) == [older]


def test_results_statistics_on_known_data() -> None:
    experiment = parse("t", {"variants": [{"name": "a"}, {"name": "b"}], "metric": "conversion"})
    rng = np.random.default_rng(3)
    outcomes = []
    for variant, rate in (("a", 0.5), ("b", 0.5)):
        for _ in range(1000):
            bought = int(rng.random() < rate)
            outcomes.append(ShopperOutcome(variant, 2, bought, 0, bought, 10.0 * bought))
    report = analyse(experiment, outcomes)
    by_name = {v["name"]: v for v in report["variants"]}
    for name in "ab":
        buyers = sum(o.purchases for o in outcomes if o.variant == name)
        assert by_name[name]["conversion"]["value"] == pytest.approx(buyers / 1000)
        assert by_name[name]["ctr"]["value"] == pytest.approx(buyers / 2000)
        low, high = by_name[name]["conversion"]["interval"]
        # The normal interval of a proportion, by hand: about +-1.96 sqrt(p(1-p)/n).
        assert high - low == pytest.approx(2 * 1.96 * (0.25 / 1000) ** 0.5, rel=0.15)
    difference = report["comparisons"][0]["metrics"]["conversion"]
    assert difference["difference"] == pytest.approx(
        by_name["b"]["conversion"]["value"] - by_name["a"]["conversion"]["value"]
    )
    assert difference["interval"][0] < difference["difference"] < difference["interval"][1]
    # 2 (1.96 + 0.84)^2 p(1-p) / (lift p)^2 with p = 0.5, lift 5%: about 6,280 per variant.
    assert report["shoppers_needed"]["per_variant"] == pytest.approx(6280, rel=0.12)
    # The same shoppers in both: nothing to find.
    same = [
        ShopperOutcome("b", o.lists, o.clicks, 0, o.purchases, o.revenue) for o in outcomes[:1000]
    ]
    alike = analyse(experiment, outcomes[:1000] + same)["comparisons"][0]
    assert alike["metrics"]["conversion"]["p_value"] == 1.0
    assert alike["verdict"] == "no significant difference"


def test_the_command_line_reports_what_the_endpoint_does(world, activity_db: Path) -> None:
    app, client = world
    client.put(
        "/v1/admin/experiments/ab",
        json={"variants": [{"name": "a"}, {"name": "b", "strategy": "popular"}]},
        headers=ADMIN,
    )
    for user in ("u1", "u2", "u3", "u4"):
        listed = client.get(f"/v1/users/{user}/recommendations?k=2").get_json()
        first = listed["recommendations"][0]["item_id"]
        client.post(
            "/v1/events",
            json=[
                {
                    "user_id": user,
                    "item_id": first,
                    "type": "view",
                    "recommendation_id": listed["recommendation_id"],
                }
            ],
        )
    flush(app)
    endpoint = client.get("/v1/admin/experiments/ab/results", headers=ADMIN).get_json()

    def command(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [PYTHON, "-m", "recommender", "experiments", *args, "--activity-db", str(activity_db)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=120,
        )

    printed = command("report", "ab", "--json")
    assert printed.returncode == 0 and json.loads(printed.stdout) == endpoint
    text = command("report", "ab").stdout
    assert "a (current model)" in text and "b (popular)" in text and "b against a:" in text
    assert command("list").stdout == "ab\trunning\n"
    missing = command("report", "zz")
    assert missing.returncode == 2 and missing.stderr.startswith("error: name: no experiment 'zz'")
    assert command("report", "ab", "--lift", "x").returncode == 2


def test_the_dashboard_says_what_is_missing_before_any_traffic(world) -> None:
    _, client = world
    body = client.get("/v1/admin/performance", headers=ADMIN).get_json()
    assert body["days"] == [] and body["totals"]["impressions"] == 0
    assert any("no recommendations shown yet" in line for line in body["missing"])
    svg = client.get("/v1/admin/performance/plots.svg", headers=ADMIN)
    assert svg.status_code == 200 and svg.mimetype == "image/svg+xml"
    assert b"no traffic yet" in svg.data
    assert client.get("/v1/admin/performance").status_code == 401


# ------------------------------------------------------------------ real servers
def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def _send(url: str, body: object, method: str = "POST", headers: dict | None = None) -> dict:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
        method=method,
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_over_http_a_cited_purchase_earns_its_variant_exactly(
    shared_models: Path, tmp_path: Path
) -> None:
    customers = tmp_path / "customers.csv"
    customers.write_text("id,name,opted_out\nu5,Eve,true\n")
    port = free_port()
    server = start_server(
        shared_models,
        tmp_path / "activity.sqlite3",
        port,
        "--admin-token",
        TOKEN,
        "--customers-file",
        str(customers),
        "--impressions-flush-seconds",
        "0.2",
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _send(
            f"{base}/v1/admin/experiments/ab",
            {"variants": [{"name": "model"}, {"name": "popular", "strategy": "popular"}]},
            method="PUT",
            headers=ADMIN,
        )
        time.sleep(2.5)  # the other worker rereads the experiments
        listed = _get(f"{base}/v1/users/u2/recommendations?k=3")
        variant, rid = listed["experiment"]["variant"], listed["recommendation_id"]
        item = listed["recommendations"][0]["item_id"]
        before = _revenue_over_http(base)
        _send(
            f"{base}/v1/events",
            [
                {
                    "user_id": "u2",
                    "item_id": item,
                    "type": "purchase",
                    "recommendation_id": rid,
                    "quantity": 2,
                    "price": 4.25,
                },
                {
                    "user_id": "u2",
                    "item_id": item,
                    "type": "purchase",
                    "recommendation_id": "forged.x.y",
                    "quantity": 2,
                    "price": 4.25,
                },
                {
                    "user_id": "u2",
                    "item_id": "NOT-SHOWN",
                    "type": "purchase",
                    "recommendation_id": rid,
                    "quantity": 2,
                    "price": 4.25,
                },
            ],
        )
        time.sleep(0.6)
        after = _revenue_over_http(base)
        assert after[variant] - before[variant] == pytest.approx(8.5)
        assert sum(after.values()) - sum(before.values()) == pytest.approx(8.5)
        opted = _get(f"{base}/v1/users/u5/recommendations?k=3")
        assert opted["fallback_reason"] == "opted_out" and "experiment" not in opted
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


def _revenue_over_http(base: str) -> dict[str, float]:
    request = urllib.request.Request(f"{base}/v1/admin/experiments/ab/results", headers=ADMIN)
    with urllib.request.urlopen(request, timeout=30) as response:
        body = json.loads(response.read())
    return {variant["name"]: variant["revenue"] for variant in body["variants"]}


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["SIGTERM", "SIGKILL"])
def test_what_a_stopped_or_killed_server_loses_of_its_impressions(
    shared_models: Path, tmp_path: Path, stop: str
) -> None:
    """Counted in the worker, written every impressions_flush_seconds (here 4 s) and at
    exit: a SIGTERM loses nothing; a SIGKILL loses what was counted since the last write,
    and nothing written before."""
    port, activity = free_port(), tmp_path / "activity.sqlite3"
    server = start_server(
        shared_models, activity, port, "--impressions-flush-seconds", "4", workers=1
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(5):
        _get(f"{base}/v1/items/A/also-bought?k=2")
    time.sleep(5)  # one write (at 4 s), the next at 8 s
    store = ActivityStore(activity)
    written = sum(row[3] for row in store.daily_performance("2000-01-01")["impressions"])
    assert written == 5
    for _ in range(7):
        _get(f"{base}/v1/items/A/also-bought?k=2")
    os.killpg(server.pid, getattr(signal, stop))
    server.wait(timeout=30)
    total = sum(row[3] for row in store.daily_performance("2000-01-01")["impressions"])
    assert total == (12 if stop == "SIGTERM" else 5)
    store.close()


def test_the_config_files_experiments_start_once_and_bad_ones_stop_the_start(
    shared_models: Path, activity_db: Path
) -> None:
    definitions = {
        "holdout": {"variants": [{"name": "model"}, {"name": "popular", "strategy": "popular"}]}
    }
    app = make_app(shared_models, activity_db, admin_token=TOKEN, experiments=definitions)
    client = app.test_client()
    listed = client.get("/v1/users/u1/recommendations?k=2").get_json()
    assert listed["experiment"]["name"] == "holdout"
    client.post("/v1/admin/experiments/holdout/stop", headers=ADMIN)
    # A restart with the same file: a stopped experiment stays stopped.
    again = make_app(shared_models, activity_db, admin_token=TOKEN, experiments=definitions)
    assert "experiment" not in again.test_client().get("/v1/users/u1/recommendations").get_json()
    # One that overlaps a running experiment, or serves a version that is not there: refused.
    client.put(
        "/v1/admin/experiments/running",
        json={"variants": [{"name": "a"}, {"name": "b"}]},
        headers=ADMIN,
    )
    for name, definition, message in (
        ("clash", {"variants": [{"name": "a"}, {"name": "b"}]}, "experiment running already runs"),
        (
            "ghost",
            {
                "variants": [
                    {"name": "a"},
                    {"name": "b", "model_version": "20200101T000000.000000Z"},
                ],
                "endpoints": ["buy-again"],
            },
            "cannot be loaded",
        ),
    ):
        with pytest.raises(ConfigError, match=rf"\[experiments.{name}\]: .*{message.split()[-1]}"):
            make_app(shared_models, activity_db, experiments={name: definition})
    # Tracing off: the variant is still named; nothing is signed or counted.
    quiet = make_app(shared_models, activity_db, tracing=False)
    body = quiet.test_client().get("/v1/users/u1/recommendations?k=2").get_json()
    assert body["experiment"]["name"] == "running" and "recommendation_id" not in body
