"""Train on a slice of the shipped log in a subprocess, serve it with gunicorn, query it over HTTP."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

from helpers import PYTHON, ROOT, SHIPPED_LOG, free_port, serve_command, wait_until_ready

pytestmark = pytest.mark.slow


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_train_then_serve_also_bought(tmp_path: Path) -> None:
    # December 2010 of the shipped log, as CSV (the other input path), messy lines included.
    log = pd.read_parquet(SHIPPED_LOG)
    log[log["InvoiceDate"] < "2011-01-01"].to_csv(tmp_path / "december.csv", index=False)
    models = tmp_path / "models"
    trained = subprocess.run(
        [PYTHON, "train.py", "--data", str(tmp_path / "december.csv"), "--models-dir", str(models)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert trained.returncode == 0, trained.stderr
    manifest = json.loads((models / "current" / "manifest.json").read_text())
    cleaning = manifest["cleaning"]
    assert (
        cleaning["dropped"]["return_or_cancellation"] > 0 and cleaning["dropped"]["duplicate"] > 0
    )
    assert cleaning["rows_read"] == cleaning["rows_kept"] + sum(
        cleaning["rejected"].values()
    ) + sum(cleaning["dropped"].values())

    port = free_port()
    activity_db = tmp_path / "activity.sqlite3"
    server = subprocess.Popen(
        serve_command(models, activity_db, port, "--request-log", "-"),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_ready(base, server)
        status, body = get(base + "/v1/items/85123A/also-bought?k=10")
        assert status == 200
        assert body["item"]["name"] == "WHITE HANGING HEART T-LIGHT HOLDER"
        assert body["strategy"] == "item-knn"
        recommendations = body["recommendations"]
        assert len(recommendations) == 10
        assert all(r["name"] and r["item_id"] != "85123A" for r in recommendations)
        assert recommendations[0]["source"] == "item-knn" and recommendations[0]["bought_both"] >= 2
        scores = [r["score"] for r in recommendations if r["source"] == "item-knn"]
        assert scores == sorted(scores, reverse=True)
        assert get(base + "/v1/items/85123A/bought-together?k=3")[1]["basis"] == "orders"
        assert get(base + "/v1/items/85123A/also-bought?k=0")[0] == 400
        assert get(base + "/v1/model")[1]["version"] == (models / "current").readlink().name

        # Personal picks for a customer of the slice, and events from many clients at once,
        # spread over both gunicorn workers: every acknowledged event is in the database.
        customer = str(int(log[log["InvoiceDate"] < "2011-01-01"]["CustomerID"].dropna().iloc[0]))
        status, body = get(f"{base}/v1/users/{customer}/recommendations?k=5")
        # One month evaluates too few customers to tune: the default's item part ships alone.
        blend = manifest["blend"]
        assert (blend["als_weight"], blend["trend_weight"]) == (0.0, 0.0)
        assert (
            status == 200 and body["strategy"] == "item-knn" and len(body["recommendations"]) == 5
        )

        def send(batch: int) -> int:
            events = [
                {"user_id": f"shopper{batch % 7}", "item_id": "85123A", "type": "view"}
                for _ in range(5)
            ]
            request = urllib.request.Request(
                base + "/v1/events",
                data=json.dumps({"events": events}).encode(),
                headers={"Content-Type": "application/json"},
                method="POST",
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status

        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = list(pool.map(send, range(120)))
        assert statuses == [201] * 120
        with sqlite3.connect(activity_db) as connection:
            assert connection.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 120 * 5
        status, body = get(f"{base}/v1/users/shopper1/page-you-made?k=3")
        assert status == 200 and body["groups"][0]["because"]["item_id"] == "85123A"
        # /metrics adds up the samples of both workers (prometheus_client multiprocess mode).
        with urllib.request.urlopen(base + "/metrics", timeout=5) as response:
            metrics = response.read().decode()
        stored = [
            line
            for line in metrics.splitlines()
            if line.startswith("recommender_events_stored_total")
        ]
        assert stored and float(stored[0].split()[-1]) == 600
    finally:
        server.send_signal(signal.SIGTERM)
        output = server.communicate(timeout=30)[0]
    assert server.returncode == 0, output
    request_lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert {"endpoint": "/v1/events", "method": "POST", "status": 201} in [
        {k: line[k] for k in ("endpoint", "method", "status")} for line in request_lines
    ]
