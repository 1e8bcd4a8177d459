"""A shopper's activity: events (views, carts, wishes, purchases) with their history window,
the wish list, and ``shopper``, the one read a personal answer makes."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .base import Attribution, Event, Session, Shopper, StorePart


class ShopperActivity(StorePart):
    """Events and wish lists (part of ``ActivityStore``)."""

    def add_events(
        self,
        events: Sequence[Event],
        now: float | None = None,
        attributions: Sequence[Attribution] = (),
        unattributed: Mapping[tuple[str, str, str], int] | None = None,
    ) -> int:
        """Store a batch in one transaction (all or nothing), then prune those shoppers' history.

        ``attributions`` (events that cite a list they followed) and ``unattributed`` (counts
        of citing events not attributed, by (day, reason, type)) go in the same transaction.
        Events of forgotten customers are acknowledged but not stored: their id is on the
        suppression list, and storing it again would undo the erasure. Returns the number stored.
        """
        now = time.time() if now is None else now
        users = sorted({e.user_id for e in events})
        with self.backend.writing(users) as db:
            forgotten = self._forgotten(db, users)
            kept = [e for e in events if e.user_id not in forgotten]
            if kept:
                db.executemany(
                    "INSERT INTO events (user_id, item_id, type, ts, received_at) VALUES (?, ?, ?, ?, ?)",
                    [(e.user_id, e.item_id, e.type, e.timestamp, now) for e in kept],
                )
            self._add_attributions(
                db, [a for a in attributions if a.user_id not in forgotten], unattributed or {}
            )
            self._prune_users(db, {e.user_id for e in kept}, now)
        return len(kept)

    def recent_events(
        self, user_id: str, limit: int | None = None, now: float | None = None
    ) -> list[Event]:
        """A shopper's events within the history window, newest first."""
        cutoff = (time.time() if now is None else now) - self.history_days * 86400
        with self.backend.reading() as db:
            rows = db.execute(
                "SELECT user_id, item_id, type, ts FROM events WHERE user_id = ? AND ts >= ? "
                "ORDER BY ts DESC, id DESC LIMIT ?",
                (user_id, cutoff, limit or self.history_limit),
            ).fetchall()
        return [Event(*row) for row in rows]

    def shopper(self, user_id: str, wishlist: bool = False, now: float | None = None) -> Shopper:
        """``Shopper`` in one statement (a database round trip costs more than the rows). While
        the database cannot be reached this raises ``StoreUnavailable``; ``suppression``
        still answers then, from the list last read."""
        cutoff = (time.time() if now is None else now) - self.history_days * 86400
        query = (
            "SELECT 's', reason, NULL, 0, 0 FROM suppressed WHERE user_id = ? UNION ALL "
            "SELECT 'e', item_id, type, ts, id FROM (SELECT item_id, type, ts, id FROM events "
            "WHERE user_id = ? AND ts >= ? ORDER BY ts DESC, id DESC LIMIT ?) AS recent"
        )
        args: tuple[Any, ...] = (user_id, user_id, cutoff, self.history_limit)
        if wishlist:
            query += (
                " UNION ALL SELECT 'w', item_id, NULL, added_at, 0 FROM wishlist WHERE user_id = ?"
            )
            args += (user_id,)
        with self.backend.reading() as db:
            rows = db.execute(query, args).fetchall()
            self._refresh_known_suppressed(db)
        suppression = next((row[1] for row in rows if row[0] == "s"), None)
        events = sorted(
            (row for row in rows if row[0] == "e"), key=lambda row: (row[3], row[4]), reverse=True
        )
        wished = sorted(
            ((row[1], row[3]) for row in rows if row[0] == "w"),
            key=lambda pair: (-pair[1], pair[0]),
        )
        return Shopper(
            suppression, [Event(user_id, item, kind, ts) for _, item, kind, ts, _ in events], wished
        )

    def purchases(self, since: float | None = None) -> list[Event]:
        """Purchase events (all shoppers), oldest first: what the nightly training adds to its log."""
        with self.backend.reading() as db:
            rows = db.execute(
                "SELECT user_id, item_id, type, ts FROM events WHERE type = 'purchase' AND ts >= ? "
                "ORDER BY ts, id",
                (since or 0.0,),
            ).fetchall()
        return [Event(*row) for row in rows]

    def purchase_summary(self) -> tuple[int, float | None]:
        """How many purchase events there are and the latest one's time (None: none), counted
        by the database: what tells the nightly job that nothing new came in."""
        with self.backend.reading() as db:
            count, latest = db.execute(
                "SELECT COUNT(*), MAX(ts) FROM events WHERE type = 'purchase'"
            ).fetchone()
        return int(count), None if latest is None else float(latest)

    def add_to_wishlist(self, user_id: str, item_id: str, now: float | None = None) -> bool:
        """Add an item; True if it was not there yet. Also recorded as a ``wishlist`` event.
        Nothing is stored for a forgotten customer (checked in the same transaction)."""
        now = time.time() if now is None else now
        with self.backend.writing([user_id]) as db:
            if db.execute(
                "SELECT 1 FROM suppressed WHERE user_id = ? AND reason = 'forgotten'", (user_id,)
            ).fetchone():
                return False
            created = (
                db.execute(
                    "INSERT INTO wishlist (user_id, item_id, added_at) VALUES (?, ?, ?) "
                    "ON CONFLICT DO NOTHING",
                    (user_id, item_id, now),
                ).rowcount
                == 1
            )
            if created:
                db.execute(
                    "INSERT INTO events (user_id, item_id, type, ts, received_at) "
                    "VALUES (?, ?, 'wishlist', ?, ?)",
                    (user_id, item_id, now, now),
                )
                self._prune_users(db, {user_id}, now)
        return created

    def remove_from_wishlist(self, user_id: str, item_id: str) -> bool:
        """Remove an item; True if it was there."""
        with self.backend.writing([user_id]) as db:
            return (
                db.execute(
                    "DELETE FROM wishlist WHERE user_id = ? AND item_id = ?", (user_id, item_id)
                ).rowcount
                == 1
            )

    def wishlist(self, user_id: str) -> list[tuple[str, float]]:
        """``(item_id, added_at)`` of a shopper's wish list, most recently added first."""
        with self.backend.reading() as db:
            return [
                (item, at)
                for item, at in db.execute(
                    "SELECT item_id, added_at FROM wishlist WHERE user_id = ? "
                    "ORDER BY added_at DESC, item_id",
                    (user_id,),
                )
            ]

    def prune(self, now: float | None = None) -> int:
        """Delete every event outside the history window (age and per-shopper count)."""
        now = time.time() if now is None else now
        with self.backend.reading() as db:
            users = sorted(row[0] for row in db.execute("SELECT DISTINCT user_id FROM events"))
        removed = 0
        for start in range(
            0, len(users), 500
        ):  # short transactions: servers keep writing meanwhile
            chunk = users[start : start + 500]
            with self.backend.writing(chunk) as db:
                removed += self._prune_users(db, chunk, now)
        return removed

    def _prune_users(self, db: Session, users: Iterable[str], now: float) -> int:
        cutoff = now - self.history_days * 86400
        removed = 0
        for (
            user_id
        ) in users:  # a batch touches few shoppers; each delete uses the (user_id, ts) index
            removed += db.execute(
                "DELETE FROM events WHERE user_id = ? AND (ts < ? OR id NOT IN ("
                "SELECT id FROM events WHERE user_id = ? ORDER BY ts DESC, id DESC LIMIT ?))",
                (user_id, cutoff, user_id, self.history_limit),
            ).rowcount
        return removed
