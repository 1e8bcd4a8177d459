#!/usr/bin/env python3
"""Memory of ingest, step by step, and of the whole training run, on the synthetic logs.

    python bench/ingest_memory.py --label after                  # 5M and 20M
    python bench/ingest_memory.py --label before --sizes 5M

For each size (logs from bench/synthetic.py, cached in bench/.cache/):
  (a) a child process runs the steps ``training.run`` takes before it fits anything (read,
      clean, interaction matrices, catalog, first sale, dropping the frame) and reports, per
      step, the seconds, the RSS after it and the peak RSS during it (the kernel's high-water
      mark, reset before each step through /proc/self/clear_refs);
  (b) ``/usr/bin/time -v python train.py --data LOG --no-evaluate --personal-list-depth 0``
      gives the whole run's peak (the personal lists are another pass, measured elsewhere).
Results are merged under ``--label`` into bench/results/ingest_memory.json, and every label
recorded there is written out as bench/results/ingest_memory.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PYTHON, RESULTS, ROOT, ensure_log, timed_run  # noqa: E402

SIZES = ("5M", "20M")
OUT_JSON = RESULTS / "ingest_memory.json"
OUT_MD = RESULTS / "ingest_memory.md"


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def run_steps(log: Path) -> list[dict[str, Any]]:
    """The ingest steps of ``training.run`` in this process, each with its time and memory."""
    sys.path.insert(0, str(ROOT))
    from recommender.config import TrainConfig, load_config
    from recommender.data.catalog import build_catalog, first_sold
    from recommender.data.cleaning import clean
    from recommender.data.loading import read_log
    from recommender.data.matrix import build_interactions, last_purchase_seconds
    from recommender.run_steps import cleaning_rules

    config = load_config(
        TrainConfig,
        overrides={"data": log, "evaluate": False, "personal_list_depth": 0},
        environ={},
    )
    steps: list[dict[str, Any]] = [{"step": "imports", "rss_mib": _status_mib("VmRSS")}]
    state: dict[str, Any] = {}

    def measure(name: str, action: Any) -> None:
        Path("/proc/self/clear_refs").write_text("5")  # the high-water mark starts again here
        started = time.perf_counter()
        action()
        steps.append(
            {
                "step": name,
                "seconds": round(time.perf_counter() - started, 2),
                "peak_mib": _status_mib("VmHWM"),
                "rss_mib": _status_mib("VmRSS"),
            }
        )

    def read() -> None:
        state["log"] = read_log(
            config.data, config.format, config.preset, config.columns, config.encoding
        )

    def cleaned() -> None:
        log = state.pop("log")
        rules = cleaning_rules(config, log.attrs.get("preset", ""))
        state["purchases"], _ = clean(log, rules, source=str(config.data))

    def matrices() -> None:
        state["interactions"] = build_interactions(state["purchases"], config.weighting)

    def catalog() -> None:
        item_ids = state["interactions"].item_ids
        state["catalog"] = build_catalog(state["purchases"], item_ids)
        state["catalog"]["first_sold"] = first_sold(state["purchases"], item_ids)
        last_purchase_seconds(state["purchases"])

    def drop() -> None:
        del state["purchases"]

    measure("read_log", read)
    measure("clean", cleaned)
    measure("build_interactions", matrices)
    measure("build_catalog + first_sold", catalog)
    measure("del purchases", drop)
    return steps


def measure_size(size: str, whole: bool) -> dict[str, Any]:
    log, info = ensure_log(size)
    child = [PYTHON, str(Path(__file__).resolve()), "--child", str(log)]
    steps = json.loads(
        subprocess.run(child, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    )
    result: dict[str, Any] = {
        "log": info,
        "steps_command": f"python bench/ingest_memory.py --child {log.relative_to(ROOT)}",
        "steps": steps,
        "steps_peak_mib": max(step.get("peak_mib", 0.0) for step in steps),
    }
    if whole:
        with tempfile.TemporaryDirectory() as scratch:
            command = [
                PYTHON,
                "train.py",
                "--data",
                str(log.relative_to(ROOT)),
                "--models-dir",
                f"{scratch}/models",
                "--activity-db",
                f"{scratch}/activity.sqlite3",
                "--no-evaluate",
                "--personal-list-depth",
                "0",
            ]
            run = timed_run(command, Path(scratch) / "train.log")
        figures = run["time"]
        result["whole_run"] = {
            "command": "/usr/bin/time -v " + figures["command"].replace(scratch, "TMP"),
            "peak_rss_mib": figures.get("peak_rss_mib"),
            "wall_seconds": figures.get("wall_seconds"),
            "returncode": figures.get("returncode"),
        }
    return result


def git_describe() -> str:
    return subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()


def write_markdown(data: dict[str, Any]) -> None:
    """Every label recorded in the JSON file, one table of steps per size and label."""
    lines = [
        "# Ingest memory",
        "",
        "Written by `python bench/ingest_memory.py --label LABEL [--sizes 5M,20M]` (merged into",
        "`ingest_memory.json`). Per step: the peak RSS during it and the RSS after it, in one",
        "process running the steps `training.run` takes before fitting; then the whole",
        "`train.py --no-evaluate --personal-list-depth 0` run's peak from `/usr/bin/time -v`.",
        "",
        "## Whole run",
        "",
        "| label | commit | size | steps' peak MiB | whole-run peak MiB | whole-run wall s |",
        "|---|---|---|---|---|---|",
    ]
    for label, entry in data.items():
        for size, result in entry["sizes"].items():
            whole = result.get("whole_run", {})
            lines.append(
                f"| {label} | `{entry['commit']}` | {size} | {result['steps_peak_mib']:,.0f} "
                f"| {whole.get('peak_rss_mib', float('nan')):,.0f} "
                f"| {whole.get('wall_seconds', float('nan'))} |"
            )
    for label, entry in data.items():
        for size, result in entry["sizes"].items():
            lines += [
                "",
                f"## {label}, {size} (`{entry['commit']}`, {entry['date_utc']})",
                "",
                f"Steps: `{result['steps_command']}`",
            ]
            if "whole_run" in result:
                lines.append(f"Whole run: `{result['whole_run']['command']}`")
            lines += ["", "| step | seconds | peak MiB | RSS after MiB |", "|---|---|---|---|"]
            for step in result["steps"]:
                lines.append(
                    f"| {step['step']} | {step.get('seconds', '')} "
                    f"| {step.get('peak_mib', '')} | {step['rss_mib']} |"
                )
    OUT_MD.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--label", default="current", help="name the results are kept under")
    parser.add_argument("--sizes", default=",".join(SIZES), help="comma-separated: 5M,20M")
    parser.add_argument("--steps-only", action="store_true", help="skip the whole train.py run")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_steps(args.child)))
        return
    sizes = [size.strip() for size in args.sizes.split(",") if size.strip()]
    for size in sizes:
        if size not in SIZES:
            parser.error(f"unknown size {size!r}; choose from {SIZES}")
    header = {"commit": git_describe(), "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}
    for size in sizes:
        result = measure_size(size, whole=not args.steps_only)
        print(json.dumps({size: result}, indent=1), file=sys.stderr)
        data = json.loads(OUT_JSON.read_text()) if OUT_JSON.exists() else {}
        entry = data.setdefault(args.label, {})
        entry.update(header)
        entry.setdefault("sizes", {})[size] = result
        OUT_JSON.write_text(json.dumps(data, indent=2) + "\n")
    write_markdown(json.loads(OUT_JSON.read_text()))


if __name__ == "__main__":
    main()
