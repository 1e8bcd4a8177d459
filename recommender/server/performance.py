"""What recommendations earn, for the shop's staff (admin token): experiments (start,
stop, results) and the dashboard's figures and plots."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from flask import Blueprint, Response, current_app, jsonify

from .. import artifacts, dashboard
from ..errors import ConfigError
from ..experiments import analyse, parse
from ..experiments.stored import describe, report, stored
from .admin import admin_required
from .errors import ApiError
from .params import bad, json_body, parse_float, query_int, query_value
from .stores import activity_store
from .tracing import start_experiment, tracing

bp = Blueprint("performance", __name__, url_prefix="/v1/admin")


@bp.get("/experiments")
@admin_required
def list_experiments() -> Response:
    return jsonify({"experiments": [describe(e, row) for e, row in stored(activity_store())]})


@bp.put("/experiments/<name>")
@admin_required
def put_experiment(name: str) -> tuple[Response, int]:
    """Start an experiment: ``{"variants": [{"name": "control", "weight": 50}, {"name":
    "new", "weight": 50, "model_version": "..."}]}``. 201 when new; 200 when the same
    definition was already stored (a stopped one runs again). Rules in ``start_experiment``."""
    try:
        experiment = parse(name, json_body())
    except ConfigError as exc:
        raise ApiError(400, "bad_parameter", str(exc)) from None
    created = start_experiment(
        activity_store(), current_app.extensions["recommender"], experiment, tracing().experiments
    )
    body = {"name": name, "status": "running", **experiment.definition()}
    return jsonify(body), 201 if created else 200


@bp.post("/experiments/<name>/stop")
@admin_required
def stop_experiment(name: str) -> Response:
    """Stop an experiment: every shopper gets the current model again (on every server
    within ``experiments_refresh_seconds``); its results stay readable, and the versions
    it served may be pruned again. Stopping a stopped one answers the same (a retry is
    harmless); an unknown name is a 404."""
    store = activity_store()
    experiments = stored(store)
    stopping = next((e for e, _ in experiments if e.name == name), None)
    if stopping is None:
        raise ApiError(404, "not_found", f"name: no experiment {name!r}")
    store.stop_experiment(name, time.time())  # a stopped one stays stopped: a retry is harmless
    still_served = {
        v.model_version
        for e, row in experiments
        if row.status == "running" and e.name != name
        for v in e.variants
        if v.model_version
    }
    models_dir = current_app.extensions["recommender"].models_dir
    for variant in stopping.variants:
        if variant.model_version and variant.model_version not in still_served:
            artifacts.pin(models_dir, variant.model_version, False)
    tracing().experiments.expire()
    return jsonify({"name": name, "status": "stopped"})


@bp.get("/experiments/<name>/results")
@admin_required
def experiment_results(name: str) -> Response:
    """Per variant, with 95% intervals, and each against control (``lift``: the relative
    lift the sample size is for; the experiment's own by default)."""
    raw_lift = query_value("lift")
    lift = None if raw_lift is None else parse_float("lift", raw_lift)
    if lift is not None and not 0 < lift <= 10:
        raise bad("lift", "must be more than 0 and at most 10")
    found = report(activity_store(), name, lift)
    if found is None:
        raise ApiError(404, "not_found", f"name: no experiment {name!r}")
    return jsonify(found)


@bp.get("/performance")
@admin_required
def performance() -> Response:
    """The dashboard's figures over the last ``days`` days (UTC), and the experiments."""
    summary = dashboard.summarise(activity_store().daily_performance(_since(_days())))
    summary["experiments"] = [describe(e, row) for e, row in stored(activity_store())]
    summary["missing"] = _missing(summary)
    return jsonify(summary)


@bp.get("/performance/plots.svg")
@admin_required
def performance_plots() -> Response:
    """The dashboard's plots, drawn on the server (SVG)."""
    store = activity_store()
    summary = dashboard.summarise(store.daily_performance(_since(_days())))
    results = [
        analyse(experiment, store.experiment_outcomes(experiment.name), row.status)
        for experiment, row in stored(store)[-3:]
    ]
    return Response(dashboard.render_svg(summary, results), mimetype="image/svg+xml")


def _days() -> int:
    days = query_int("days", 30, 1, 366)
    assert days is not None
    return days


def _since(days: int) -> str:
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=days - 1)
    return start.strftime("%Y-%m-%d")


def _missing(summary: dict[str, Any]) -> list[str]:
    """What the page cannot show yet, in words."""
    missing = []
    if not current_app.extensions["recommender_config"].tracing:
        missing.append("tracing is off (tracing = false): nothing is counted")
    if not summary["days"]:
        missing.append(
            "no recommendations shown yet: lists are counted as the shop calls the API "
            "(written every few seconds)"
        )
    elif not summary["totals"]["clicks"] and not summary["totals"]["purchases"]:
        missing.append(
            "no attributed events yet: the shop must send recommendation_id with the views, "
            "carts and purchases that follow a list (POST /v1/events)"
        )
    if not summary["experiments"]:
        missing.append("no experiments yet (PUT /v1/admin/experiments/<name>)")
    return missing
