#!/usr/bin/env python3
"""What tracing costs the serving path, and what an experiment's second model costs in memory.

    python bench/tracing_cost.py                       # shipped model, 3 rounds of 5 s
    python bench/tracing_cost.py --model synthetic --repeat 3 --duration 10

1. Throughput with tracing on (every list signed into a recommendation_id, its impression
   counted in the worker and written every 5 s) against tracing off (``--no-tracing``):
   two production servers (gunicorn, 2 sync workers) on the same model and store, wrk
   -t2 -c32 against each endpoint, the two servers interleaved endpoint by endpoint in every
   round; medians of the rounds, and the ratio on/off per endpoint (target: >= 0.95).
2. Memory of a model-version variant: the server on a models directory holding the model
   and a byte-for-byte copy of it under another version name (a copy, not a link, so its
   pages are its own), 400 shoppers asking for personal picks, an item page and a basket's
   recommendations (twice each) without an experiment,
   then with a 50/50 experiment whose second variant serves the copy; PSS of the master
   and workers after each. The difference is what loading the variant's version costs.
-> bench/results/tracing_cost.json and tracing_cost.md
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serve_bench  # noqa: E402
from common import RESULTS, machine  # noqa: E402

TOKEN = "bench-admin-token-0123456789"
TARGET_RATIO = 0.95


def throughput(
    ids: dict[str, Any], repeat: int, duration: int, workdir: Path, only: str = ""
) -> dict[str, Any]:
    servers = {
        "off": serve_bench.Server(2, 1, workdir / "off", extra=("--no-tracing",)),
        "on": serve_bench.Server(2, 1, workdir / "on"),
    }
    chosen = [
        e
        for e in serve_bench.endpoints(ids)
        if not only or e["name"] == "GET /health" or only in e["name"]
    ]
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        mode: {e["name"]: [] for e in chosen} for mode in servers
    }
    try:
        for server in servers.values():
            server.wait_ready()
            serve_bench.post_events(server, ids)
        for round_ in range(repeat):
            for endpoint in chosen:
                order = ("off", "on") if round_ % 2 == 0 else ("on", "off")
                for mode in order:
                    print(
                        f"[bench] round {round_ + 1}/{repeat}: {endpoint['name']}, tracing {mode}",
                        file=sys.stderr,
                        flush=True,
                    )
                    runs[mode][endpoint["name"]].append(
                        serve_bench.run_wrk(servers[mode], endpoint, duration, 32, 2, workdir)
                    )
        check = serve_bench.request(servers["on"].base, "GET", chosen[1]["path"])[1] or {}
    finally:
        for server in servers.values():
            server.stop()
    table: dict[str, Any] = {}
    for endpoint in chosen:
        name = endpoint["name"]
        row: dict[str, Any] = {"path": endpoint["path"]}
        for mode in servers:
            measured = runs[mode][name]
            row[mode] = {
                key: round(statistics.median(m[key] for m in measured if key in m), 3)
                for key in ("rps", "p50_ms", "p99_ms", "server_cpu_ms_per_request")
                if any(key in m for m in measured)
            }
            row[mode]["runs_rps"] = [m.get("rps") for m in measured]
        if row["off"].get("rps"):
            row["ratio_on_to_off_rps"] = round(row["on"]["rps"] / row["off"]["rps"], 3)
        if row["on"].get("server_cpu_ms_per_request"):
            # Server CPU per request does not depend on how wrk and the server share the cores.
            row["ratio_off_to_on_cpu"] = round(
                row["off"]["server_cpu_ms_per_request"] / row["on"]["server_cpu_ms_per_request"], 3
            )
        table[name] = row
    # Each server's endpoint as a share of its own /health (shown: it cancels what differs
    # between the two servers whatever the endpoint, and adds /health's own noise).
    health = table["GET /health"]
    for name, row in table.items():
        if name == "GET /health":
            continue
        if "ratio_on_to_off_rps" in row:
            row["ratio_on_to_off_share_of_health"] = round(
                row["ratio_on_to_off_rps"] / health["ratio_on_to_off_rps"], 3
            )
        if "ratio_off_to_on_cpu" in row:
            # The server's own cost decides: rps and shares carry wrk's and the other
            # server's noise (/health, the same code in both, differs by up to 10%).
            row["within_5pct"] = row["ratio_off_to_on_cpu"] >= TARGET_RATIO
    return {
        "endpoints": table,
        "recommendation_id_bytes": len(check.get("recommendation_id", "")),
        "all_within_5pct": all(
            row.get("within_5pct", True) for name, row in table.items() if name != "GET /health"
        ),
    }


def _pss(server: serve_bench.Server) -> dict[str, Any]:
    pids = server.pids()
    master = serve_bench.smaps(pids["master"])
    workers = [serve_bench.smaps(pid) for pid in pids["workers"]]
    return {
        "master_pss_mib": master["pss_mib"],
        "workers_pss_mib": [w["pss_mib"] for w in workers],
        "total_pss_mib": round(master["pss_mib"] + sum(w["pss_mib"] for w in workers), 1),
    }


def variant_memory(ids: dict[str, Any], workdir: Path) -> dict[str, Any]:
    models = workdir / "models"
    source = serve_bench.version_dir()
    models.mkdir()
    shutil.copytree(source, models / source.name)
    copy_name = source.name[:-2] + ("1Z" if not source.name.endswith("1Z") else "2Z")
    shutil.copytree(source, models / copy_name)
    (models / "current").symlink_to(source.name)
    server = serve_bench.Server(
        2, 1, workdir, models=models, extra=("--admin-token", TOKEN, "--reload-interval", "3600")
    )
    shoppers = [f"bench-shopper-{n}" for n in range(400)]

    def visit(user: str) -> list[int]:
        """Personal picks, an item page and a basket's recommendations, as this shopper."""
        return [
            serve_bench.request(server.base, "GET", f"/v1/users/{user}/recommendations?k=10")[0],
            serve_bench.request(
                server.base,
                "GET",
                f"/v1/items/{ids['popular_item']}/also-bought?k=10&shopper_id={user}",
            )[0],
            serve_bench.request(
                server.base,
                "POST",
                "/v1/recommendations",
                {"items": ids["basket"], "k": 10, "shopper_id": user},
            )[0],
        ]

    def browse() -> list[int]:
        with ThreadPoolExecutor(8) as pool:
            return [status for statuses in pool.map(visit, shoppers * 2) for status in statuses]

    try:
        server.wait_ready()
        statuses = browse()
        time.sleep(0.5)
        before = _pss(server)
        answer = serve_bench.request(
            server.base,
            "PUT",
            "/v1/admin/experiments/memory",
            {"variants": [{"name": "current"}, {"name": "copy", "model_version": copy_name}]},
            {"Authorization": f"Bearer {TOKEN}"},
        )
        time.sleep(2.5)  # every worker rereads the experiments
        statuses += browse()
        time.sleep(0.5)
        after = _pss(server)
    finally:
        server.stop()
    npy = sum(f.stat().st_size for f in source.glob("*.npy"))
    return {
        "model_npy_mib": round(npy / 2**20, 1),
        "experiment_put": answer,
        "non_2xx": sum(status >= 300 for status in statuses),
        "without_experiment": before,
        "with_model_version_variant": after,
        "extra_total_pss_mib": round(after["total_pss_mib"] - before["total_pss_mib"], 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shipped", choices=sorted(serve_bench.MODEL_DIRS))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument(
        "--only", default="", help="endpoints whose name contains this (and /health), e.g. user"
    )
    args = parser.parse_args(argv)
    command = "python bench/tracing_cost.py " + " ".join(argv if argv is not None else sys.argv[1:])
    model = serve_bench.ensure_model(args.model, False)
    ids = serve_bench.pick_ids()
    with tempfile.TemporaryDirectory(prefix="reco-tracing-") as tmp:
        workdir = Path(tmp)
        for sub in ("off", "on"):
            (workdir / sub).mkdir()
        document: dict[str, Any] = {
            "about": f"{command}: tracing on against off, same model, same run, wrk -t2 -c32 "
            f"-d{args.duration}s on 127.0.0.1 (wrk shares the 2 cores); medians of "
            f"{args.repeat} rounds, the two servers interleaved per endpoint.",
            "machine": machine(),
            "model": {
                "name": args.model,
                **{k: model.get(k) for k in ("lines", "version") if k in model},
            },
            "throughput": throughput(ids, args.repeat, args.duration, workdir, args.only),
        }
        if not args.skip_memory:
            document["model_version_variant_memory"] = variant_memory(ids, workdir)
    name = "tracing_cost" + (f"_{args.only.replace(' ', '_')}" if args.only else "")
    (RESULTS / f"{name}.json").write_text(json.dumps(document, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown(document, command) + "\n")
    print(markdown(document, command))
    return 0


def markdown(document: dict[str, Any], command: str) -> str:
    lines = [
        "# Tracing cost",
        "",
        f"`{command}` ({document['machine'].get('cpus', '?')} CPUs). {document['about']}",
        "",
        "| endpoint | rps off | rps on | on/off rps | on/off share of /health | CPU per request off/on (ms) | off/on CPU | p99 ms off | p99 ms on |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in document["throughput"]["endpoints"].items():
        lines.append(
            f"| {name} | {row['off'].get('rps')} | {row['on'].get('rps')} | "
            f"{row.get('ratio_on_to_off_rps')} | {row.get('ratio_on_to_off_share_of_health', '')} | "
            f"{row['off'].get('server_cpu_ms_per_request')} / "
            f"{row['on'].get('server_cpu_ms_per_request')} | {row.get('ratio_off_to_on_cpu')} | "
            f"{row['off'].get('p99_ms')} | {row['on'].get('p99_ms')} |"
        )
    lines.append("")
    lines.append(
        "Within 5%: the server's CPU per request with tracing off is at least 0.95 of that "
        "with it on (rps and shares of /health move with the shared cores: compare /health "
        "between the two servers, the same code in both). "
        f"Every endpoint within 5%: {document['throughput']['all_within_5pct']}; a "
        f"recommendation_id is {document['throughput']['recommendation_id_bytes']} bytes here."
    )
    memory = document.get("model_version_variant_memory")
    if memory:
        lines += [
            "",
            "## A model-version variant's memory",
            "",
            f"Model arrays: {memory['model_npy_mib']} MiB. Total PSS (master + 2 workers) "
            f"without the experiment {memory['without_experiment']['total_pss_mib']} MiB, with "
            f"a 50/50 experiment serving a copy of the model "
            f"{memory['with_model_version_variant']['total_pss_mib']} MiB: "
            f"{memory['extra_total_pss_mib']} MiB more.",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
