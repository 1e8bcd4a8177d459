#!/usr/bin/env python3
"""How far a personal answer can get towards /health's throughput when its model work is free.

    python bench/personal_floor.py                  # shipped model, 2 rounds of 5 s
    python bench/personal_floor.py --model synthetic --repeat 3

Issue 30 asks every endpoint to serve at least 0.70 of /health's requests per second at
saturation. This measures what is left of a personal answer when parts of its work cost
nothing: the production server (gunicorn, 2 sync workers) started three ways, the same model
and store, wrk -t2 -c32 against /health, user recommendations and page-you-made:

- ``as shipped``: nothing cached;
- ``ranking cached``: the blend, its top k, the reasons and the fold-in computed once per
  shopper's items and then read from a dict (``floor_site/sitecustomize.py``): the answer
  does everything but score;
- ``ranking and store read cached``: the read of the shopper's suppression, events and wish
  list made once too, which the product cannot skip (a forget must hold at the next
  request, and the recent activity is what page-you-made answers from).

The three servers are started in turn in every round; each round's shares are to the /health
of the same server. -> bench/results/personal_floor.json and personal_floor.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serve_bench  # noqa: E402
from common import RESULTS, machine  # noqa: E402

SITE = Path(__file__).resolve().parent / "floor_site"
MODES = {
    "as shipped": "",
    "ranking cached": "ranking",
    "ranking and store read cached": "ranking,shopper",
}
ENDPOINTS = ("GET /health", "GET user recommendations", "GET page-you-made")
TARGET_SHARE = 0.70
PYTHONPATH = os.environ.get("PYTHONPATH", "")


def measure(ids: dict[str, Any], cached: str, duration: int, workdir: Path) -> dict[str, Any]:
    """One server with ``cached`` parts, each endpoint once under wrk; rps and server CPU."""
    os.environ["RECO_BENCH_CACHED"] = cached
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SITE), PYTHONPATH]))
    server = serve_bench.Server(2, 1, workdir)
    try:
        server.wait_ready()
        serve_bench.post_events(server, ids)
        chosen = [e for e in serve_bench.endpoints(ids) if e["name"] in ENDPOINTS]
        return {e["name"]: serve_bench.run_wrk(server, e, duration, 32, 2, workdir) for e in chosen}
    finally:
        server.stop()
        os.environ.pop("RECO_BENCH_CACHED", None)
        os.environ["PYTHONPATH"] = PYTHONPATH


def table(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per mode and endpoint: each round's share of that server's /health, their median, and
    the median server CPU per request."""
    summary: dict[str, Any] = {}
    for mode, rounds in runs.items():
        summary[mode] = {}
        for name in ENDPOINTS:
            shares = [r[name]["rps"] / r["GET /health"]["rps"] for r in rounds]
            cpu = [r[name].get("server_cpu_ms_per_request") for r in rounds]
            summary[mode][name] = {
                "rps": [round(r[name]["rps"], 1) for r in rounds],
                "share_of_health": [round(s, 3) for s in shares],
                "median_share": round(statistics.median(shares), 3),
                "server_cpu_ms_per_request": cpu,
            }
    return summary


def markdown(summary: dict[str, Any], about: dict[str, Any]) -> str:
    lines = [
        "# A personal answer's share of /health with parts of its work cached",
        "",
        f"`{about['command']}` ({about['git']}, {about['when']}). Shares of the same server's /health at "
        f"saturation (wrk -t2 -c32, 2 sync gunicorn workers, client on the same 2 cores), one "
        f"figure per round; server CPU in ms per request. Target: {TARGET_SHARE:.2f}.",
        "",
        "| server | endpoint | shares of /health | server CPU ms/request |",
        "|---|---|---|---|",
    ]
    for mode, rows in summary.items():
        for name, row in rows.items():
            shares = " / ".join(f"{s:.2f}" for s in row["share_of_health"])
            cpu = " / ".join(f"{c}" for c in row["server_cpu_ms_per_request"])
            lines.append(f"| {mode} | {name} | {shares} | {cpu} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=sorted(serve_bench.MODEL_DIRS), default="shipped")
    parser.add_argument("--repeat", type=int, default=2, help="rounds (every server each round)")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    args = parser.parse_args(argv)
    serve_bench.ensure_model(args.model, retrain=False)  # and points serve_bench at it
    ids = serve_bench.pick_ids()
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory() as scratch:
        for round_ in range(args.repeat):
            for mode, cached in MODES.items():
                print(f"[bench] round {round_ + 1}/{args.repeat}: {mode}", file=sys.stderr)
                workdir = Path(scratch) / f"{round_}-{cached or 'none'}"
                workdir.mkdir()
                runs[mode].append(measure(ids, cached, args.duration, workdir))
    command = "python bench/personal_floor.py " + " ".join(argv or sys.argv[1:])
    host = machine()
    about = {
        "command": command.strip(),
        "model": args.model,
        "machine": host,
        "git": host["code"]["head"],
        "when": host["date_utc"] + " UTC",
    }
    summary = table(runs)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "personal_floor.json").write_text(
        json.dumps({"about": about, "summary": summary, "runs": runs}, indent=2) + "\n"
    )
    (RESULTS / "personal_floor.md").write_text(markdown(summary, about))
    print((RESULTS / "personal_floor.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
