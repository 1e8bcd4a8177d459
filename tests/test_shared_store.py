"""Several servers, one shop: the activity store on a real PostgreSQL server.

Two apps (Flask's test client) or two server processes (gunicorn) on one database are two
hosts behind a load balancer: a wish list, a view, a forget or an opt-out made through one
holds on the other at once; with the database stopped, item pages and personal picks keep
answering and writes get a JSON 503; the nightly job and the alerts run take the store's
lock; purchases recorded through both servers join the next training.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from recommender import artifacts
from recommender.activity import ActivityStore
from recommender.serving.service import RecommendationService

from helpers import (
    PG_PASSWORD,
    PYTHON,
    ROOT,
    free_port,
    make_app,
    start_server,
    write_log,
)

TOKEN = "a-long-enough-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_two_servers_share_wish_lists_activity_and_privacy(
    shared_models: Path, pg_url: str
) -> None:
    one = make_app(shared_models, pg_url, admin_token=TOKEN).test_client()
    two = make_app(shared_models, pg_url, admin_token=TOKEN).test_client()
    assert one.put("/v1/users/u1/wishlist/D").status_code == 201
    assert [e["item_id"] for e in two.get("/v1/users/u1/wishlist").get_json()["items"]] == ["D"]
    assert (
        two.put("/v1/users/u1/wishlist/D").status_code == 200
    )  # already there, whichever server asks
    # A view recorded through one shapes the page-you-made of the other.
    assert (
        one.post(
            "/v1/events", json={"events": [{"user_id": "u9", "item_id": "C", "type": "view"}]}
        ).status_code
        == 201
    )
    page = two.get("/v1/users/u9/page-you-made?k=3").get_json()
    assert page["groups"][0]["because"]["item_id"] == "C" and "activity" not in page
    # Forgotten through one: the other answers without anything personal, at once.
    assert two.get("/v1/users/u1/recommendations").get_json()["strategy"] != "popular"
    assert one.delete("/v1/users/u1", headers=AUTH).status_code == 200
    answer = two.get("/v1/users/u1/recommendations").get_json()
    assert answer["strategy"] == "popular" and answer["fallback_reason"] == "forgotten"
    assert two.get("/v1/users/u1/wishlist").get_json()["items"] == []
    assert two.put("/v1/users/u1/wishlist/A").status_code == 409
    # Opted out through the other: the first one honours it.
    assert two.put("/v1/users/u2/opt-out", headers=AUTH).status_code == 200
    assert one.get("/v1/users/u2/recommendations").get_json()["fallback_reason"] == "opted_out"


def test_with_the_database_away_pages_answer_and_writes_get_a_503(
    shared_models: Path, pg_url: str, postgres_cluster: Any
) -> None:
    client = make_app(shared_models, pg_url).test_client()
    assert (
        client.post(
            "/v1/events", json={"events": [{"user_id": "u1", "item_id": "D", "type": "view"}]}
        ).status_code
        == 201
    )
    postgres_cluster.stop()
    try:
        assert client.get("/v1/items/A/also-bought").status_code == 200
        picks = client.get("/v1/users/u1/recommendations")
        assert picks.status_code == 200 and picks.get_json()["activity"] == "unavailable"
        assert picks.get_json()["recommendations"]
        page = client.get("/v1/users/u1/page-you-made")
        assert page.status_code == 200 and page.get_json()["activity"] == "unavailable"
        refused = client.post(
            "/v1/events", json={"events": [{"user_id": "u1", "item_id": "A", "type": "view"}]}
        )
        assert (
            refused.status_code == 503
            and refused.get_json()["error"]["code"] == "store_unavailable"
        )
        assert refused.headers["Retry-After"] == "1"
        assert client.put("/v1/users/u1/wishlist/A").status_code == 503
        metrics = client.get("/metrics").get_data(as_text=True)
        assert "recommender_activity_store_up 0.0" in metrics
    finally:
        postgres_cluster.start()
    deadline = time.monotonic() + 10
    while (
        status := client.post(
            "/v1/events", json={"events": [{"user_id": "u1", "item_id": "A", "type": "view"}]}
        ).status_code
    ) != 201:
        assert status == 503 and time.monotonic() < deadline, "the server did not reconnect"
        time.sleep(0.2)
    assert "recommender_activity_store_up 1.0" in client.get("/metrics").get_data(as_text=True)
    picks = client.get("/v1/users/u1/recommendations").get_json()
    assert "activity" not in picks
    store = ActivityStore(pg_url)
    try:
        events = store.everything_about("u1")["events"]  # type: ignore[index]
        assert [e["item_id"] for e in events] == ["D", "A"]
    finally:
        store.close()


def test_jobs_take_the_stores_lock_and_an_unreachable_store_fails_training_cleanly(
    shared_models: Path, pg_url: str, tmp_path: Path
) -> None:
    """Cron fires on every host: while one nightly (or alerts) run holds the store's lock, the
    others exit 75. Training against an unreachable store exits 2 with one line and leaves
    the serving model alone."""
    log = tmp_path / "tribes.csv"
    write_log(log)
    holder = ActivityStore(pg_url)
    with holder.run_lock("nightly"):
        nightly = subprocess.run(
            [
                PYTHON,
                "-m",
                "recommender",
                "nightly",
                "--data",
                str(log),
                "--models-dir",
                str(tmp_path / "models"),
                "--include-activity",
                pg_url,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert nightly.returncode == 75, nightly.stderr
    assert "another nightly run" in nightly.stderr and "test-secret" not in nightly.stderr
    with holder.run_lock("alerts"):
        alerts = subprocess.run(
            [
                PYTHON,
                "-m",
                "recommender",
                "alerts",
                "--models-dir",
                str(shared_models),
                "--activity-db",
                pg_url,
                "--out",
                str(tmp_path / "alerts.csv"),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert alerts.returncode == 75, alerts.stderr
    holder.close()
    models = tmp_path / "served"
    subprocess.run(
        [
            PYTHON,
            "train.py",
            "--data",
            str(log),
            "--models-dir",
            str(models),
            "--no-evaluate",
            "--min-support",
            "2",
            "--activity-db",
            str(tmp_path / "a.sqlite3"),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    serving = artifacts.current_version(models)
    away = f"postgresql://shop:pw@127.0.0.1:{free_port()}/shop"
    failed = subprocess.run(
        [
            PYTHON,
            "train.py",
            "--data",
            str(log),
            "--models-dir",
            str(models),
            "--no-evaluate",
            "--include-activity",
            away,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert failed.returncode == 2, failed.stderr
    last = failed.stderr.strip().splitlines()[-1]
    assert (
        last.startswith("error: include_activity:")
        and "unreachable" in last
        and ":pw@" not in failed.stderr
    )
    assert "Traceback" not in failed.stderr and artifacts.current_version(models) == serving


# ------------------------------------------------------------------ two server processes
def _serve(models: Path, url: str, port: int, password: str | None = None) -> subprocess.Popen:
    """A server process; with ``password``, the URL has none and the environment gives it."""
    environment = {**os.environ, "RECO_ACTIVITY_DB_PASSWORD": password} if password else None
    if password:
        url = url.replace(f":{password}@", "@")
    return start_server(
        models,
        url,
        port,
        "--admin-token",
        TOKEN,
        "--reload-interval",
        "0.5",
        workers=1,
        env=environment,
    )


def _call(url: str, method: str = "GET", body: Any = None) -> tuple[int, dict]:
    request = urllib.request.Request(
        url,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **AUTH},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def _train(log: Path, models: Path, url: str) -> dict:
    done = subprocess.run(
        [
            PYTHON,
            "train.py",
            "--data",
            str(log),
            "--models-dir",
            str(models),
            "--no-evaluate",
            "--min-support",
            "2",
            "--min-pair-support",
            "1",
            "--activity-db",
            url,
            "--include-activity",
            url,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return artifacts.read_manifest(models, artifacts.current_version(models))


@pytest.mark.slow
def test_two_server_processes_on_one_database_and_one_models_directory(
    tmp_path: Path, pg_url: str
) -> None:
    log, models = tmp_path / "tribes.csv", tmp_path / "models"
    write_log(log)
    before = _train(log, models, pg_url)
    ports = [free_port(), free_port()]
    servers = [
        _serve(models, pg_url, ports[0], password=PG_PASSWORD),
        _serve(models, pg_url, ports[1]),
    ]
    one, two = (f"http://127.0.0.1:{port}" for port in ports)
    try:
        assert _call(f"{one}/v1/users/g1/wishlist/K4", "PUT")[0] == 201
        assert [e["item_id"] for e in _call(f"{two}/v1/users/g1/wishlist")[1]["items"]] == ["K4"]
        # Purchases through both servers; g2 is then forgotten through the second.
        bought = [
            ("one", "n1", "G1"),
            ("one", "n1", "G2"),
            ("two", "n2", "K1"),
            ("two", "g2", "K1"),
        ]
        for server, user, item in bought:
            status, _ = _call(
                f"{one if server == 'one' else two}/v1/events",
                "POST",
                {"events": [{"user_id": user, "item_id": item, "type": "purchase"}]},
            )
            assert status == 201
        assert "fallback_reason" not in _call(f"{one}/v1/users/g2/recommendations")[1]
        assert _call(f"{two}/v1/users/g2", "DELETE")[0] == 200
        assert _call(f"{one}/v1/users/g2/recommendations")[1]["fallback_reason"] == "forgotten"

        # A promotion under load: both servers switch by themselves, no request fails.
        statuses: list[int] = []
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                for base in (one, two):
                    statuses.append(_call(f"{base}/v1/items/G1/also-bought?k=3")[0])

        threads = [threading.Thread(target=load) for _ in range(2)]
        for thread in threads:
            thread.start()
        try:
            after = _train(log, models, pg_url)
            version = artifacts.current_version(models)
            deadline = time.monotonic() + 30
            while {_call(f"{base}/ready")[1].get("model_version") for base in (one, two)} != {
                version
            }:
                assert time.monotonic() < deadline, "a server kept the old version"
                time.sleep(0.2)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        assert statuses and set(statuses) == {200}, (
            f"{len(statuses)} requests, statuses {set(statuses)}"
        )
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=30)
    # The recorded purchases joined the log (g2's erased with them); g2's own log lines are dropped.
    grown = after["cleaning"]["rows_read"] - before["cleaning"]["rows_read"]
    assert grown == 3, after["cleaning"]
    assert after["data"]["signature"]["activity_purchases"] == 3
    assert "test-secret" not in json.dumps(after)
    customers = set(
        RecommendationService(artifacts.load_current_bundle(models)).users.ids_.tolist()
    )
    assert {"n1", "n2"} <= customers and "g2" not in customers
