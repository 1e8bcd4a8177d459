#!/usr/bin/env python3
"""The activity store on PostgreSQL against SQLite, in the same run (``make bench-store``).

    python bench/store_bench.py [--duration 5] [--rate 1000] [--models shipped,synthetic]

1. The driver's hot path, in-process: what a personal request asks of the store (its
   suppression and its recent events, ``ActivityStore.shopper``: one statement) through
   psycopg 3 + psycopg_pool and through SQLite, and the same statement through SQLAlchemy
   Core (QueuePool, ``text()``), median microseconds per request over 5,000 requests after a
   warm-up. This chose the driver (README, Dependencies; docs/performance.md).
2. The server (``serve.py``, 2 sync workers; the shipped model in bench/.cache/models_shipped,
   and with ``--models shipped,synthetic`` the 50,000-item model of ``make bench-serve``
   too, its shopper and items picked as serve_bench picks them) on each store, a throwaway PostgreSQL cluster on 127.0.0.1 (``recommender.testing``):
   per endpoint, throughput at saturation (``wrk -t2 -c32``) as a share of ``/health`` in
   the same server, and p50/p99 at a constant offered rate (``constant_rate.py``: 1,000
   requests/s, one every millisecond; before 2026-12-07 ``hey -c10 -q100``, which sends
   bursts of 10); ``POST /v1/events`` with one event per request is the events acknowledged
   per second. The client shares the 2 cores with the server and the database.
-> bench/results/store.json and store.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CACHE, PYTHON, RESULTS, ROOT, git_state, machine, shown  # noqa: E402
from serve_bench import Server, at_constant_rate, parse_wrk, request  # noqa: E402

MODELS = CACHE / "models_shipped"
SHOPPER = "17850"  # a customer of the shipped log
# What each model's server is asked: a known customer, their recent views and cart, two wished
# items and the item of the event posted (the shipped log's ids; the synthetic model's are
# picked off the model by ``serve_bench.pick_ids``).
SHIPPED_WORKLOAD = {
    "models": MODELS,
    "shopper": SHOPPER,
    "event_item": "85123A",
    "activity": [("85123A", "view"), ("71053", "view"), ("84406B", "cart")],
    "wished": ["22423", "21733"],
}
HOT_PATH_REQUESTS = 5000


def ensure_model() -> None:
    if (MODELS / "current").exists():
        return
    command = [
        PYTHON,
        str(ROOT / "train.py"),
        "--data",
        str(ROOT / "data" / "online_retail.parquet"),
        "--models-dir",
        str(MODELS),
        "--no-evaluate",
    ]
    print(f"[bench] {shown(command)}", file=sys.stderr, flush=True)
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)


# ---------------------------------------------------------------- 1. the driver's hot path
def seed(store: Any) -> None:
    from recommender.activity import Event

    now = time.time()
    store.add_events([Event(SHOPPER, f"item{n}", "view", now - n) for n in range(40)], now=now)
    store.forget("someone-else", now=now)


def time_calls(call: Any) -> float:
    for _ in range(300):
        call()
    samples = []
    for _ in range(HOT_PATH_REQUESTS):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return round(statistics.median(samples) * 1e6, 1)


def hot_path(pg_url: str, workdir: Path) -> dict[str, Any]:
    from recommender.activity import ActivityStore

    results: dict[str, Any] = {}
    for name, location in (
        ("sqlite", str(workdir / "hot.sqlite3")),
        ("psycopg 3 + psycopg_pool", pg_url),
    ):
        store = ActivityStore(location)
        seed(store)
        results[name] = time_calls(lambda store=store: store.shopper(SHOPPER))
        store.close()
    try:
        import sqlalchemy
    except ImportError:
        results["sqlalchemy core"] = "not installed (pip install .[bench])"
        return results
    engine = sqlalchemy.create_engine(
        pg_url.replace("postgresql://", "postgresql+psycopg://"), pool_size=4
    )
    statement = sqlalchemy.text(
        "SELECT 's', reason, NULL, 0, 0 FROM suppressed WHERE user_id = :user UNION ALL "
        "SELECT 'e', item_id, type, ts, id FROM (SELECT item_id, type, ts, id FROM events "
        "WHERE user_id = :user AND ts >= :cutoff ORDER BY ts DESC, id DESC LIMIT :limit) AS recent"
    )

    def shopper() -> None:
        with engine.connect() as connection:
            connection.execute(
                statement, {"user": SHOPPER, "cutoff": time.time() - 90 * 86400, "limit": 200}
            ).fetchall()

    results["sqlalchemy core"] = time_calls(shopper)
    engine.dispose()
    return results


# ---------------------------------------------------------------- 2. the server on each store
def synthetic_workload() -> dict[str, Any]:
    """The 50,000-item model's shopper and items, as ``make bench-serve`` picks them."""
    import serve_bench

    serve_bench.ensure_model("synthetic", retrain=False)
    ids = serve_bench.pick_ids()
    return {
        "models": serve_bench.MODELS,
        "shopper": ids["known_user"],
        "event_item": ids["popular_item"],
        "activity": list(zip(ids["visitor_items"][:3], ("view", "view", "cart"))),
        "wished": ids["visitor_wishlist"][:2],
    }


def endpoints(workload: dict[str, Any]) -> list[dict[str, Any]]:
    shopper = workload["shopper"]
    event = {"events": [{"user_id": shopper, "item_id": workload["event_item"], "type": "view"}]}
    return [
        {"name": "GET /health", "method": "GET", "path": "/health"},
        {
            "name": "GET user recommendations",
            "method": "GET",
            "path": f"/v1/users/{shopper}/recommendations?k=10",
        },
        {
            "name": "GET page-you-made",
            "method": "GET",
            "path": f"/v1/users/{shopper}/page-you-made?k=10",
        },
        {
            "name": "GET wish-list recommendations",
            "method": "GET",
            "path": f"/v1/users/{shopper}/wishlist/recommendations?k=10",
        },
        {
            "name": "POST /v1/events (1 event)",
            "method": "POST",
            "path": "/v1/events",
            "body": event,
        },
    ]


def measure(
    server: Server, endpoint: dict[str, Any], duration: int, rate: int, workdir: Path
) -> dict[str, Any]:
    wrk = ["wrk", "-t2", "-c32", f"-d{duration}s", "--latency"]
    if endpoint["method"] == "POST":
        body = json.dumps(endpoint["body"])
        script = workdir / "post.lua"
        script.write_text(
            f"wrk.method = 'POST'\nwrk.body = '{body}'\nwrk.headers['Content-Type'] = 'application/json'\n"
        )
        wrk += ["-s", str(script)]
    saturated = parse_wrk(
        subprocess.run(
            wrk + [server.base + endpoint["path"]],
            capture_output=True,
            text=True,
            timeout=duration + 60,
        ).stdout
    )
    constant = at_constant_rate(server, endpoint, duration, rate)
    return {"saturation": saturated, f"at {rate} req/s": constant}


def serve_on(
    location: str, label: str, duration: int, rate: int, workdir: Path, workload: dict[str, Any]
) -> dict[str, Any]:
    server = Server(
        2, 1, workdir, activity_db=location, models=workload["models"], extra=("--request-log", "")
    )
    shopper = workload["shopper"]
    try:
        server.wait_ready()
        request(
            server.base,
            "POST",
            "/v1/events",
            {
                "events": [
                    {"user_id": shopper, "item_id": item, "type": kind}
                    for item, kind in workload["activity"]
                ]
            },
        )
        for item in workload["wished"]:
            request(server.base, "PUT", f"/v1/users/{shopper}/wishlist/{item}")
        results = {
            endpoint["name"]: measure(server, endpoint, duration, rate, workdir)
            for endpoint in endpoints(workload)
        }
    finally:
        server.stop()
    health = results["GET /health"]["saturation"].get("rps") or float("nan")
    for result in results.values():
        result["share_of_health"] = round(result["saturation"].get("rps", 0.0) / health, 3)
    print(f"[bench] {label}: done", file=sys.stderr, flush=True)
    return results


def table(servers: dict[str, dict[str, Any]], rate: int) -> str:
    lines = [
        f"| endpoint | model | store | req/s at saturation | share of /health | p50 at {rate}/s "
        f"| p99 at {rate}/s | served at that rate |",
        "|---|---|---|---|---|---|---|---|",
    ]
    first = next(iter(servers.values()))
    for name in first:
        for label, results in servers.items():
            model, store = label.split(" / ")
            result = results[name]
            fixed = result[f"at {rate} req/s"]
            lines.append(
                f"| {name} | {model} | {store} | {result['saturation'].get('rps', 0):,.0f} | "
                f"{result['share_of_health']:.2f} | {fixed.get('p50_ms', float('nan')):.1f} ms | "
                f"{fixed.get('p99_ms', float('nan')):.1f} ms | {fixed.get('rps', 0):,.0f} req/s |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--models", default="shipped", help="shipped, synthetic or both (comma)")
    args = parser.parse_args()
    from recommender.testing import PostgresCluster

    ensure_model()
    models = [name.strip() for name in args.models.split(",") if name.strip()]
    unknown = sorted(set(models) - {"shipped", "synthetic"})
    if unknown:
        parser.error(f"--models: unknown model {', '.join(unknown)} (shipped, synthetic)")
    workloads = {
        name: SHIPPED_WORKLOAD if name == "shipped" else synthetic_workload() for name in models
    }
    cluster = PostgresCluster()
    servers: dict[str, dict[str, Any]] = {}
    try:
        with tempfile.TemporaryDirectory() as scratch:
            workdir = Path(scratch)
            driver = hot_path(cluster.new_database(), workdir)
            for name, workload in workloads.items():
                servers[f"{name} / sqlite"] = serve_on(
                    str(workdir / f"activity-{name}.sqlite3"),
                    f"{name} / sqlite",
                    args.duration,
                    args.rate,
                    workdir,
                    workload,
                )
                servers[f"{name} / postgresql"] = serve_on(
                    cluster.new_database(),
                    f"{name} / postgresql",
                    args.duration,
                    args.rate,
                    workdir,
                    workload,
                )
    finally:
        cluster.remove()
    command = (
        f"python bench/store_bench.py --duration {args.duration} --rate {args.rate} "
        f"--models {','.join(models)}"
    )
    report = {
        "command": command,
        "machine": machine(),
        "git": git_state(),
        "hot_path_us_per_request": driver,
        "servers": servers,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "store.json").write_text(json.dumps(report, indent=2) + "\n")
    hot = " · ".join(
        f"{name} {value} µs" if isinstance(value, float) else f"{name}: {value}"
        for name, value in driver.items()
    )
    (RESULTS / "store.md").write_text(
        f"# The activity store: PostgreSQL against SQLite\n\n`{command}` (2 sync workers; "
        f"the client on the same 2 cores)\n\nA personal request's store calls (suppression + recent events), "
        f"median per request in-process: {hot}\n\n{table(servers, args.rate)}\n"
    )
    print((RESULTS / "store.md").read_text())


if __name__ == "__main__":
    main()
