"""What every recommendation response carries and counts, and which variant answers it.

- ``arm(shopper_id)``: the service (current model, an experiment's other model version, or
  its non-personal holdout) that answers this request, from the running experiment that
  covers the endpoint; control when there is none, no shopper id, or the shopper opted out
  or was forgotten.
- ``trace(body)``: signs the list into a ``recommendation_id``, names the variant, and
  counts the impression (in the worker; written every ``impressions_flush_seconds``).
- ``attribute(events, citations)``: which events cite a list that showed their item.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from flask import Flask, current_app, g, request

from .. import artifacts
from ..activity import Event
from ..activity.base import Attribution
from ..activity.performance import day_of
from ..errors import ConfigError, StoreError
from ..experiments import ENDPOINTS as EXPERIMENT_ENDPOINTS
from ..experiments import Experiment, parse
from ..experiments.stored import stored
from ..serving.service import RecommendationService
from ..serving.tracing import ImpressionCounter, ShownList, Tracer, counter_key
from .errors import ApiError

logger = logging.getLogger(__name__)

# Flask's endpoint names -> the names counters, ids and experiments use.
ENDPOINTS = {
    "items.also_bought": "also-bought",
    "items.bought_together": "bought-together",
    "users.recommendations": "recommendations",
    "users.buy_again": "buy-again",
    "users.wishlist_recommendations": "wishlist-recommendations",
    "users.page_you_made": "page-you-made",
    "recommendations.from_items": "from-items",
}
SECRET_NAME = "trace_secret"
RETRY_SECONDS = 5.0


@dataclass(frozen=True)
class Citation:
    """What an event says about the list it followed."""

    recommendation_id: str
    quantity: float
    price: float | None


class Arm(NamedTuple):
    """Who answers a request: ``service``, and the experiment's variant (empty: none). A
    named tuple: one is made per response, and a frozen dataclass takes several times
    longer to build."""

    service: RecommendationService
    experiment: str = ""
    variant: str = ""
    strategy: str | None = None
    shopper_id: str | None = None


# What ``trace`` reads for a request no ``arm`` call placed (``service`` is not read).
_CONTROL = Arm(None)  # type: ignore[arg-type]


class Experiments:
    """The running experiments as this worker last read them from the store (every
    ``refresh_seconds``; while the store is away, the last list read stands)."""

    def __init__(self, refresh_seconds: float) -> None:
        self.refresh_seconds = refresh_seconds
        self.running: list[Experiment] = []
        self._read_at = -float("inf")
        self._lock = threading.Lock()

    def current(self, store: Any, holder: Any) -> list[Experiment]:
        if time.monotonic() - self._read_at >= self.refresh_seconds and self._lock.acquire(
            blocking=False
        ):
            try:
                self._read_at = time.monotonic()
                self.running = [e for e, row in stored(store) if row.status == "running"]
                holder.keep_versions(
                    {v.model_version for e in self.running for v in e.variants if v.model_version}
                )
            except (StoreError, ConfigError, ValueError) as exc:
                logger.warning("experiments not reread (the last list read stands): %s", exc)
            finally:
                self._lock.release()
        return self.running

    def expire(self) -> None:
        """Reread at the next request (after this worker changed them)."""
        self._read_at = -float("inf")


class Tracing:
    """A worker's tracing state: the signer (its secret read once from the configuration or
    the store), the impression counter and the experiments."""

    def __init__(self, app: Flask) -> None:
        config = app.extensions["recommender_config"]
        self.enabled = config.tracing
        self.configured_secret = config.trace_secret
        self.max_age = config.attribution_days * 86400
        self.store = app.extensions["recommender_activity"]
        self.counter = ImpressionCounter(
            self.store.add_impressions, config.impressions_flush_seconds
        )
        self.experiments = Experiments(config.experiments_refresh_seconds)
        self._tracer: Tracer | None = None
        self._tried_at = -float("inf")

    @property
    def tracer(self) -> Tracer | None:
        """The signer; None while the store that keeps the shared secret cannot be reached."""
        if self._tracer is None and time.monotonic() - self._tried_at >= RETRY_SECONDS:
            self._tried_at = time.monotonic()
            try:
                secret = self.configured_secret or self.store.shared_secret(
                    SECRET_NAME, secrets.token_urlsafe(32)
                )
                self._tracer = Tracer(secret, self.max_age)
            except StoreError as exc:
                logger.warning("recommendation ids off until the store answers: %s", exc)
        return self._tracer


def tracing() -> Tracing:
    return current_app.extensions["recommender_tracing"]


def endpoint_name() -> str:
    flask_endpoint = request.endpoint or ""
    return ENDPOINTS.get(flask_endpoint, flask_endpoint)


def arm(
    service: RecommendationService, shopper_id: str | None, suppression_checked: bool = False
) -> Arm:
    """The variant that answers ``shopper_id`` on this endpoint (noted for ``trace``);
    ``suppression_checked``: the caller already knows the shopper may be personalised."""
    chosen = Arm(service, "", "", None, shopper_id)
    if shopper_id is not None:
        state = tracing()
        from .stores import activity_store, with_customers_file

        endpoint = endpoint_name()
        holder = current_app.extensions["recommender"]
        for experiment in state.experiments.current(state.store, holder):
            if not experiment.covers(endpoint):
                continue
            # Whatever the experiment says, an opted-out or forgotten shopper gets control.
            if not suppression_checked and with_customers_file(
                shopper_id, activity_store().suppression(shopper_id)
            ):
                break
            variant = experiment.assign(shopper_id)
            variant_service = (
                holder.version_service(variant.model_version) if variant.model_version else service
            )
            if variant_service is None:  # the version cannot be loaded: control, logged
                break
            chosen = Arm(
                variant_service, experiment.name, variant.name, variant.strategy, shopper_id
            )
            break
    g.arm = chosen
    return chosen


def holdout(chosen: Arm, k: int, filters: Any) -> dict[str, Any] | None:
    """The non-personal answer of a ``popular`` variant (None for the others)."""
    if chosen.strategy != "popular":
        return None
    return chosen.service.popular_answer(k, filters)


def trace(body: dict[str, Any]) -> None:
    """Name the list's variant; with tracing on, sign the list into ``recommendation_id``
    and count the impression. Every response runs this: it reads each value once (the
    app, the request and ``g`` are each looked up through their proxy once)."""
    state: Tracing = current_app.extensions["recommender_tracing"]
    chosen: Arm | None = g.get("arm")
    if chosen is not None and chosen.experiment:
        body["experiment"] = {"name": chosen.experiment, "variant": chosen.variant}
    shown_items = body.get("recommendations")
    if not state.enabled or not shown_items:
        return  # an empty list shows nothing
    if chosen is None:
        chosen = _CONTROL
    flask_endpoint = request.endpoint or ""
    shown = ShownList(
        ENDPOINTS.get(flask_endpoint, flask_endpoint),
        body["strategy"],
        body["model_version"],
        chosen.experiment,
        chosen.variant,
        chosen.shopper_id,
        [entry["item_id"] for entry in shown_items],
    )
    now = time.time()
    tracer = state.tracer
    if tracer is not None:
        body["recommendation_id"] = tracer.issue(shown, now)
    exposure = (
        (shown.experiment, shown.variant, shown.shopper_id)
        if shown.experiment and shown.shopper_id
        else None
    )
    state.counter.add(counter_key(day_of(now), shown), len(shown.items), exposure, now)


def attribute(
    events: Sequence[Event], citations: Sequence[Citation | None], prices: Any
) -> tuple[list[Attribution], dict[tuple[str, str, str], int]]:
    """The attributions of the events that cite a list which showed their item, and the
    counts of those that cite one and are not attributed, by (day, reason, type): ``forged``,
    ``expired``, ``not_shown``, ``unverified`` (no signer: the store away).
    ``prices(item_id)`` is the catalog price a purchase without one is valued at."""
    tracer = tracing().tracer
    attributions: list[Attribution] = []
    missed: Counter[tuple[str, str, str]] = Counter()
    for event, citation in zip(events, citations):
        if citation is None:
            continue
        shown = tracer.read(citation.recommendation_id) if tracer else "unverified"
        position = None if isinstance(shown, str) else shown.position(event.item_id)
        if isinstance(shown, str) or position is None:
            reason = shown if isinstance(shown, str) else "not_shown"
            missed[(day_of(event.timestamp), reason, event.type)] += 1
            continue
        price = citation.price if citation.price is not None else prices(event.item_id)
        revenue = (price or 0.0) * citation.quantity if event.type == "purchase" else 0.0
        attributions.append(
            Attribution(
                event.user_id,
                shown.shopper_id,
                event.item_id,
                event.type,
                event.timestamp,
                shown.endpoint,
                shown.strategy,
                shown.model_version,
                shown.experiment,
                shown.variant,
                position,
                shown.shown_at,
                citation.quantity,
                round(revenue, 6),
            )
        )
    return attributions, dict(missed)


def init_app(app: Flask) -> None:
    state = Tracing(app)
    app.extensions["recommender_tracing"] = state
    seed_experiments(app, app.extensions.get("recommender_seed_experiments") or {})


def start_experiment(
    store: Any, holder: Any, experiment: Experiment, running: Experiments | None = None
) -> bool:
    """Store ``experiment`` as running and pin the model versions it serves; True if new.

    Refused: a model version that cannot be loaded (400); a name already stored with
    another definition (409: a shopper's recorded variant would no longer be the one they
    see; give the new definition a new name); endpoints another running experiment covers
    (409: one experiment per endpoint, so their effects do not mix)."""
    for position, variant in enumerate(experiment.variants):
        if variant.model_version and holder.version_service(variant.model_version) is None:
            raise ApiError(
                400,
                "bad_parameter",
                f"variants[{position}].model_version: model version {variant.model_version} "
                "cannot be loaded (see the server log)",
            )
    for other, row in stored(store):
        if other.name == experiment.name:
            if other.definition() != experiment.definition():
                raise ApiError(
                    409,
                    "experiment_exists",
                    f"name: experiment {other.name} exists with another definition; "
                    "give the new definition a new name",
                )
        elif row.status == "running" and any(
            experiment.covers(e) and other.covers(e) for e in EXPERIMENT_ENDPOINTS
        ):
            raise ApiError(
                409,
                "experiment_overlap",
                f"endpoints: experiment {other.name} already runs on them; stop it first",
            )
    created = store.put_experiment(experiment.name, experiment.to_json(), time.time())
    for variant in experiment.variants:
        if variant.model_version:  # kept on disk while the experiment serves it
            artifacts.pin(holder.models_dir, variant.model_version, True)
    if running is not None:
        running.expire()  # this worker serves it from the next request
    return created


def seed_experiments(app: Flask, definitions: dict[str, Any]) -> None:
    """Start the config file's experiments that the store does not hold yet (one stopped
    through the API stays stopped; an edited table changes nothing once stored: a new
    definition needs a new name). One that cannot start stops the server's start-up."""
    if not definitions:
        return
    store = app.extensions["recommender_activity"]
    experiments = [parse(name, definition) for name, definition in definitions.items()]
    try:
        known = {experiment.name for experiment, _ in stored(store)}
        for experiment in experiments:
            if experiment.name in known:
                continue
            try:
                start_experiment(store, app.extensions["recommender"], experiment)
            except ApiError as exc:
                raise ConfigError(f"[experiments.{experiment.name}]: {exc.message}") from None
    except StoreError as exc:
        logger.warning("config file's experiments not stored (the store is away): %s", exc)
    finally:
        store.close()
