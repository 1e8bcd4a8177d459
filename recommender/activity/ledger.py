"""The catalog's price and availability history and the alert ledger: what the e-mail alerts
compare against and what they already sent."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

from .base import CatalogChange, StorePart, marks


class CatalogLedger(StorePart):
    """Catalog history, interest and digests (part of ``ActivityStore``)."""

    def record_catalog(
        self, states: Iterable[tuple[str, float | None, bool | None]], now: float | None = None
    ) -> int:
        """Record items' ``(item_id, price, available)`` where either differs from the item's
        latest recorded state (None: unchanged), in one transaction; returns how many changed.
        The history is what the alert rules compare against (``CatalogChange``)."""
        now = time.time() if now is None else now
        changed = 0
        with self.backend.writing(catalog=True) as db:
            for item_id, price, available in states:
                row = db.execute(
                    "SELECT price, available FROM catalog_changes WHERE item_id = ? "
                    "ORDER BY at DESC, id DESC LIMIT 1",
                    (item_id,),
                ).fetchone()
                last_price, last_available = row if row else (None, None)
                new_price = last_price if price is None else float(price)
                new_available = last_available if available is None else int(bool(available))
                if row is not None and new_price == last_price and new_available == last_available:
                    continue
                db.execute(
                    "INSERT INTO catalog_changes (item_id, price, available, at) VALUES (?, ?, ?, ?)",
                    (item_id, new_price, new_available, now),
                )
                changed += 1
        return changed

    def catalog_history(self, items: Sequence[str] | None = None) -> dict[str, list[CatalogChange]]:
        """Recorded states, oldest first, of every item or of ``items`` only (one customer's)."""
        query = "SELECT item_id, price, available, at FROM catalog_changes"
        args: tuple[str, ...] = ()
        if items is not None:
            items = sorted(set(items))[:10_000]
            if not items:
                return {}
            query += f" WHERE item_id IN ({marks(items)})"
            args = tuple(items)
        history: dict[str, list[CatalogChange]] = {}
        with self.backend.reading() as db:
            for item_id, price, available, at in db.execute(
                query + " ORDER BY item_id, at, id", args
            ):
                history.setdefault(item_id, []).append(
                    CatalogChange(
                        item_id, price, None if available is None else bool(available), at
                    )
                )
        return history

    def interest(
        self, since: float, user_id: str | None = None
    ) -> list[tuple[str, str, str, float]]:
        """``(user_id, item_id, kind, at)``: wish-list items (kind ``wishlist``, whenever added)
        and items viewed or carted since ``since``, the latest time per kind; one customer or all."""
        where, args = ("WHERE user_id = ?", (user_id,)) if user_id is not None else ("", ())
        with self.backend.reading() as db:
            wished = db.execute(
                f"SELECT user_id, item_id, added_at FROM wishlist {where}", args
            ).fetchall()
            events = db.execute(
                "SELECT user_id, item_id, type, MAX(ts) FROM events "
                "WHERE type IN ('view', 'cart') AND ts >= ?"
                + (" AND user_id = ?" if user_id is not None else "")
                + " GROUP BY user_id, item_id, type",
                (since, *args),
            ).fetchall()
        return [(user, item, "wishlist", at) for user, item, at in wished] + [
            tuple(row) for row in events
        ]

    def delivered_alerts(self, user_id: str | None = None) -> set[tuple[str, str, str, float]]:
        """``(user_id, item_id, reason, change_at)`` of every alert already in a digest."""
        where, args = ("WHERE user_id = ?", (user_id,)) if user_id is not None else ("", ())
        with self.backend.reading() as db:
            return {
                tuple(row)
                for row in db.execute(
                    f"SELECT user_id, item_id, reason, change_at FROM alerts_delivered {where}",
                    args,
                )
            }

    def last_digest_at(self) -> dict[str, float]:
        """Each customer's latest digest (sent, exported or being sent): the frequency cap's clock."""
        with self.backend.reading() as db:
            return {
                user: at
                for user, at in db.execute(
                    "SELECT user_id, MAX(created_at) FROM digests GROUP BY user_id"
                )
            }

    def open_digest(
        self,
        user_id: str,
        channel: str,
        message_id: str,
        body: str,
        alerts: Sequence[tuple[str, str, float]],
        now: float | None = None,
    ) -> int:
        """Record a digest about to be delivered and its alerts, in one transaction, before the
        delivery: from the commit on, a rerun neither builds these alerts again nor forgets the
        digest (``pending_digests``). Returns its id."""
        now = time.time() if now is None else now
        status = "sending" if channel == "smtp" else "exported"
        with self.backend.writing([user_id]) as db:
            digest_id = int(
                db.execute(
                    "INSERT INTO digests (user_id, channel, status, message_id, body, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                    (user_id, channel, status, message_id, body, now),
                ).fetchone()[0]
            )
            db.executemany(
                "INSERT INTO alerts_delivered (user_id, item_id, reason, change_at, digest_id) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [(user_id, item, reason, at, digest_id) for item, reason, at in alerts],
            )
        return digest_id

    def mark_sent(self, digest_id: int, now: float | None = None) -> None:
        """The mail server accepted the digest."""
        with self.backend.writing() as db:
            db.execute(
                "UPDATE digests SET status = 'sent', sent_at = ? WHERE id = ?",
                (time.time() if now is None else now, digest_id),
            )

    def mark_refused(self, digest_id: int) -> None:
        """The mail server refused the recipient for good: not retried."""
        with self.backend.writing() as db:
            db.execute("UPDATE digests SET status = 'refused' WHERE id = ?", (digest_id,))

    def pending_digests(self) -> list[tuple[int, str, str, str]]:
        """``(id, user_id, message_id, body)`` of e-mail digests recorded but not confirmed sent
        (a run stopped mid-delivery): the next run sends them first, with the same Message-ID."""
        with self.backend.reading() as db:
            return [
                tuple(row)
                for row in db.execute(
                    "SELECT id, user_id, message_id, body FROM digests WHERE status = 'sending' ORDER BY id"
                )
            ]
