#!/usr/bin/env bash
# Personal answers with and without precomputed lists (issue 14), on the shipped log trained
# with --no-evaluate: wrk -t2 -c32 -d5s, two interleaved rounds, against /health in the same run.
# Usage: bash bench/serve_lists.sh | tee bench/results/serve_lists.txt
set -e
cd "$(dirname "$0")/.."
for depth in 200 0; do
  M=${TMPDIR:-/tmp}/serve_lists_models_d$depth
  rm -rf $M
  /usr/bin/time -f "%e s %M KB" .venv/bin/python train.py --no-evaluate --personal-list-depth $depth --models-dir $M --activity-db $M/a.sqlite3 > /dev/null 2> ${TMPDIR:-/tmp}/serve_lists_train_d$depth.err || { tail -3 ${TMPDIR:-/tmp}/serve_lists_train_d$depth.err; exit 1; }
  tail -1 ${TMPDIR:-/tmp}/serve_lists_train_d$depth.err
  .venv/bin/python serve.py --port 8765 --models-dir $M --workers 2 --threads 4 --activity-db $M/a.sqlite3 --request-log "" > ${TMPDIR:-/tmp}/serve_lists_serve_d$depth.log 2>&1 &
  PID=$!
  for i in $(seq 60); do curl -sf 127.0.0.1:8765/ready >/dev/null && break; sleep 0.5; done
  for round in 1 2; do
    for path in /health "/v1/items/85123A/also-bought?k=10" "/v1/users/17850/recommendations?k=10" "/v1/users/14911/recommendations?k=10"; do
      out=$(wrk -t2 -c32 -d5s --latency "http://127.0.0.1:8765$path")
      rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
      p99=$(echo "$out" | awk '$1=="99%" {print $2}')
      echo "depth=$depth round=$round $path rps=$rps p99=$p99"
    done
  done
  kill $PID; wait $PID 2>/dev/null || true
done
