#!/usr/bin/env python3
"""What the evaluation costs against the training it chooses for (issue 30).

    python bench/eval_scale.py select --data LOG [--out FILE.json]
        runs the evaluation alone (``select_and_evaluate``, as ``train.py`` calls it) and
        writes the chosen configuration, the reported figure and the seconds;
    python bench/eval_scale.py train --data LOG --label NAME [--no-evaluate]
        runs ``train.py`` under ``/usr/bin/time -v`` (wall seconds, peak RSS) into a
        temporary models directory and records it in bench/results/eval_scale.json.

Synthetic grocery-like logs come from bench/synthetic.py, e.g. 2,500 customers, 50,000 items
and 1M lines: ``python bench/synthetic.py --lines 1000000 --users 2500 --items 50000 --seed 42
--out bench/.cache/log_grocery50k.parquet``.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import RESULTS, parse_time_v, update_json  # noqa: E402

RESULT = RESULTS / "eval_scale.json"


def select(data: str, out: str | None) -> dict:
    """The evaluation alone on ``data``: what it chooses and reports, and how long it takes."""
    from threadpoolctl import threadpool_limits

    from recommender.config import TrainConfig
    from recommender.model_selection import select_and_evaluate
    from recommender.training import load_purchases

    config = TrainConfig(data=Path(data))
    purchases, _ = load_purchases(config)
    started = time.perf_counter()
    with threadpool_limits(1, "blas"):
        selection = select_and_evaluate(purchases, config.evaluation_settings, None)
    evaluation = selection.evaluation
    result = {
        "data": data,
        "chosen": selection.choice.label(),
        "headline": evaluation.get("headline"),
        "headline_value": evaluation.get("headline_value"),
        "headline_ci95": evaluation.get("headline_ci95"),
        "configurations_measured": evaluation["validation"].get("configurations_measured"),
        "configurations_pruned": evaluation["validation"].get("configurations_pruned"),
        "rule": evaluation["validation"].get("rule"),
        "search_top5": evaluation["validation"].get("search", [])[:5],
        "seconds": round(time.perf_counter() - started, 1),
    }
    if out:
        Path(out).write_text(json.dumps(result, indent=2, default=str))
    return result


def train(data: str, label: str, evaluate: bool) -> dict:
    """``train.py`` on ``data`` (evaluation on or off) under ``/usr/bin/time -v``."""
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            "/usr/bin/time",
            "-v",
            sys.executable,
            "train.py",
            "--data",
            data,
            "--models-dir",
            f"{tmp}/models",
            "--activity-db",
            f"{tmp}/activity.sqlite3",
            "--no-promote",
            "--evaluate" if evaluate else "--no-evaluate",
        ]
        done = subprocess.run(command, cwd=root, capture_output=True, text=True)
    measured = parse_time_v(done.stderr)
    result = {
        "command": " ".join(command[2:]).replace(sys.executable, "python"),
        "exit": done.returncode,
        "wall_s": measured.get("wall_seconds"),
        "peak_rss_mib": measured.get("peak_rss_mib"),
        "measured": measured,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if done.returncode:
        result["stderr_tail"] = done.stderr[-2000:]
    update_json(RESULT, label, result)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=("select", "train"))
    parser.add_argument("--data", required=True)
    parser.add_argument("--out")
    parser.add_argument("--label", default="run")
    parser.add_argument("--evaluate", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.what == "select":
        result = select(args.data, args.out)
    else:
        result = train(args.data, args.label, args.evaluate)
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
