#!/usr/bin/env python3
"""Training cost at scale: our whole train.py against implicit's two fits alone, same log.

    python bench/train_scale.py                 # 1M, 5M and 20M lines
    python bench/train_scale.py --sizes 1M,5M
    python bench/train_scale.py --sizes 5M --rounds 3   # alternating; medians of the ratios

For each size: generate the synthetic log once (bench/.cache/log_<size>.parquet), then run
under ``/usr/bin/time -v``
  (a) python train.py --data LOG --models-dir TMP --no-evaluate --personal-list-days D
      (ingest, clean, kNN, ALS, bought-together, the "personal" item model, the precomputed
      lists of the customers active within D days, save)
  (b) python bench/implicit_only.py LOG --list-days D   (CosineRecommender(K=50).fit +
      ALS(64, 15 it).fit, then ALS.recommend(userids, user_items[userids], N=200) for the same
      customers: implicit's own batch recommendation)
and merge into bench/results/training.json: wall seconds, peak RSS, our step timings (from
the training log), an RSS timeline per step, ours_wall / (implicit cosine fit + ALS fit),
our list pass / implicit's batch recommend, and ours_wall / (implicit's fits + that
recommend). The full training logs are kept in bench/.cache/train_<size>.log.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))
from recommender.config import TrainConfig  # noqa: E402

from common import (
    CACHE,
    PYTHON,
    RESULTS,
    ROOT,
    SIZES,
    ensure_log,
    git_state,
    machine,
    timed_run,
    update_json,
    wait_for_quiet,  # noqa: E402
)

TRAIN_SIZES = ("1M", "5M", "20M")
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (\w+) ([\w.]+): (.*)$")
KNN_LINE = re.compile(
    r"^(item-knn \((\w+)\)) \(K=(\d+)\) on (\d+) x (\d+): (\d+) items with neighbours, (\d+) pairs, ([\d.]+)s$"
)
ALS_LINE = re.compile(r"^als \(.*\) on (\d+) x (\d+) \(nnz (\d+)\): ([\d.]+)s$")
FINISHED = re.compile(r"^training finished in ([\d.]+)s")
LISTS_LINE = re.compile(r"^personal lists: (\d+) customers x (\d+) items in ([\d.]+)s$")
KNN_ROLES = (
    "also_bought (customers x items, K=50)",
    "bought_together (orders x items, K=50)",
    "personal (customers x items, K=100)",
)
TARGET_RATIO = 1.5
TARGET_PEAK_GIB = {"5M": 1.5, "20M": 3.0}


def parse_training_log(
    stderr: list[tuple[float, str]], timeline: list[tuple[float, float]]
) -> dict[str, Any]:
    """Step timings from our log lines, and each log line's gap and peak RSS since the previous one."""
    steps: dict[str, float] = {}
    phases: list[dict[str, Any]] = []
    previous_at, previous_stamp = 0.0, None
    knn_seen = 0
    for arrived, line in stderr:
        match = LOG_LINE.match(line)
        if not match:
            continue
        stamp = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
        message = match.group(4)
        if m := KNN_LINE.match(message):
            role = KNN_ROLES[knn_seen] if knn_seen < len(KNN_ROLES) else f"knn #{knn_seen + 1}"
            steps[f"item-knn {role}"] = float(m.group(8))
            knn_seen += 1
        elif m := ALS_LINE.match(message):
            steps["als"] = float(m.group(4))
        elif m := LISTS_LINE.match(message):
            steps["personal_lists"] = float(m.group(3))
        elif m := FINISHED.match(message):
            steps["training_finished"] = float(m.group(1))
        gap = (stamp - previous_stamp).total_seconds() if previous_stamp else arrived
        peak = max((rss for t, rss in timeline if previous_at <= t <= arrived + 0.5), default=None)
        phases.append(
            {
                "until_log_line": message[:160],
                "seconds_since_previous_line": round(gap, 2),
                "peak_rss_mib_in_between": peak,
                "at_seconds": round(arrived, 1),
            }
        )
        previous_at, previous_stamp = arrived, stamp
    return {"steps": steps, "phases": phases}


def run_size(
    size: str,
    timeout: float,
    keep_models: bool,
    max_rss_mib: float | None,
    list_days: int,
    quiet_wait: float = 300.0,
    rounds: int = 1,
) -> dict[str, Any]:
    """Ours and implicit's, ``rounds`` times, alternating which goes first (ours first in the
    first round), so that a machine that slows down or speeds up mid-run weighs on both.
    With more than one round, every ratio is the median of the finished rounds' ratios (each
    round's two runs are next to each other), the peak is the largest, and ``rounds`` lists
    each (a round our run did not finish, with why)."""
    log, meta = ensure_log(size)
    code_at_start = git_state()  # train.py imports the project as it is now
    run = {
        "ours": partial(
            _run_ours, size, log, timeout, keep_models, max_rss_mib, list_days, quiet_wait
        ),
        "implicit": partial(_run_implicit, size, log, timeout, max_rss_mib, list_days, quiet_wait),
    }
    measured = []  # per round: (our figures, whether we finished, implicit's figures, order)
    for number in range(rounds):
        order = ["ours", "implicit"] if number % 2 == 0 else ["implicit", "ours"]
        done = {name: run[name]() for name in order}
        measured.append((*done["ours"], done["implicit"], order))
    ours_result, ours_ok, base_result, _ = measured[0]
    result: dict[str, Any] = {
        "log": meta,
        "ours": ours_result,
        "implicit_only": base_result,
        "measured": {"date_utc": machine()["date_utc"], "code": code_at_start},
    }
    if not ours_ok:
        result["finding"] = _failure(ours_result, timeout)
        return result
    ratios_of = [_ratios(o, b) if ok else {} for o, ok, b, _ in measured]
    if rounds > 1:
        result["rounds"] = [
            {
                "order": order,
                "ours_wall_seconds": o.get("wall_seconds"),
                "ours_personal_lists_seconds": o.get("steps", {}).get("personal_lists"),
                "ours_peak_rss_mib": o.get("peak_rss_mib"),
                "implicit_fits_seconds": b.get("fits_seconds"),
                "implicit_recommend_seconds": b.get("recommend_seconds"),
                **ratios,
            }
            if ok
            else {"order": order, "finding": _failure(o, timeout)}
            for (o, ok, b, order), ratios in zip(measured, ratios_of)
        ]
    per_round = [ratios for ratios, (_, ok, _, _) in zip(ratios_of, measured) if ok]
    result.update(
        {
            key: round(statistics.median(r[key] for r in per_round), 2)
            for key in per_round[0]
            if all(key in r for r in per_round)
        }
    )
    if size in TARGET_PEAK_GIB:
        peak = max(o["peak_rss_mib"] for o, ok, _, _ in measured if ok)
        result["targets"] = _targets(result, peak, TARGET_PEAK_GIB[size], len(per_round))
    return result


def _run_ours(
    size: str,
    log: Path,
    timeout: float,
    keep_models: bool,
    max_rss_mib: float | None,
    list_days: int,
    quiet_wait: float,
) -> tuple[dict[str, Any], bool]:
    """train.py --no-evaluate under /usr/bin/time: its figures and whether it finished."""
    models = CACHE / f"models_{size}"
    shutil.rmtree(models, ignore_errors=True)
    ours_cmd = [
        PYTHON,
        str(ROOT / "train.py"),
        "--data",
        str(log),
        "--models-dir",
        str(models),
        "--no-evaluate",
        "--personal-list-days",
        str(list_days),
    ]
    print(f"[bench] {size}: train.py ...", file=sys.stderr, flush=True)
    quiet_ours = wait_for_quiet(quiet_wait)
    ours = timed_run(
        ours_cmd, CACHE / f"train_{size}.log", timeout=timeout, max_rss_mib=max_rss_mib
    )
    parsed = parse_training_log(ours["stderr"], ours["rss_timeline"])
    ours_result = {
        **ours["time"],
        "quiet_before": quiet_ours,
        **parsed,
        "rss_timeline_mib": _thin(ours["rss_timeline"], 120),
    }
    if ours["time"]["returncode"] != 0:
        tail = [line for _, line in ours["stderr"] if not line.startswith("\t")][-8:]
        ours_result["error_tail"] = tail
    if not keep_models:
        shutil.rmtree(models, ignore_errors=True)
    print(f"[bench] {size}: ours {json.dumps(ours['time'])}", file=sys.stderr, flush=True)
    return ours_result, ours["time"]["returncode"] == 0


def _run_implicit(
    size: str,
    log: Path,
    timeout: float,
    max_rss_mib: float | None,
    list_days: int,
    quiet_wait: float,
) -> dict[str, Any]:
    """bench/implicit_only.py under /usr/bin/time: implicit's fits and batch recommend."""
    print(f"[bench] {size}: implicit_only.py ...", file=sys.stderr, flush=True)
    base_cmd = [
        PYTHON,
        str(ROOT / "bench" / "implicit_only.py"),
        str(log),
        "--list-days",
        str(list_days),
    ]
    quiet_base = wait_for_quiet(quiet_wait)
    base = timed_run(
        base_cmd, CACHE / f"implicit_only_{size}.log", timeout=timeout, max_rss_mib=max_rss_mib
    )
    base_result = {**base["time"], "quiet_before": quiet_base}
    try:
        base_result.update(json.loads(base["stdout"].strip().splitlines()[-1]))
    except (IndexError, json.JSONDecodeError):
        base_result["error"] = base["stdout"][-2000:]
    print(f"[bench] {size}: implicit {json.dumps(base_result)}", file=sys.stderr, flush=True)
    return base_result


def _ratios(ours_result: dict[str, Any], base_result: dict[str, Any]) -> dict[str, float]:
    """One round's ratios of our run to implicit's (those its figures allow)."""
    fits = base_result.get("fits_seconds")
    wall = ours_result.get("wall_seconds")
    if not fits or not wall:
        return {}
    steps = ours_result["steps"]
    out = {"ratio_ours_wall_to_implicit_fits": round(wall / fits, 2)}
    if "personal_lists" in steps:
        # The lists score every customer against every item (serving's precomputed answers):
        # work implicit's two fits do not do, shown apart so both figures are visible.
        out["ratio_ours_wall_without_lists_to_implicit_fits"] = round(
            (wall - steps["personal_lists"]) / fits, 2
        )
    recommend = base_result.get("recommend_seconds")
    if recommend:
        # The real anchor: implicit's fits plus its own batch recommendation for the
        # customers we precompute lists for.
        out["ratio_ours_wall_to_implicit_fits_plus_recommend"] = round(wall / (fits + recommend), 2)
        if steps.get("personal_lists") is not None:
            out["ratio_lists_to_implicit_recommend"] = round(steps["personal_lists"] / recommend, 2)
    out["ratio_ours_wall_to_implicit_wall"] = round(wall / base_result["wall_seconds"], 2)
    if "als" in steps and base_result.get("als_fit_seconds"):
        out["ratio_our_als_step_to_implicit_als_fit"] = round(
            steps["als"] / base_result["als_fit_seconds"], 2
        )
    knn = steps.get(f"item-knn {KNN_ROLES[0]}")
    if knn and base_result.get("cosine_fit_seconds"):
        out["ratio_our_also_bought_knn_to_implicit_cosine_fit"] = round(
            knn / base_result["cosine_fit_seconds"], 2
        )
    return out


def _targets(
    result: dict[str, Any], peak_mib: float, limit_gib: float, rounds: int
) -> dict[str, dict[str, Any]]:
    """The issue's targets against the (median) ratios and the (largest) peak."""
    targets = {}
    named = {
        "ours_wall <= 1.5 x implicit fits": "ratio_ours_wall_to_implicit_fits",
        "list pass <= 1.5 x implicit batch recommend": "ratio_lists_to_implicit_recommend",
        "ours_wall <= 1.5 x (implicit fits + batch recommend)": (
            "ratio_ours_wall_to_implicit_fits_plus_recommend"
        ),
    }
    for name, key in named.items():
        if key in result:
            targets[name] = {"met": result[key] <= TARGET_RATIO, "value": result[key]}
            if rounds > 1:
                targets[name]["of"] = f"median of {rounds} rounds"
    targets[f"peak RSS < {limit_gib:g} GiB"] = {
        "met": peak_mib < limit_gib * 1024,
        "value_mib": peak_mib,
    }
    return targets


def _failure(ours_result: dict[str, Any], timeout: float) -> str:
    if ours_result.get("stopped_for_memory_at_rss_mib"):
        why = (
            f"stopped by the benchmark at RSS {ours_result['stopped_for_memory_at_rss_mib']} MiB"
            " (--max-rss-mib)"
        )
    elif ours_result.get("timed_out"):
        why = f"timed out after {timeout:.0f}s and was stopped"
    else:
        why = f"exit code {ours_result.get('returncode')}"
    return "train.py did not finish: " + why


def _thin(timeline: list[tuple[float, float]], points: int) -> list[list[float]]:
    if len(timeline) <= points:
        return [list(p) for p in timeline]
    step = len(timeline) / points
    picked = [timeline[int(i * step)] for i in range(points)]
    peak = max(timeline, key=lambda p: p[1])
    return [list(p) for p in sorted(set(picked) | {peak, timeline[-1]})]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", default=",".join(TRAIN_SIZES), help="comma-separated subset of 1M,5M,20M"
    )
    parser.add_argument(
        "--timeout", type=float, default=1800.0, help="seconds before a run is stopped (SIGTERM)"
    )
    parser.add_argument(
        "--max-rss-mib",
        type=float,
        default=16384.0,
        help="stop a run whose RSS passes this (MiB; 0 = no limit); the machine is shared",
    )
    parser.add_argument(
        "--keep-models", action="store_true", help="keep bench/.cache/models_<size>"
    )
    parser.add_argument(
        "--list-days",
        type=int,
        default=TrainConfig.personal_list_days,
        help="train.py --personal-list-days, and the customers implicit recommends for",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=300.0,
        help="seconds to wait for an idle machine before each run (recorded with it)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run ours and implicit's this many times, alternating which goes first; "
        "ratios are the medians of the rounds'",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "training.json")
    args = parser.parse_args(argv)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    for size in sizes:
        if size not in TRAIN_SIZES:
            parser.error(f"unknown size {size!r}; choose from {TRAIN_SIZES}")
    update_json(
        args.out,
        None,
        {
            "about": "python bench/train_scale.py [--sizes ...] (each size is merged in when run); synthetic logs from bench/synthetic.py "
            "(seed 42). ours = whole train.py --no-evaluate (ingest, clean, 3 kNN tables, ALS, save); "
            "implicit_only = pandas read + factorize + CosineRecommender(K=50).fit + ALS(64 f, 15 it).fit, "
            "then ALS.recommend(userids, user_items[userids], N=200) for the customers that get lists. "
            "ratio = ours wall / (implicit cosine fit + ALS fit); ratio_lists_to_implicit_recommend = our list "
            "pass / that recommend; ratio_ours_wall_to_implicit_fits_plus_recommend = ours wall / (fits + recommend).",
            "machine": machine(),
        },
    )
    for size in sizes:
        lines, users, items = SIZES[size]
        result = run_size(
            size,
            args.timeout,
            args.keep_models,
            args.max_rss_mib or None,
            args.list_days,
            args.quiet_wait,
            args.rounds,
        )
        result["size"] = {"lines": lines, "users": users, "items": items}
        result["personal_list_days"] = args.list_days
        update_json(args.out, "sizes", {size: result})
    print(json.dumps(json.loads(args.out.read_text())["sizes"], indent=1)[:4000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
