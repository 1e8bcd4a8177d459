"""Delivery of the alerts: one digest per customer, at most one per ``cap_days``, never to an
opted-out or forgotten customer, by e-mail (``smtplib``, ``email.message``) and/or to a CSV or
JSON Lines file for the shop's mail tool.

Every digest and its alerts are recorded in the store *before* the hand-over: an alert is
delivered once (the store's ``alerts_delivered`` key is customer, item, reason and the catalog
change it reports), and a run stopped mid-way leaves its unconfirmed e-mails in the store,
which the next run sends first, with the same bytes and Message-ID (so a mail server that
deduplicates by Message-ID shows it once).
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
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..activity import ActivityStore
from ..config import AlertsConfig
from ..errors import DeliveryError
from .rules import Alert

logger = logging.getLogger(__name__)

FILE_FIELDS = (
    "user_id",
    "reason",
    "item_id",
    "name",
    "price",
    "previous_price",
    "change_at",
    "because",
)
# What goes on the wire: CRLF line ends (RFC 5321), and 7-bit bodies (non-ASCII text as
# quoted-printable or base64), so any server takes them, with or without 8BITMIME.
MAIL_POLICY = email.policy.SMTP.clone(cte_type="7bit")


def deliver(
    alerts: dict[str, list[Alert]],
    store: ActivityStore,
    settings: AlertsConfig,
    emails: dict[str, str],
    out: Path | None = None,
    now: float | None = None,
    excluded: frozenset[str] | set[str] = frozenset(),
) -> dict[str, int]:
    """Deliver the alerts: by e-mail when ``settings.smtp_host`` is set, to ``out`` (CSV, or
    JSON Lines for ``.jsonl``) for the shop's mail tool, or both. Returns counts.

    A customer whose last digest is younger than ``cap_days`` is skipped this run (their
    alerts stay pending); without SMTP a customer needs no address, with it one without an
    address is skipped. Digests left unconfirmed by an interrupted run are sent first, unless
    their customer is now ``excluded`` (opted out, forgotten) or has no address.
    """
    now = time.time() if now is None else now
    counts = {
        "customers_with_alerts": len(alerts),
        "digests": 0,
        "alerts": 0,
        "capped": 0,
        "no_address": 0,
        "resent": 0,
        "refused": 0,
    }
    last = store.last_digest_at()
    smtp = _connect(settings) if settings.smtp_host else None
    delivered = store.delivered_alerts()
    try:
        if smtp is not None:
            for digest_id, user_id, _message_id, body in store.pending_digests():
                if user_id in excluded or user_id not in emails:
                    store.mark_refused(digest_id)  # opted out (or no address) since: never sent
                    continue
                counts["resent"] += _send(smtp, store, digest_id, body, settings, emails[user_id])
        chosen: list[tuple[str, list[Alert]]] = []
        for user_id, user_alerts in alerts.items():
            fresh = [
                a
                for a in user_alerts
                if (a.user_id, a.item_id, a.reason, a.change_at) not in delivered
            ]
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
                store.open_digest(
                    user_id, "file", "", json.dumps([a.to_dict() for a in fresh]), keys, now
                )
            else:
                message = compose(user_id, emails[user_id], fresh, settings, now)
                body = message.as_bytes().decode("ascii")
                digest_id = store.open_digest(
                    user_id, "smtp", str(message["Message-ID"]), body, keys, now
                )
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


def compose(
    user_id: str,
    address: str,
    alerts: Sequence[Alert],
    settings: AlertsConfig,
    now: float | None = None,
) -> EmailMessage:
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
    message.set_content(
        "\n".join(
            [
                f"News from {settings.shop_name}:",
                "",
                *[f"- {line}" for line in lines],
                "",
                f"Unsubscribe: {unsubscribe}",
            ]
        )
    )
    items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
    message.add_alternative(
        f"<html><body><p>News from {html.escape(settings.shop_name)}:</p><ul>{items}</ul>"
        f'<p><a href="{html.escape(unsubscribe, quote=True)}">Unsubscribe</a></p></body></html>',
        subtype="html",
    )
    return message


def _subject(alerts: Sequence[Alert], settings: AlertsConfig) -> str:
    first = alerts[0]
    headline = {
        "back_in_stock": "is back in stock",
        "price_drop": "is cheaper now",
        "new_for_you": "is new, and picked for you",
        "time_to_reorder": "may be running low",
    }[first.reason]
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
        raise DeliveryError(
            f"smtp_host: cannot connect to {settings.smtp_host}:{settings.smtp_port}: {exc}"
        ) from None


def _send(
    smtp: smtplib.SMTP,
    store: ActivityStore,
    digest_id: int,
    body: str,
    settings: AlertsConfig,
    address: str,
) -> bool:
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
        raise DeliveryError(
            f"smtp_host: sending to {settings.smtp_host} failed: {exc}; rerun to send what is left"
        ) from None
    store.mark_sent(digest_id)
    return True


def _write(out: Path, alerts: Sequence[Alert]) -> None:
    """The alerts file, written to a temporary name and renamed when complete."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    with partial.open("w", newline="", encoding="utf-8") as handle:
        if out.suffix == ".jsonl":
            for alert in alerts:
                handle.write(
                    json.dumps(_file_row(alert), ensure_ascii=False, allow_nan=False) + "\n"
                )
        else:
            writer = csv.writer(handle)
            writer.writerow(FILE_FIELDS)
            for alert in alerts:
                row = _file_row(alert)
                writer.writerow(["" if row[f] is None else row[f] for f in FILE_FIELDS])
    partial.replace(out)


def _file_row(alert: Alert) -> dict[str, Any]:
    """An alert's fields for the files, a missing number as null (JSON has no NaN)."""
    return {
        field: None if isinstance(value, float) and not math.isfinite(value) else value
        for field, value in alert.to_dict().items()
    }
