#!/usr/bin/env python3
"""Both training engines on the same synthetic log, one after the other, on this machine.

    python bench/spark_scale.py                  # the 20M-line log (make bench-spark)
    python bench/spark_scale.py --sizes 1M       # a quick check

For each size: the synthetic log (bench/.cache/log_<size>.parquet, made once), then
  (a) python train.py --data LOG --no-evaluate                      (the local engine)
  (b) python train.py --data LOG --no-evaluate --engine spark --spark-master local[2]
each under /usr/bin/time -v, with the memory of the whole process tree (Python, Spark's JVM
and its Python workers) sampled every second: /usr/bin/time alone would report only the
largest single process. Step timings come from the training logs. Results are merged into
bench/results/spark.json; the logs are kept in bench/.cache/{local,spark}_<size>.log.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    CACHE,
    PYTHON,
    RESULTS,
    ROOT,
    SIZES,
    children,
    ensure_log,
    git_state,
    machine,
    rss_mib,
    timed_run,
    update_json,
    wait_for_quiet,
)

LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (\w+) ([\w.]+): (.*)$")


def tree_rss_mib(pid: int) -> float:
    """Resident memory of a process and all its descendants (MiB)."""
    total, stack, seen = 0.0, [pid], set()
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        total += rss_mib(current) or 0.0
        stack.extend(children(current))
    return total


def run_engine(
    engine: str, log: Path, size: str, driver_memory: str, timeout: float
) -> dict[str, Any]:
    models = CACHE / f"models_{engine}_{size}"
    shutil.rmtree(models, ignore_errors=True)
    command = [
        PYTHON,
        str(ROOT / "train.py"),
        "--data",
        str(log),
        "--models-dir",
        str(models),
        "--no-evaluate",
        "--activity-db",
        str(CACHE / "no-activity.sqlite3"),
    ]
    if engine == "spark":
        command += [
            "--engine",
            "spark",
            "--spark-master",
            f"local[{os.cpu_count() or 2}]",
            "--spark-driver-memory",
            driver_memory,
        ]
    quiet = wait_for_quiet()
    peaks: list[tuple[float, float]] = []
    stop = threading.Event()
    started = time.time()

    def sample() -> None:
        # /usr/bin/time is the only child started meanwhile from this process.
        while not stop.is_set():
            for pid in children(os.getpid()):
                peaks.append((round(time.time() - started, 1), round(tree_rss_mib(pid), 1)))
            stop.wait(1.0)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    print(f"[bench] {size}: {engine} engine ...", file=sys.stderr, flush=True)
    run = timed_run(command, CACHE / f"{engine}_{size}.log", timeout=timeout)
    stop.set()
    sampler.join()
    steps = []
    previous = None
    for arrived, line in run["stderr"]:
        match = LOG_LINE.match(line)
        if match and match.group(2) == "INFO":
            steps.append(
                {
                    "at_seconds": round(arrived, 1),
                    "since_previous": round(arrived - (previous or 0.0), 1),
                    "log_line": match.group(4)[:200],
                }
            )
            previous = arrived
    result = {
        **run["time"],
        "quiet_before": quiet,
        "steps": steps,
        "peak_tree_rss_mib": max((p for _, p in peaks), default=None),
        "tree_rss_timeline_mib": peaks[:: max(1, len(peaks) // 120)],
    }
    if run["time"]["returncode"] != 0:
        result["error_tail"] = [line for _, line in run["stderr"] if not line.startswith("\t")][-8:]
    shutil.rmtree(models, ignore_errors=True)
    print(
        f"[bench] {size}: {engine} wall {run['time'].get('wall_seconds')} s, "
        f"peak tree RSS {result['peak_tree_rss_mib']} MiB",
        file=sys.stderr,
        flush=True,
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="20M", help="comma-separated subset of 1M,5M,20M")
    parser.add_argument(
        "--driver-memory", default="8g", help="Spark driver memory (local mode: all of Spark)"
    )
    parser.add_argument(
        "--timeout", type=float, default=5400.0, help="seconds before a run is stopped"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "spark.json")
    parser.add_argument(
        "--engines",
        default="local,spark",
        help="spark alone re-measures the Spark engine and keeps the local run already in --out "
        "(marked as from an earlier run: its ratio then spans two runs)",
    )
    args = parser.parse_args(argv)
    engines = {engine.strip() for engine in args.engines.split(",")}
    update_json(
        args.out,
        None,
        {
            "about": "python bench/spark_scale.py --sizes SIZE: train.py --no-evaluate with the local engine, then with "
            "--engine spark --spark-master local[cores], same synthetic log (bench/synthetic.py, seed 42); "
            "peak_tree_rss_mib = largest sum of RSS over the process tree (Python + Spark JVM + workers), "
            "sampled every second. ratio = spark wall / local wall.",
            "machine": machine(),
        },
    )
    for size in [s.strip() for s in args.sizes.split(",") if s.strip()]:
        if size not in SIZES:
            parser.error(f"unknown size {size!r}")
        log, meta = ensure_log(size)
        code = git_state()
        earlier = (
            json.loads(args.out.read_text()).get("sizes", {}).get(size, {})
            if args.out.exists()
            else {}
        )
        if "local" in engines or "local" not in earlier:
            local = run_engine("local", log, size, args.driver_memory, args.timeout)
        else:
            local = {
                **earlier["local"],
                "from_earlier_run": {
                    "code": earlier.get("code"),
                    "date_utc": earlier.get("date_utc"),
                },
            }
        spark = run_engine("spark", log, size, args.driver_memory, args.timeout)
        result: dict[str, Any] = {
            "log": meta,
            "local": local,
            "spark": spark,
            "code": code,
            "date_utc": machine()["date_utc"],
        }
        if (
            "spark" in earlier
        ):  # what it replaces, for the comparison (another run: compare steps with care)
            result["spark_previous_run"] = {
                "code": earlier.get("code"),
                "date_utc": earlier.get("date_utc"),
                **{k: v for k, v in earlier["spark"].items() if k != "previous"},
            }
        if (
            local.get("wall_seconds")
            and spark.get("wall_seconds")
            and not local["returncode"] | spark["returncode"]
        ):
            result["ratio_spark_wall_to_local_wall"] = round(
                spark["wall_seconds"] / local["wall_seconds"], 2
            )
            result["ratio_spark_peak_to_local_peak"] = round(
                spark["peak_tree_rss_mib"] / local["peak_tree_rss_mib"], 2
            )
        update_json(args.out, "sizes", {size: result})
    summary = {
        size: {k: v for k, v in r.items() if k.startswith("ratio")}
        for size, r in json.loads(args.out.read_text())["sizes"].items()
    }
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
