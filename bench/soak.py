"""Soak test (not run by CI): reads and event writes on loopback for a fixed time (longer if the
two retrains take longer) while the model is retrained and reloaded twice. Reports requests, 5xx and connection errors (both must
be zero) and events acknowledged versus stored (must be equal).

    python bench/soak.py --seconds 60 --clients 8
Writes bench/results/soak.json.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--data", default=str(ROOT / "data" / "online_retail.parquet"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="reco-soak-"))
    models, activity = work / "models", work / "activity.sqlite3"
    train = [
        PYTHON,
        "train.py",
        "--data",
        args.data,
        "--models-dir",
        str(models),
        "--no-evaluate",
        "--activity-db",
        str(activity),
    ]
    subprocess.run(train, cwd=ROOT, check=True, capture_output=True)
    port = free_port()
    server = subprocess.Popen(
        [
            PYTHON,
            "serve.py",
            "--port",
            str(port),
            "--models-dir",
            str(models),
            "--activity-db",
            str(activity),
            "--request-log",
            "",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(base + "/ready", timeout=1).read()
            break
        except OSError:
            time.sleep(0.2)
    counts = {
        "requests": 0,
        "server_errors": 0,
        "connection_errors": 0,
        "client_errors": 0,
        "events_acknowledged": 0,
    }
    versions_seen: set[str] = set()
    lock = threading.Lock()
    stop = time.monotonic() + args.seconds
    finished = threading.Event()  # set once both retrains are served, and the time is up
    reads = [
        "/v1/items/85123A/also-bought?k=10",
        "/v1/items/22423/bought-together?k=10",
        "/v1/users/12347/recommendations?k=10",
        "/v1/users/soak-0/page-you-made?k=10",
        "/v1/model",
    ]

    def client(number: int) -> None:
        rng = random.Random(number)
        batch = 0
        while not finished.is_set():
            batch += 1
            try:
                if rng.random() < 0.3:
                    # A new shopper per batch: a shopper's history is capped (200 events), and
                    # pruning it would make "stored" differ from "acknowledged" by design.
                    events = [
                        {"user_id": f"soak-{number}-{batch}", "item_id": "85123A", "type": "view"}
                    ] * 3
                    request = urllib.request.Request(
                        base + "/v1/events",
                        method="POST",
                        data=json.dumps({"events": events}).encode(),
                        headers={"Content-Type": "application/json"},
                    )
                    with urllib.request.urlopen(request, timeout=10) as response:
                        stored = json.loads(response.read())["stored"]
                    with lock:
                        counts["events_acknowledged"] += stored
                else:
                    with urllib.request.urlopen(base + rng.choice(reads), timeout=10) as response:
                        body = json.loads(response.read())
                    if "model_version" in body or "version" in body:
                        with lock:
                            versions_seen.add(body.get("model_version") or body.get("version"))
                with lock:
                    counts["requests"] += 1
            except urllib.error.HTTPError as error:
                with lock:
                    counts["requests"] += 1
                    counts["server_errors" if error.code >= 500 else "client_errors"] += 1
            except OSError:
                with lock:
                    counts["connection_errors"] += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(args.clients)]
    for thread in threads:
        thread.start()
    retrains = []
    for moment in (0.15, 0.55):
        time.sleep(max(0.0, stop - args.seconds * (1 - moment) - time.monotonic()))
        started = time.monotonic()
        subprocess.run(train, cwd=ROOT, check=True, capture_output=True)
        retrains.append(round(time.monotonic() - started, 1))
    time.sleep(max(5.0, stop - time.monotonic()))  # the workers reload within 2 s of a promotion
    finished.set()
    for thread in threads:
        thread.join()
    server.terminate()
    server.wait(timeout=30)
    with sqlite3.connect(activity) as connection:
        stored = connection.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    result = {
        "command": f"python bench/soak.py --seconds {args.seconds:g} --clients {args.clients}",
        "seconds": args.seconds,
        "clients": args.clients,
        **counts,
        "events_stored": stored,
        "retrain_seconds": retrains,
        "model_versions_served": len(versions_seen),
        "ok": counts["server_errors"] == 0
        and counts["connection_errors"] == 0
        and stored == counts["events_acknowledged"]
        and len(versions_seen) >= 3,
        "note": "the client threads share the 2 cores with the server and the two training runs",
    }
    out = ROOT / "bench" / "results" / "soak.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
