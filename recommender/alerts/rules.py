"""The alert rules: "back in stock", "price dropped" and "new for you", for the customers
who showed interest (wish list, recent views and carts) and among each one's personal picks.
They read the activity store (interest, the catalog's price and availability history) and the
model (names, prices, personal rankings, first sales); ``GET /v1/users/<id>/alerts`` shows
them and ``run`` delivers them."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..activity import ActivityStore, CatalogChange
from ..config import AlertsConfig
from ..serving.batch import top_k_for_users

REASONS = ("back_in_stock", "price_drop", "new_for_you", "time_to_reorder")


@dataclass(frozen=True)
class Alert:
    """One thing to tell one customer about one item.

    ``change_at`` is the time of the catalog change it reports (the restock, the price
    change, the item's first sale): with customer, item and reason it identifies the alert,
    so the same change is never reported twice, and a later one can be.
    """

    user_id: str
    item_id: str
    reason: str
    name: str
    price: float | None
    previous_price: float | None
    change_at: float
    because: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def find_alerts(
    store: ActivityStore,
    service: Any,
    settings: AlertsConfig,
    excluded: frozenset[str] | set[str],
    now: float | None = None,
    user_id: str | None = None,
) -> dict[str, list[Alert]]:
    """Every current alert, by customer (one customer with ``user_id``), best first within a
    customer: back in stock, then price drops (largest first), then new for you.

    ``excluded`` customers (opted out, forgotten) get none. ``service`` is the serving
    layer's ``RecommendationService`` of the current model, or None (then no names, no model
    prices and no "new for you").
    """
    now = time.time() if now is None else now
    if user_id is not None and user_id in excluded:
        return {}
    interest = store.interest(now - settings.interest_days * 86400, user_id)
    # One customer's page reads the history of their items only; a run reads all of it once.
    history = store.catalog_history([row[1] for row in interest] if user_id is not None else None)
    found: dict[tuple[str, str, str], Alert] = {}
    for customer, item_id, kind, at in interest:
        if customer in excluded:
            continue
        states = history.get(item_id)
        if not states:
            continue
        for alert in _catalog_alerts(customer, item_id, kind, at, states, service, settings):
            key = (customer, item_id, alert.reason)
            if alert.reason in settings.rules and key not in found:
                found[key] = alert
    if service is not None and "new_for_you" in settings.rules:
        for alert in _new_for_you(service, settings, excluded, user_id):
            found.setdefault((alert.user_id, alert.item_id, alert.reason), alert)
    if service is not None and service.repeat is not None and "time_to_reorder" in settings.rules:
        for alert in _time_to_reorder(store, service, settings, excluded, now, user_id):
            found.setdefault((alert.user_id, alert.item_id, alert.reason), alert)
    by_user: dict[str, list[Alert]] = {}
    for alert in found.values():
        by_user.setdefault(alert.user_id, []).append(alert)
    for alerts in by_user.values():
        alerts.sort(key=lambda a: (REASONS.index(a.reason), -_drop(a), a.item_id))
    return dict(sorted(by_user.items()))


def _catalog_alerts(
    customer: str,
    item_id: str,
    kind: str,
    interest_at: float,
    states: list[CatalogChange],
    service: Any,
    settings: AlertsConfig,
) -> Iterable[Alert]:
    """Back in stock and price drop for one item a customer showed interest in at ``interest_at``."""
    current = states[-1]
    name, model_price = _item_facts(service, item_id)
    because = {
        "wishlist": "on your wish list",
        "view": "you viewed it",
        "cart": "you put it in your cart",
    }[kind]
    if current.available is not False:
        # Back in stock: the latest change from unavailable to available happened after the interest.
        restocked_at = next(
            (
                states[i].at
                for i in range(len(states) - 1, 0, -1)
                if states[i].available and states[i - 1].available is False
            ),
            None,
        )
        if restocked_at is not None and restocked_at > interest_at and states[-1].available:
            yield Alert(
                customer,
                item_id,
                "back_in_stock",
                name,
                _price(current.price, model_price),
                None,
                restocked_at,
                because,
            )
        # Price drop: against the price in force when the customer showed interest.
        before = [state for state in states if state.at <= interest_at]
        baseline = before[-1].price if before and before[-1].price is not None else model_price
        changed_at = next(
            (
                states[i].at
                for i in range(len(states) - 1, -1, -1)
                if i == 0 or states[i - 1].price != states[i].price
            ),
            current.at,
        )
        if (
            current.price is not None
            and baseline
            and changed_at > interest_at
            and current.price <= baseline * (1 - settings.price_drop)
        ):
            yield Alert(
                customer,
                item_id,
                "price_drop",
                name,
                round(current.price, 2),
                round(baseline, 2),
                changed_at,
                because,
            )


def _new_for_you(
    service: Any, settings: AlertsConfig, excluded: frozenset[str] | set[str], user_id: str | None
) -> Iterable[Alert]:
    """Items first sold in the last ``new_days`` (of the model's log) among a customer's top
    ``new_top`` personal picks."""
    first_sold = service.first_sold
    if first_sold is None or not np.isfinite(first_sold).any():
        return
    newest = float(np.nanmax(first_sold))
    is_new = np.isfinite(first_sold) & (first_sold >= newest - settings.new_days * 86400)
    if not is_new.any():
        return
    if user_id is not None:
        index = service.users.index(user_id, missing="none")
        rows = np.array([] if index is None else [index], dtype=np.int64)
    else:
        rows = np.flatnonzero(
            [user not in excluded for user in service.users.ids_.tolist()]
        ).astype(np.int64)
    for start in range(0, len(rows), 2000):
        batch = rows[start : start + 2000]
        items, _ = top_k_for_users(service, batch, settings.new_top)
        for customer, picks in zip(service.users.ids(batch), items.tolist()):
            for item in picks:
                if item >= 0 and is_new[item]:
                    yield Alert(
                        customer,
                        str(service.items.ids_[item]),
                        "new_for_you",
                        service.names[item],
                        service.prices[item],
                        None,
                        float(first_sold[item]),
                        "new, and in your personal recommendations",
                    )


def _time_to_reorder(
    store: ActivityStore,
    service: Any,
    settings: AlertsConfig,
    excluded: frozenset[str] | set[str],
    now: float,
    user_id: str | None,
) -> Iterable[Alert]:
    """Items a customer bought in two orders or more whose usual interval has passed without
    a rebuy (by no more than ``reorder_max_overdue`` intervals), their ``reorder_top`` most
    bought; ``change_at`` is the last purchase, so each purchase is reminded of once. A rebuy
    recorded through the API since training cancels the reminder."""
    repeat = service.repeat
    user_items = service.user_items
    indptr = np.asarray(user_items.indptr, dtype=np.int64)
    if user_id is not None:
        index = service.users.index(user_id, missing="none")
        if index is None:
            return
        cells = np.arange(indptr[index], indptr[index + 1])
        owner = np.full(len(cells), index, dtype=np.int64)
    else:
        cells = np.arange(indptr[-1])
        owner = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    items = np.asarray(user_items.indices[cells], dtype=np.int64)
    times = np.asarray(repeat.times[cells], dtype=np.float64)
    first_age = np.asarray(repeat.first_age[cells], dtype=np.float64)
    last_age = np.asarray(repeat.last_age[cells], dtype=np.float64)
    # The customer's own interval only: a reminder speaks of their habit, not the item's.
    own = (times >= 2) & (first_age > last_age)
    interval = np.where(own, repeat.model.intervals(items, times, first_age, last_age), np.nan)
    since_days = last_age + (now - repeat.as_of) / 86400.0
    due = own & (since_days > interval) & (since_days <= interval * settings.reorder_max_overdue)
    if not due.any():
        return
    rebought = {
        (event.user_id, event.item_id)
        for event in store.purchases(since=repeat.as_of)
        if user_id is None or event.user_id == user_id
    }
    chosen = np.flatnonzero(due)
    order = chosen[np.lexsort((items[chosen], -times[chosen], owner[chosen]))]
    per_customer: dict[int, int] = {}
    for cell in order.tolist():
        customer = str(service.users.ids_[owner[cell]])
        item_id = str(service.items.ids_[items[cell]])
        if customer in excluded or (customer, item_id) in rebought:
            continue
        if per_customer.get(owner[cell], 0) >= settings.reorder_top:
            continue
        per_customer[owner[cell]] = per_customer.get(owner[cell], 0) + 1
        item = int(items[cell])
        yield Alert(
            customer,
            item_id,
            "time_to_reorder",
            service.names[item],
            service.prices[item],
            None,
            repeat.as_of - float(last_age[cell]) * 86400.0,
            f"you usually buy it every {round(float(interval[cell]))} days; "
            f"last bought {round(float(since_days[cell]))} days ago",
        )


def _item_facts(service: Any, item_id: str) -> tuple[str, float | None]:
    if service is None:
        return "", None
    index = service.items.index(item_id, missing="none")
    return ("", None) if index is None else (service.names[index], service.prices[index])


def _price(recorded: float | None, model_price: float | None) -> float | None:
    return round(recorded, 2) if recorded is not None else model_price


def _drop(alert: Alert) -> float:
    if alert.price is None or not alert.previous_price:
        return 0.0
    return 1.0 - alert.price / alert.previous_price
