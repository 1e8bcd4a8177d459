#!/usr/bin/env bash
# Every benchmark, as `make bench` runs it: training at 1M, 5M and 20M lines (ours against
# implicit alone), then serving (wrk, 10 s per run), model load time and memory per worker.
# Results: bench/results/{training,serving,memory}.json; generated logs and models: bench/.cache/.
# Needs wrk and /usr/bin/time (Debian: apt-get install -y wrk time). Takes about 30-40 minutes
# on 2 cores; SIZES=1M,5M bench/run_all.sh for a shorter run; TRAIN_ROUNDS=3 runs each training
# pair three times, alternating (the ratios docs/performance.md reports are such medians).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
SIZES="${SIZES:-1M,5M,20M}"
for tool in wrk /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y wrk time" >&2; exit 2; }
done
mkdir -p bench/results bench/.cache
"$PY" bench/train_scale.py --sizes "$SIZES" --timeout "${TRAIN_TIMEOUT:-1800}" --rounds "${TRAIN_ROUNDS:-1}"
"$PY" bench/serve_bench.py --repeat "${REPEAT:-3}" --duration 10
"$PY" bench/tracing_cost.py --repeat "${REPEAT:-3}" --duration 5
"$PY" bench/summarize.py
echo "results in bench/results/ (see bench/results/SUMMARY.md for how to read them)"
