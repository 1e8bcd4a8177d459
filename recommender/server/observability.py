"""Metrics (``GET /metrics``, Prometheus format) and one structured log line per request.

Under gunicorn every worker is a process, so prometheus_client runs in multiprocess mode:
``serve.py`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before the workers
start, each worker writes its samples there, and ``/metrics`` (answered by any worker) adds
them up. Without it (tests, ``--dev``) the process's own registry is used.

The request log line is JSON (endpoint, method, status, latency, strategy); ``serve.py`` puts
a queue between the logger and the output, so a request only enqueues its fields and a
background thread formats and writes the line.
"""

from __future__ import annotations

import logging
import os
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

request_log = logging.getLogger("recommender.requests")

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

    @app.after_request
    def record(response: Response) -> Response:
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
        REQUESTS.labels(endpoint, request.method, str(response.status_code)).inc()
        LATENCY.labels(endpoint).observe(elapsed)
        strategy = g.get("strategy")
        if strategy:
            STRATEGIES.labels(endpoint, strategy).inc()
        if request_log.isEnabledFor(logging.INFO):
            # The fields travel as they are; the writer thread turns them into the JSON line.
            request_log.info(
                "request",
                extra={
                    "fields": {
                        "endpoint": endpoint,
                        "method": request.method,
                        "status": response.status_code,
                        "ms": round(elapsed * 1000, 3),
                        "strategy": strategy,
                    }
                },
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
