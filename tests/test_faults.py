"""Faults survived: training killed at any moment, events across a server kill, broken models."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from recommender import artifacts, training

from helpers import PYTHON, ROOT, free_port, start_server, tiny_config, write_log

pytestmark = pytest.mark.slow


def test_training_killed_at_several_moments_leaves_the_previous_model(tmp_path: Path) -> None:
    models = tmp_path / "models"
    data = ROOT / "data" / "online_retail.parquet"
    base = [
        PYTHON,
        "train.py",
        "--data",
        str(data),
        "--models-dir",
        str(models),
        "--no-evaluate",
        "--activity-db",
        str(tmp_path / "none.sqlite3"),
    ]
    started = time.monotonic()
    first = subprocess.run(base, cwd=ROOT, capture_output=True, text=True, timeout=300)
    duration = time.monotonic() - started
    assert first.returncode == 0, first.stderr
    serving = artifacts.current_version(models)
    # Kill runs at spread-out moments: reading, fitting, and (near the end) writing.
    for fraction in (0.15, 0.5, 0.8, 0.9, 0.97):
        run = subprocess.Popen(base, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(duration * fraction)
        run.send_signal(signal.SIGKILL)
        run.wait()
        current = artifacts.current_version(models)
        # Either the kill came before the atomic switch (the previous version serves) or after
        # it (the new version was complete and verified before the switch): never a half model.
        assert current == serving or current > serving
        loaded = artifacts.load_current(models)
        assert loaded.version == current and loaded.arrays["item_ids"].shape[0] > 3000
        serving = current
    after = subprocess.run(base, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert after.returncode == 0, after.stderr
    assert not list(models.glob(".tmp-*")), "staging directories of killed runs are cleaned up"
    assert artifacts.current_version(models) > serving


def test_acknowledged_events_survive_a_killed_server(tmp_path: Path) -> None:
    log, models, activity = (
        tmp_path / "tribes.csv",
        tmp_path / "models",
        tmp_path / "activity.sqlite3",
    )
    write_log(log)
    training.run(tiny_config(log, models, als_factors=2))
    port = free_port()
    server = start_server(models, activity, port)
    acknowledged = 0
    try:
        for batch in range(50):
            body = json.dumps(
                {"events": [{"user_id": f"s{batch}", "item_id": "K1", "type": "view"}] * 4}
            ).encode()
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/v1/events",
                data=body,
                method="POST",
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                acknowledged += json.loads(response.read())["stored"]
    finally:
        # The master first, so that it cannot start a replacement for a killed worker (which
        # would keep the port and answer the restarted server's first request, then exit).
        workers = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
        server.kill()
        server.wait()
        for child in workers:
            subprocess.run(["kill", "-9", child], check=False)
    with sqlite3.connect(activity) as connection:
        assert (
            connection.execute("SELECT COUNT(*) FROM events").fetchone()[0] == acknowledged == 200
        )
    restarted = start_server(models, activity, port)
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/v1/users/s3/page-you-made?k=2", timeout=10
        ) as response:
            assert json.loads(response.read())["groups"][0]["because"]["item_id"] == "K1"
    finally:
        restarted.terminate()
        restarted.wait(timeout=30)
