"""E-mail alerts: "back in stock", "price dropped" and "new for you", to the customers who asked.

The rules (``find_alerts``) read the activity store (wish lists, recent views and carts, the
catalog's recorded price and availability history) and the model (names, prices, each
customer's personal ranking, when each item was first sold). They are what
``GET /v1/users/<id>/alerts`` shows and what ``python -m recommender alerts`` delivers.

Delivery (``deliver``) groups a customer's alerts into one digest, at most one per
``cap_days``, never to an opted-out or forgotten customer, and records every digest and its
alerts in the store *before* handing it over: an alert is delivered once (the store's
``alerts_delivered`` key is customer, item, reason and the catalog change it reports), and a
run stopped mid-way leaves its unconfirmed e-mails in the store, which the next run sends
first, with the same Message-ID (so a mail server that deduplicates by Message-ID shows
it once). The standard library's ``smtplib`` and ``email.message`` do the e-mail.
"""
from __future__ import annotations

import csv
import email.policy
import html
import json
import logging
import math
import re
import smtplib
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from .activity import ActivityStore, CatalogChange
from .config import AlertsConfig
from .errors import DeliveryError
from .serving.batch import top_k_for_users

logger = logging.getLogger(__name__)

REASONS = ("back_in_stock", "price_drop", "new_for_you")
FILE_FIELDS = ("user_id", "reason", "item_id", "name", "price", "previous_price", "change_at", "because")
# What goes on the wire: CRLF line ends (RFC 5321), and 7-bit bodies (non-ASCII text as
# quoted-printable or base64), so any server takes them, with or without 8BITMIME.
MAIL_POLICY = email.policy.SMTP.clone(cte_type="7bit")


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


def find_alerts(store: ActivityStore, service: Any, settings: AlertsConfig, excluded: frozenset[str] | set[str],
                now: float | None = None, user_id: str | None = None) -> dict[str, list[Alert]]:
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
    by_user: dict[str, list[Alert]] = {}
    for alert in found.values():
        by_user.setdefault(alert.user_id, []).append(alert)
    for alerts in by_user.values():
        alerts.sort(key=lambda a: (REASONS.index(a.reason), -_drop(a), a.item_id))
    return dict(sorted(by_user.items()))


def _catalog_alerts(customer: str, item_id: str, kind: str, interest_at: float, states: list[CatalogChange],
                    service: Any, settings: AlertsConfig) -> Iterable[Alert]:
    """Back in stock and price drop for one item a customer showed interest in at ``interest_at``."""
    current = states[-1]
    name, model_price = _item_facts(service, item_id)
    because = {"wishlist": "on your wish list", "view": "you viewed it", "cart": "you put it in your cart"}[kind]
    if current.available is not False:
        # Back in stock: the latest change from unavailable to available happened after the interest.
        restocked_at = next((states[i].at for i in range(len(states) - 1, 0, -1)
                             if states[i].available and states[i - 1].available is False), None)
        if restocked_at is not None and restocked_at > interest_at and states[-1].available:
            yield Alert(customer, item_id, "back_in_stock", name, _price(current.price, model_price), None,
                        restocked_at, because)
        # Price drop: against the price in force when the customer showed interest.
        before = [state for state in states if state.at <= interest_at]
        baseline = before[-1].price if before and before[-1].price is not None else model_price
        changed_at = next((states[i].at for i in range(len(states) - 1, -1, -1)
                           if i == 0 or states[i - 1].price != states[i].price), current.at)
        if (current.price is not None and baseline and changed_at > interest_at
                and current.price <= baseline * (1 - settings.price_drop)):
            yield Alert(customer, item_id, "price_drop", name, round(current.price, 2), round(baseline, 2),
                        changed_at, because)


def _new_for_you(service: Any, settings: AlertsConfig, excluded: frozenset[str] | set[str],
                 user_id: str | None) -> Iterable[Alert]:
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
        rows = np.flatnonzero([user not in excluded for user in service.users.ids_.tolist()]).astype(np.int64)
    for start in range(0, len(rows), 2000):
        batch = rows[start:start + 2000]
        items, _ = top_k_for_users(service, batch, settings.new_top)
        for customer, picks in zip(service.users.ids(batch), items.tolist()):
            for item in picks:
                if item >= 0 and is_new[item]:
                    yield Alert(customer, str(service.items.ids_[item]), "new_for_you", service.names[item],
                                service.prices[item], None, float(first_sold[item]),
                                "new, and in your personal recommendations")


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


# ------------------------------------------------------------------------------ delivery
def deliver(alerts: dict[str, list[Alert]], store: ActivityStore, settings: AlertsConfig, emails: dict[str, str],
            out: Path | None = None, now: float | None = None,
            excluded: frozenset[str] | set[str] = frozenset()) -> dict[str, int]:
    """Deliver the alerts: by e-mail when ``settings.smtp_host`` is set, to ``out`` (CSV, or
    JSON Lines for ``.jsonl``) for the shop's mail tool, or both. Returns counts.

    A customer whose last digest is younger than ``cap_days`` is skipped this run (their
    alerts stay pending); without SMTP a customer needs no address, with it one without an
    address is skipped. Digests left unconfirmed by an interrupted run are sent first, unless
    their customer is now ``excluded`` (opted out, forgotten) or has no address.
    """
    now = time.time() if now is None else now
    counts = {"customers_with_alerts": len(alerts), "digests": 0, "alerts": 0, "capped": 0, "no_address": 0,
              "resent": 0, "refused": 0}
    last = store.last_digest_at()
    smtp = _connect(settings) if settings.smtp_host else None
    delivered = store.delivered_alerts()
    try:
        if smtp is not None:
            for digest_id, user_id, message_id, body in store.pending_digests():
                if user_id in excluded or user_id not in emails:
                    store.mark_refused(digest_id)  # opted out (or no address) since: never sent
                    continue
                counts["resent"] += _send(smtp, store, digest_id, body, settings, emails[user_id])
        chosen: list[tuple[str, list[Alert]]] = []
        for user_id, user_alerts in alerts.items():
            fresh = [a for a in user_alerts if (a.user_id, a.item_id, a.reason, a.change_at) not in delivered]
            if not fresh:
                continue
            if user_id in last and now - last[user_id] < settings.cap_days * 86400:
                counts["capped"] += 1
                continue
            if smtp is not None and user_id not in emails:
                counts["no_address"] += 1
                continue
            chosen.append((user_id, fresh))
        if out is not None:
            _write(out, [alert for _, fresh in chosen for alert in fresh])
        for user_id, fresh in chosen:
            keys = [(a.item_id, a.reason, a.change_at) for a in fresh]
            if smtp is None:
                store.open_digest(user_id, "file", "", json.dumps([a.to_dict() for a in fresh]), keys, now)
            else:
                message = compose(user_id, emails[user_id], fresh, settings, now)
                body = message.as_bytes().decode("ascii")
                digest_id = store.open_digest(user_id, "smtp", str(message["Message-ID"]), body, keys, now)
                if not _send(smtp, store, digest_id, body, settings, emails[user_id]):
                    counts["refused"] += 1
                    continue
            counts["digests"] += 1
            counts["alerts"] += len(fresh)
    finally:
        if smtp is not None:
            try:
                smtp.quit()
            except smtplib.SMTPException:
                pass
    logger.info("alerts: %s", counts)
    return counts


def compose(user_id: str, address: str, alerts: Sequence[Alert], settings: AlertsConfig,
            now: float | None = None) -> EmailMessage:
    """One customer's digest: a text and an HTML part, and an unsubscribe link in both and in
    the ``List-Unsubscribe`` header. Built under ``MAIL_POLICY``: ``as_bytes()`` is what the
    mail server receives, byte for byte, and what the store keeps for a resend."""
    unsubscribe = settings.unsubscribe_url.replace("{user_id}", quote(user_id, safe=""))
    message = EmailMessage(policy=MAIL_POLICY)
    message["From"] = settings.sender
    message["To"] = address
    message["Subject"] = _subject(alerts, settings)
    message["Date"] = formatdate(time.time() if now is None else now)
    message["Message-ID"] = f"<alerts.{uuid.uuid4().hex}@{settings.sender.rpartition('@')[2]}>"
    message["List-Unsubscribe"] = f"<{unsubscribe}>"
    lines = [_line(alert) for alert in alerts]
    message.set_content("\n".join([f"News from {settings.shop_name}:", "", *[f"- {line}" for line in lines], "",
                                   f"Unsubscribe: {unsubscribe}"]))
    items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
    message.add_alternative(
        f"<html><body><p>News from {html.escape(settings.shop_name)}:</p><ul>{items}</ul>"
        f'<p><a href="{html.escape(unsubscribe, quote=True)}">Unsubscribe</a></p></body></html>', subtype="html")
    return message


def _subject(alerts: Sequence[Alert], settings: AlertsConfig) -> str:
    first = alerts[0]
    headline = {"back_in_stock": "is back in stock", "price_drop": "is cheaper now",
                "new_for_you": "is new, and picked for you"}[first.reason]
    more = f" (and {len(alerts) - 1} more)" if len(alerts) > 1 else ""
    return f"{first.name or first.item_id} {headline}{more} - {settings.shop_name}"


def _line(alert: Alert) -> str:
    name = alert.name or alert.item_id
    price = "" if alert.price is None else f" {alert.price:.2f}"
    if alert.reason == "back_in_stock":
        return f"{name} is back in stock{price and ' at' + price} ({alert.because})"
    if alert.reason == "price_drop":
        return f"{name} now{price}, was {alert.previous_price:.2f} ({alert.because})"
    return f"{name}{price and ' at' + price}: {alert.because}"


def _connect(settings: AlertsConfig) -> smtplib.SMTP:
    try:
        smtp = smtplib.SMTP(settings.smtp_host or "", settings.smtp_port, timeout=30)
        if settings.smtp_starttls:
            smtp.starttls()
        if settings.smtp_user:
            smtp.login(settings.smtp_user, settings.smtp_password or "")
        return smtp
    except (OSError, smtplib.SMTPException) as exc:
        raise DeliveryError(f"smtp_host: cannot connect to {settings.smtp_host}:{settings.smtp_port}: {exc}") from None


def _send(smtp: smtplib.SMTP, store: ActivityStore, digest_id: int, body: str, settings: AlertsConfig,
          address: str) -> bool:
    """Hand one recorded digest to the mail server and confirm it in the store. False when the
    server refuses this recipient for good (the digest is then marked, not retried); a lost
    connection raises, leaving the digest to the next run.

    ``smtplib`` turns line ends into CRLF for ``str`` messages only, and then demands ASCII;
    the bytes are given CRLF here, so a digest stored by an older version (``\n`` line ends,
    8-bit UTF-8 text) goes out as the standard says too. ``smtplib`` doubles leading dots."""
    wire = re.sub(r"\r?\n", "\r\n", body).encode("utf-8")
    try:
        smtp.sendmail(settings.sender, [address], wire)
    except smtplib.SMTPRecipientsRefused:
        store.mark_refused(digest_id)
        return False
    except (OSError, smtplib.SMTPException) as exc:
        raise DeliveryError(f"smtp_host: sending to {settings.smtp_host} failed: {exc}; "
                            "rerun to send what is left") from None
    store.mark_sent(digest_id)
    return True


def _write(out: Path, alerts: Sequence[Alert]) -> None:
    """The alerts file, written to a temporary name and renamed when complete."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    with partial.open("w", newline="", encoding="utf-8") as handle:
        if out.suffix == ".jsonl":
            for alert in alerts:
                handle.write(json.dumps(_file_row(alert), ensure_ascii=False, allow_nan=False) + "\n")
        else:
            writer = csv.writer(handle)
            writer.writerow(FILE_FIELDS)
            for alert in alerts:
                row = _file_row(alert)
                writer.writerow(["" if row[f] is None else row[f] for f in FILE_FIELDS])
    partial.replace(out)


def _file_row(alert: Alert) -> dict[str, Any]:
    """An alert's fields for the files, a missing number as null (JSON has no NaN)."""
    return {field: None if isinstance(value, float) and not math.isfinite(value) else value
            for field, value in alert.to_dict().items()}
