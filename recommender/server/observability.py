"""Metrics (``GET /metrics``, Prometheus format) and one structured log line per request.

Under gunicorn every worker is a process, so prometheus_client runs in multiprocess mode:
``serve.py`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before the workers
start, each worker writes its samples there, and ``/metrics`` (answered by any worker) adds
them up. Without it (tests, ``--dev``) the process's own registry is used.

The request log line is JSON (endpoint, method, status, latency, strategy); a request only
appends its fields to a list (``RequestLog``), and a background thread formats and writes
the lines five times a second. Not through ``logging`` and not through a queue: a logged
record cost about 35 us a request in process (the caller's frame looked up, a LogRecord
filled in), and under gunicorn the writer thread woken for every line cost /health about
0.1 ms of CPU a request (bench/results/app_overhead.md).
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)


class RequestLog:
    """The per-request JSON lines: ``put`` appends a request's fields to a list (no lock, no
    thread woken: a wake-up per request cost more than the line); a daemon thread takes the
    list every ``interval`` seconds and writes it with one write and one flush."""

    def __init__(self, stream: Any, interval: float = 0.2) -> None:
        self.stream = stream
        self.interval = interval
        self._pending: list[dict[str, Any]] = []
        self.put = self._pending.append
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="request-log", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.write()
        self.write()

    def write(self) -> None:
        """Write what has been put so far: the first ``taken`` entries are copied, then
        removed; entries appended meanwhile stay (each list operation is atomic under the
        GIL, so requests never wait on a lock)."""
        taken = len(self._pending)
        if not taken:
            return
        batch = self._pending[:taken]
        del self._pending[:taken]
        try:
            self.stream.write("".join(json.dumps(fields) + "\n" for fields in batch))
            self.stream.flush()
        except (OSError, ValueError):  # a closed or full output: the lines are dropped
            pass

    def close(self) -> None:
        """Write what is pending and stop (at exit)."""
        self._stop.set()
        self._thread.join(timeout=5)


# Set by ``wsgi.configure_request_log`` in each server process; None: no request log.
request_log: RequestLog | None = None

REQUESTS = Counter(
    "recommender_requests", "HTTP requests answered", ["endpoint", "method", "status"]
)
LATENCY = Histogram(
    "recommender_request_duration_seconds",
    "Time to answer a request",
    ["endpoint"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
STRATEGIES = Counter(
    "recommender_responses", "Recommendation responses by strategy", ["endpoint", "strategy"]
)
EVENTS = Counter("recommender_events_stored", "Activity events stored")
MODEL_CREATED = Gauge(
    "recommender_model_created_timestamp_seconds",
    "Training time of the model being served",
    ["version"],
    multiprocess_mode="max",
)
MODEL_LOADED = Gauge(
    "recommender_model_loaded_timestamp_seconds",
    "When this model version was loaded",
    ["version"],
    multiprocess_mode="max",
)

STORE_UP = Gauge(
    "recommender_activity_store_up",
    "1 while the activity store answers, 0 while it cannot be reached",
    multiprocess_mode="livemin",
)
STORE_UNAVAILABLE = Counter(
    "recommender_activity_store_unavailable", "Store calls that found it unreachable"
)


def note_store_state(up: bool) -> None:
    """Called by the activity store when it finds the database away (or back)."""
    STORE_UP.set(1 if up else 0)
    if not up:
        STORE_UNAVAILABLE.inc()


def note_strategy(body: dict[str, Any]) -> None:
    """Remember the strategy of a recommendation response, for the metrics and the log line."""
    g.strategy = body.get("strategy")


def note_model(version: str, created_at: str | None) -> None:
    """Called when a worker loads a model version."""
    import datetime as dt

    if created_at:
        try:
            MODEL_CREATED.labels(version).set(dt.datetime.fromisoformat(created_at).timestamp())
        except ValueError:
            pass
    MODEL_LOADED.labels(version).set(time.time())


def init_app(app: Flask) -> None:
    STORE_UP.set(1)

    @app.before_request
    def start_timer() -> None:
        g.started = time.perf_counter()

    # The metrics' labelled children, looked up once per label values (prometheus_client's
    # ``labels`` takes a lock and validates the names on every call).
    counted: dict[tuple[str, str, int], Any] = {}
    timed: dict[str, Any] = {}
    by_strategy: dict[tuple[str, str], Any] = {}

    @app.after_request
    def record(response: Response) -> Response:
        context = g._get_current_object()
        elapsed = time.perf_counter() - getattr(context, "started", time.perf_counter())
        current = request._get_current_object()  # type: ignore[attr-defined]
        rule = current.url_rule
        endpoint = rule.rule if rule is not None else "unmatched"
        method, status = current.method, response.status_code
        key = (endpoint, method, status)
        if (requests_child := counted.get(key)) is None:
            requests_child = counted[key] = REQUESTS.labels(endpoint, method, str(status))
        requests_child.inc()
        if (latency_child := timed.get(endpoint)) is None:
            latency_child = timed[endpoint] = LATENCY.labels(endpoint)
        latency_child.observe(elapsed)
        strategy = getattr(context, "strategy", None)
        if strategy:
            if (strategy_child := by_strategy.get((endpoint, strategy))) is None:
                strategy_child = by_strategy[(endpoint, strategy)] = STRATEGIES.labels(
                    endpoint, strategy
                )
            strategy_child.inc()
        if request_log is not None:
            # The fields travel as they are; the writer thread turns them into the JSON line.
            request_log.put(
                {
                    "endpoint": endpoint,
                    "method": method,
                    "status": status,
                    "ms": round(elapsed * 1000, 3),
                    "strategy": strategy,
                }
            )
        return response

    @app.get("/metrics")
    def metrics() -> Response:
        registry = None
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        payload = generate_latest(registry) if registry is not None else generate_latest()
        return Response(payload, mimetype=CONTENT_TYPE_LATEST)
