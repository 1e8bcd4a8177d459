#!/usr/bin/env python3
"""The app's own overhead: ``/health`` of the production server against a bare Flask app
with one route, under the same gunicorn settings, in the same run.

    python bench/app_overhead.py                 # 4 interleaved rounds of wrk -d5s
    python bench/app_overhead.py --repeat 6 --duration 10

Both run as gunicorn with 2 sync workers and the app preloaded, on 127.0.0.1; wrk -t2 -c32
against ``/health`` of each, alternating in every round; medians of the rounds. The bare
app answers ``{"status": "ok"}`` as ``/health`` does, with nothing else: no request hooks, no
metrics, no request log, no blueprints. The production server runs as ``serve.py`` does,
request log to a file (a real deployment writes one). Target: ours at least 0.90 of bare.
-> bench/results/app_overhead.json and app_overhead.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serve_bench  # noqa: E402
from common import PYTHON, RESULTS, ROOT, machine  # noqa: E402

BARE_APP = """
from flask import Flask, jsonify

app = Flask("bare")


@app.get("/health")
def health():
    return jsonify({"status": "ok"})
"""
TARGET = 0.90


class BareServer(serve_bench.Server):
    """gunicorn on the bare app with the production server's settings (2 sync workers,
    preloaded, no access log)."""

    def __init__(self, workdir: Path) -> None:
        (workdir / "bare_app.py").write_text(BARE_APP)
        self.port = serve_bench.free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.command = [
            PYTHON,
            "-m",
            "gunicorn",
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            "2",
            "--worker-class",
            "sync",
            "--preload",
            "--chdir",
            str(workdir),
            "bare_app:app",
        ]
        self.log = (workdir / "bare.log").open("w")
        self.proc = subprocess.Popen(
            self.command, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT
        )
        self.workers = 2

    def wait_ready(self, timeout: float = 60.0) -> float:
        import time
        import urllib.request

        started = time.perf_counter()
        while time.perf_counter() - started < timeout:
            try:
                with urllib.request.urlopen(self.base + "/health", timeout=2) as answer:
                    if answer.status == 200:
                        return time.perf_counter() - started
            except OSError:
                time.sleep(0.2)
        raise SystemExit(f"bare app not ready; see {self.log.name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=4)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument(
        "--request-log", default="file", choices=("file", "none"), help="ours with or without it"
    )
    args = parser.parse_args(argv)
    command = "python bench/app_overhead.py " + " ".join(argv if argv is not None else sys.argv[1:])
    serve_bench.ensure_model("shipped", False)
    health = {"name": "GET /health", "method": "GET", "path": "/health"}
    with tempfile.TemporaryDirectory(prefix="reco-overhead-") as tmp:
        workdir = Path(tmp)
        servers = {
            "bare": BareServer(workdir),
            "ours": serve_bench.Server(
                2,
                1,
                workdir,
                extra=(
                    "--request-log",
                    str(workdir / "requests.log") if args.request_log == "file" else "",
                ),
            ),
        }
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
        try:
            for server in servers.values():
                server.wait_ready()
            for round_ in range(args.repeat):
                order = ("bare", "ours") if round_ % 2 == 0 else ("ours", "bare")
                for name in order:
                    print(f"[bench] round {round_ + 1}/{args.repeat}: {name}", file=sys.stderr)
                    runs[name].append(
                        serve_bench.run_wrk(servers[name], health, args.duration, 32, 2, workdir)
                    )
        finally:
            for server in servers.values():
                server.stop()
    summary = {
        name: {
            key: round(statistics.median(m[key] for m in measured if key in m), 3)
            for key in ("rps", "p50_ms", "p99_ms", "server_cpu_ms_per_request")
        }
        | {"runs_rps": [m.get("rps") for m in measured]}
        for name, measured in runs.items()
    }
    ratio = round(summary["ours"]["rps"] / summary["bare"]["rps"], 3)
    cpu_ratio = round(
        summary["bare"]["server_cpu_ms_per_request"] / summary["ours"]["server_cpu_ms_per_request"],
        3,
    )
    document = {
        "about": f"{command}: /health of the production server against a bare Flask app, both "
        f"gunicorn with 2 sync workers, preloaded; wrk -t2 -c32 -d{args.duration}s on 127.0.0.1 "
        f"sharing the 2 cores; medians of {args.repeat} alternating rounds.",
        "machine": machine(),
        "servers": {
            "bare": serve_bench.shown(servers["bare"].command),
            "ours": serve_bench.shown(servers["ours"].command),
        },
        "health": summary,
        "ratio_rps": ratio,
        "ratio_cpu_per_request": cpu_ratio,
        "meets_90pct": ratio >= TARGET,
    }
    (RESULTS / "app_overhead.json").write_text(json.dumps(document, indent=2) + "\n")
    text = "\n".join(
        [
            "# The app's own overhead",
            "",
            f"`{command}`. {document['about']}",
            "",
            "| server | rps | p50 ms | p99 ms | server CPU per request (ms) |",
            "|---|---:|---:|---:|---:|",
            *(
                f"| {name} | {row['rps']} | {row['p50_ms']} | {row['p99_ms']} | "
                f"{row['server_cpu_ms_per_request']} |"
                for name, row in summary.items()
            ),
            "",
            f"Ours against bare: {ratio} by rps, {cpu_ratio} by server CPU per request "
            f"(target {TARGET}).",
        ]
    )
    (RESULTS / "app_overhead.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
