#!/usr/bin/env python3
"""Write bench/results/SUMMARY.md from the JSON results (tables and target verdicts).

    python bench/summarize.py

Hand-written observations in bench/results/FINDINGS.md (if present) are appended.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def verdict(met: bool | None) -> str:
    return "-" if met is None else ("**met**" if met else "**missed**")


def training_section(data: dict[str, Any]) -> list[str]:
    out = [
        "## Training: whole `train.py` against implicit's two fits",
        "",
        "Command: `python bench/train_scale.py --sizes 1M,5M,20M` (each size runs "
        "`/usr/bin/time -v python train.py --data bench/.cache/log_<size>.parquet --models-dir <tmp> --no-evaluate` "
        "and `/usr/bin/time -v python bench/implicit_only.py bench/.cache/log_<size>.parquet`).",
        "",
        "| size (lines / users / items) | nnz | ours wall s | ours peak RSS MiB | implicit-only wall s | "
        "implicit peak MiB | cosine fit s | ALS fit s | ours / (cosine + ALS fits) | of which lists s | "
        "ours without lists / fits | code |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size, entry in data.get("sizes", {}).items():
        ours, base = entry.get("ours", {}), entry.get("implicit_only", {})
        s = entry.get("size", {})
        ratio = entry.get("ratio_ours_wall_to_implicit_fits")
        code = entry.get("measured", {}).get("code", {}).get("head", "")
        wall = fmt(ours.get("wall_seconds"))
        if entry.get("finding"):
            wall += f" ({entry['finding']})"
        out.append(
            f"| {size} ({fmt(s.get('lines'))} / {fmt(s.get('users'))} / {fmt(s.get('items'))}) | "
            f"{fmt(base.get('nnz'))} | {wall} | {fmt(ours.get('peak_rss_mib'))} | "
            f"{fmt(base.get('wall_seconds'))} | {fmt(base.get('peak_rss_mib'))} | "
            f"{fmt(base.get('cosine_fit_seconds'), 2)} | {fmt(base.get('als_fit_seconds'), 2)} | "
            f"{fmt(ratio, 2)} | {fmt(ours.get('steps', {}).get('personal_lists'), 1)} | "
            f"{fmt(entry.get('ratio_ours_wall_without_lists_to_implicit_fits'), 2)} | {code} |"
        )
    out += [
        "",
        "Our steps, from the training log (seconds; the gap before each log line, and the peak RSS sampled "
        "in that gap):",
        "",
    ]
    for size, entry in data.get("sizes", {}).items():
        phases = entry.get("ours", {}).get("phases", [])
        if not phases:
            continue
        out += [
            f"**{size}**",
            "",
            "| step (log line it ends with) | seconds | peak RSS MiB in step |",
            "|---|---|---|",
        ]
        for phase in phases:
            line = phase["until_log_line"].replace("|", "/")
            line = line if len(line) <= 110 else line[:107] + "..."
            out.append(
                f"| {line} | {fmt(phase['seconds_since_previous_line'], 2)} | "
                f"{fmt(phase['peak_rss_mib_in_between'])} |"
            )
        out.append("")
    return out


def serving_section(data: dict[str, Any]) -> list[str]:
    model = data.get("model", {})
    counts = model.get("counts") or {}
    out = [
        "## Serving throughput and latency",
        "",
        f"Command: `python bench/serve_bench.py` -> server `{data.get('server_command', '')}`; "
        "each endpoint `wrk -t2 -c32 -d10s --latency`, median of the runs. **wrk shares the 2 cores with the "
        "server.** Model: "
        + f"{fmt(counts.get('items'))} items, {fmt(counts.get('customers'))} customers, "
        f"{fmt(model.get('npy_mib'))} MiB of .npy (version {model.get('version')}, code {data.get('machine', {}).get('code', {}).get('head')}).",
        "",
        "| endpoint | rps | p50 ms | p99 ms | rps / health | server CPU ms/request | >= 70% of /health | p99 < 10 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s in data.get("endpoints", {}).items():
        out.append(
            f"| {name} | {fmt(s.get('rps'))} | {fmt(s.get('p50_ms'), 2)} | {fmt(s.get('p99_ms'), 2)} | "
            f"{fmt(s.get('ratio_to_health_rps'), 3)} | {fmt(s.get('server_cpu_ms_per_request'), 2)} | "
            f"{'-' if name == 'GET /health' else verdict(s.get('meets_70pct_of_health'))} | "
            f"{verdict(s.get('meets_p99_under_10ms'))} |"
        )
    after = data.get("health_after_all_runs") or {}
    out += [
        "",
        f"/health again after all runs: {fmt(after.get('rps'))} rps, p99 {fmt(after.get('p99_ms'), 2)} ms.",
        "",
    ]
    return out


def memory_section(data: dict[str, Any]) -> list[str]:
    load = data.get("load", {})
    out = [
        "## Model load time and memory per worker",
        "",
        "Command: `python bench/serve_bench.py` (load: `RecommendationService(artifacts.load_current(M))` in a fresh "
        "process, median of 3, page cache warm; memory: PSS/RSS from `/proc/PID/smaps_rollup` after requests to "
        "every endpoint, `--threads 4`).",
        "",
        f"Model load: median **{fmt(load.get('load_seconds_median'), 3)} s** (runs: "
        + ", ".join(fmt(r.get("load_seconds"), 3) for r in load.get("runs", []))
        + f"; imports before it {fmt(load.get('import_seconds_median'), 3)} s).",
        "",
        "| workers | total PSS MiB | total RSS MiB | master PSS | PSS per worker | worker Private_Dirty |",
        "|---|---|---|---|---|---|",
    ]
    for count, w in data.get("workers", {}).items():
        out.append(
            f"| {count} | {fmt(w['total_pss_mib'])} | {fmt(w['total_rss_mib'])} | {fmt(w['master']['pss_mib'])} | "
            + ", ".join(fmt(x) for x in w["pss_per_worker_mib"])
            + " | "
            + ", ".join(fmt(x.get("private_dirty_mib")) for x in w["workers"])
            + " |"
        )
    out += [
        "",
        f"Model on disk (sum of .npy): {fmt(data.get('model_npy_mib'))} MiB; PSS added per worker (1 -> 4 workers, "
        f"averaged): **{fmt(data.get('pss_added_per_worker_mib'))} MiB** = "
        f"{fmt(100 * (data.get('added_worker_share_of_model') or 0))}% of the model's size; 1 -> 2 workers: "
        f"{fmt(data.get('pss_added_per_worker_1_to_2_mib'))} MiB.",
        "",
    ]
    return out


def targets_section(
    training: dict[str, Any] | None, serving: dict[str, Any] | None, memory: dict[str, Any] | None
) -> list[str]:
    out = ["## Targets", "", "| target | result | verdict |", "|---|---|---|"]
    if serving:
        eps = {n: s for n, s in serving["endpoints"].items() if n != "GET /health"}
        worst_share = min(eps.items(), key=lambda kv: kv[1].get("ratio_to_health_rps", 0))
        worst_p99 = max(eps.items(), key=lambda kv: kv[1].get("p99_ms", 0))
        health = serving["endpoints"]["GET /health"]
        out.append(
            f"| every endpoint >= 70% of /health rps (32 connections, 50,000 items) | lowest: {worst_share[0]} "
            f"{fmt(100 * worst_share[1].get('ratio_to_health_rps', 0))}% | "
            f"{verdict(serving['targets']['every endpoint >= 70% of /health rps'])} |"
        )
        out.append(
            f"| every endpoint p99 < 10 ms | highest: {worst_p99[0]} {fmt(worst_p99[1].get('p99_ms'), 1)} ms "
            f"(/health itself {fmt(health.get('p99_ms'), 1)} ms) | "
            f"{verdict(serving['targets']['every endpoint p99 < 10 ms'])} |"
        )
    for size, limit in (("5M", "1.5 GiB"), ("20M", "3 GiB")):
        entry = (training or {}).get("sizes", {}).get(size)
        if not entry:
            continue
        if "targets" in entry:
            t = entry["targets"]
            out.append(
                f"| {size} lines: train.py <= 1.5 x implicit's two fits | "
                f"{fmt(t['ours_wall <= 1.5 x implicit fits']['value'], 2)} x "
                f"({fmt(entry.get('ratio_ours_wall_without_lists_to_implicit_fits'), 2)} x without the lists) | "
                f"{verdict(t['ours_wall <= 1.5 x implicit fits']['met'])} |"
            )
            peak = t.get(f"peak RSS < {limit}") or {}
            out.append(
                f"| {size} lines: peak RSS < {limit} | {fmt(peak.get('value_mib'))} MiB | "
                f"{verdict(peak.get('met'))} |"
            )
        else:
            out.append(
                f"| {size} lines: train.py <= 1.5 x implicit's two fits, peak < {limit} | "
                f"{entry.get('finding', '')} (peak RSS {fmt(entry.get('ours', {}).get('peak_rss_mib'))} MiB) | "
                "**missed** |"
            )
    if memory:
        out.append(
            f"| model load < 1 s | {fmt(memory['load'].get('load_seconds_median'), 3)} s | "
            f"{verdict(memory['targets']['model load < 1 s'])} |"
        )
        out.append(
            f"| each added worker < 10% of the model's size in PSS | {fmt(memory['pss_added_per_worker_mib'])} MiB "
            f"per worker vs limit {fmt(0.1 * memory['model_npy_mib'])} MiB | "
            f"{verdict(memory['targets']['each added worker < 10% of model size in PSS'])} |"
        )
    return out + [""]


def main() -> int:
    training, serving, memory = load("training.json"), load("serving.json"), load("memory.json")
    lines = [
        "# Benchmarks",
        "",
        "Generated by `python bench/summarize.py` from `bench/results/*.json`; everything is reproduced by "
        "`bench/run_all.sh` (`make bench`). Machine: 2 vCPU, 24 GiB, shared with other work (each result "
        "records the CPU other processes used while it ran). Synthetic logs: `bench/synthetic.py` (seed 42; "
        "Zipf-Mandelbrot item popularity, exponent 1.1, offset 20; Pareto(2) customer activity; baskets of "
        "1-10 lines; one year).",
        "",
    ]
    lines += targets_section(training, serving, memory)
    if training:
        lines += training_section(training)
    if serving:
        lines += serving_section(serving)
    if memory:
        lines += memory_section(memory)
    findings = RESULTS / "FINDINGS.md"
    if findings.exists():
        lines += [findings.read_text().rstrip(), ""]
    (RESULTS / "SUMMARY.md").write_text("\n".join(lines))
    print(f"wrote {RESULTS / 'SUMMARY.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
