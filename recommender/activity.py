"""The activity store: what shoppers do between trainings (events) and their wish lists.

All SQL of the package lives here, behind ``ActivityStore``, so that a shop that outgrows
SQLite can put another database behind the same methods. SQLite runs in WAL mode with
``synchronous=FULL``: a write is on disk before the call returns, readers never block the
writer, and several gunicorn workers (processes) can write to one file, serialised by
SQLite's lock (``busy_timeout`` waits for it instead of failing).
"""
from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

logger = logging.getLogger(__name__)

EVENT_TYPES = ("view", "cart", "wishlist", "purchase")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    type TEXT NOT NULL CHECK (type IN ('view', 'cart', 'wishlist', 'purchase')),
    ts REAL NOT NULL,
    received_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_user ON events (user_id, ts);
CREATE INDEX IF NOT EXISTS events_by_type ON events (type, ts);
CREATE TABLE IF NOT EXISTS suppressed (
    user_id TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS wishlist (
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    added_at REAL NOT NULL,
    PRIMARY KEY (user_id, item_id)
);
CREATE TABLE IF NOT EXISTS catalog_changes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id TEXT NOT NULL,
    price REAL,
    available INTEGER,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS catalog_changes_by_item ON catalog_changes (item_id, at);
CREATE TABLE IF NOT EXISTS digests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('sending', 'sent', 'exported', 'refused')),
    message_id TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at REAL NOT NULL,
    sent_at REAL
);
CREATE INDEX IF NOT EXISTS digests_by_user ON digests (user_id, created_at);
CREATE TABLE IF NOT EXISTS alerts_delivered (
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    change_at REAL NOT NULL,
    digest_id INTEGER NOT NULL REFERENCES digests (id),
    PRIMARY KEY (user_id, item_id, reason, change_at)
);
"""


@dataclass(frozen=True)
class Event:
    """One thing a shopper did; ``timestamp`` in seconds since the epoch (UTC)."""

    user_id: str
    item_id: str
    type: str
    timestamp: float


@dataclass(frozen=True)
class CatalogChange:
    """An item's recorded price and availability from ``at`` on (None: never given)."""

    item_id: str
    price: float | None
    available: bool | None
    at: float


class ActivityStore:
    """Events and wish lists in one SQLite file.

    Parameters
    ----------
    path : the database file; its directory is created if missing.
    history_limit : events kept per shopper (the newest).
    history_days : events older than this are deleted.
    """

    def __init__(self, path: str | Path, history_limit: int = 200, history_days: float = 90.0) -> None:
        self.path = Path(path)
        self.history_limit = history_limit
        self.history_days = history_days
        self._local = threading.local()

    @property
    def connection(self) -> sqlite3.Connection:
        """This thread's connection (SQLite connections are not shared between threads); opened
        once per thread and kept, so a request does not pay for opening one."""
        connection = getattr(self._local, "connection", None)
        if connection is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                connection = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            except (OSError, sqlite3.Error) as exc:
                raise ConfigError(f"activity_db: cannot open {self.path.name}: {exc}") from None
            connection.execute("PRAGMA busy_timeout = 30000")
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = FULL")
            self._local.connection = connection
        return connection

    def create_schema(self) -> None:
        """Create the tables if they do not exist (safe to run from every worker)."""
        self.connection.executescript(_SCHEMA)

    def close(self) -> None:
        """Close this thread's connection."""
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    def add_events(self, events: Sequence[Event], now: float | None = None) -> int:
        """Store a batch in one transaction (all or nothing), then prune those shoppers' history.

        Events of forgotten customers are acknowledged but not stored: their id is on the
        suppression list, and storing it again would undo the erasure. Returns the number stored.
        """
        now = time.time() if now is None else now
        with self._transaction() as connection:
            users = tuple({e.user_id for e in events})
            forgotten = {row[0] for row in connection.execute(
                f"SELECT user_id FROM suppressed WHERE reason = 'forgotten' AND user_id IN ({','.join('?' * len(users))})",
                users,
            )} if users else set()
            kept = [e for e in events if e.user_id not in forgotten]
            connection.executemany(
                "INSERT INTO events (user_id, item_id, type, ts, received_at) VALUES (?, ?, ?, ?, ?)",
                [(e.user_id, e.item_id, e.type, e.timestamp, now) for e in kept],
            )
            self._prune_users(connection, {e.user_id for e in kept}, now)
        return len(kept)

    def recent_events(self, user_id: str, limit: int | None = None, now: float | None = None) -> list[Event]:
        """A shopper's events within the history window, newest first."""
        cutoff = (time.time() if now is None else now) - self.history_days * 86400
        rows = self.connection.execute(
            "SELECT user_id, item_id, type, ts FROM events WHERE user_id = ? AND ts >= ? "
            "ORDER BY ts DESC, id DESC LIMIT ?",
            (user_id, cutoff, limit or self.history_limit),
        ).fetchall()
        return [Event(*row) for row in rows]

    def purchases(self, since: float | None = None) -> list[Event]:
        """Purchase events (all shoppers), oldest first: what the nightly training adds to its log."""
        rows = self.connection.execute(
            "SELECT user_id, item_id, type, ts FROM events WHERE type = 'purchase' AND ts >= ? ORDER BY ts, id",
            (since or 0.0,),
        ).fetchall()
        return [Event(*row) for row in rows]

    def add_to_wishlist(self, user_id: str, item_id: str, now: float | None = None) -> bool:
        """Add an item; True if it was not there yet. Also recorded as a ``wishlist`` event."""
        now = time.time() if now is None else now
        with self._transaction() as connection:
            created = connection.execute(
                "INSERT OR IGNORE INTO wishlist (user_id, item_id, added_at) VALUES (?, ?, ?)",
                (user_id, item_id, now),
            ).rowcount == 1
            if created:
                connection.execute(
                    "INSERT INTO events (user_id, item_id, type, ts, received_at) VALUES (?, ?, 'wishlist', ?, ?)",
                    (user_id, item_id, now, now),
                )
                self._prune_users(connection, {user_id}, now)
        return created

    def remove_from_wishlist(self, user_id: str, item_id: str) -> bool:
        """Remove an item; True if it was there."""
        with self._transaction() as connection:
            return connection.execute(
                "DELETE FROM wishlist WHERE user_id = ? AND item_id = ?", (user_id, item_id)
            ).rowcount == 1

    def wishlist(self, user_id: str) -> list[tuple[str, float]]:
        """``(item_id, added_at)`` of a shopper's wish list, most recently added first."""
        return self.connection.execute(
            "SELECT item_id, added_at FROM wishlist WHERE user_id = ? ORDER BY added_at DESC, item_id",
            (user_id,),
        ).fetchall()

    def prune(self, now: float | None = None) -> int:
        """Delete every event outside the history window (age and per-shopper count)."""
        now = time.time() if now is None else now
        with self._transaction() as connection:
            users = [row[0] for row in connection.execute("SELECT DISTINCT user_id FROM events")]
            return self._prune_users(connection, set(users), now)

    def suppressed(self, reason: str | None = None) -> list[str]:
        """Ids of customers who were forgotten (``reason="forgotten"``) or opted out."""
        query, args = "SELECT user_id FROM suppressed", ()
        if reason is not None:
            query, args = query + " WHERE reason = ?", (reason,)
        try:
            return [row[0] for row in self.connection.execute(query, args)]
        except sqlite3.OperationalError:  # a store created before the table existed
            return []

    def suppression(self, user_id: str) -> str | None:
        """``"forgotten"``, ``"opted_out"`` or None for one customer."""
        row = self.connection.execute("SELECT reason FROM suppressed WHERE user_id = ?", (user_id,)).fetchone()
        return row[0] if row else None

    def forget(self, user_id: str, now: float | None = None) -> dict[str, int]:
        """Erase a customer's events and wish list and put the id on the suppression list, in one
        transaction: from the commit on, nothing personal about them is served or trained on."""
        now = time.time() if now is None else now
        with self._transaction() as connection:
            events = connection.execute("DELETE FROM events WHERE user_id = ?", (user_id,)).rowcount
            wished = connection.execute("DELETE FROM wishlist WHERE user_id = ?", (user_id,)).rowcount
            connection.execute("DELETE FROM alerts_delivered WHERE user_id = ?", (user_id,))
            connection.execute("DELETE FROM digests WHERE user_id = ?", (user_id,))
            connection.execute(
                "INSERT INTO suppressed (user_id, reason, at) VALUES (?, 'forgotten', ?) "
                "ON CONFLICT (user_id) DO UPDATE SET reason = 'forgotten', at = excluded.at",
                (user_id, now),
            )
        logger.info("forgot a customer: %d events and %d wish-list items erased", events, wished)
        return {"events_erased": events, "wishlist_items_erased": wished}

    def set_opt_out(self, user_id: str, opted_out: bool, now: float | None = None) -> None:
        """Opt a customer out of personalisation (data kept), or back in; a forgotten one stays forgotten."""
        now = time.time() if now is None else now
        with self._transaction() as connection:
            if opted_out:
                connection.execute(
                    "INSERT INTO suppressed (user_id, reason, at) VALUES (?, 'opted_out', ?) "
                    "ON CONFLICT (user_id) DO NOTHING", (user_id, now),
                )
            else:
                connection.execute("DELETE FROM suppressed WHERE user_id = ? AND reason = 'opted_out'", (user_id,))

    def everything_about(self, user_id: str) -> dict[str, object]:
        """All the store holds about a customer, for a subject access request."""
        events = self.connection.execute(
            "SELECT item_id, type, ts, received_at FROM events WHERE user_id = ? ORDER BY ts, id", (user_id,)
        ).fetchall()
        return {
            "events": [{"item_id": i, "type": t, "timestamp": ts, "received_at": r} for i, t, ts, r in events],
            "wishlist": [{"item_id": item, "added_at": at} for item, at in self.wishlist(user_id)],
            "suppression": self.suppression(user_id),
        }

    # ------------------------------------------------------------ catalog history and alerts
    def record_catalog(self, states: Iterable[tuple[str, float | None, bool | None]],
                       now: float | None = None) -> int:
        """Record items' ``(item_id, price, available)`` where either differs from the item's
        latest recorded state (None: unchanged), in one transaction; returns how many changed.
        The history is what the alert rules compare against (``CatalogChange``)."""
        now = time.time() if now is None else now
        changed = 0
        with self._transaction() as connection:
            for item_id, price, available in states:
                row = connection.execute(
                    "SELECT price, available FROM catalog_changes WHERE item_id = ? ORDER BY at DESC, id DESC LIMIT 1",
                    (item_id,)).fetchone()
                last_price, last_available = row if row else (None, None)
                new_price = last_price if price is None else float(price)
                new_available = last_available if available is None else int(bool(available))
                if row is not None and new_price == last_price and new_available == last_available:
                    continue
                connection.execute("INSERT INTO catalog_changes (item_id, price, available, at) VALUES (?, ?, ?, ?)",
                                   (item_id, new_price, new_available, now))
                changed += 1
        return changed

    def catalog_history(self, items: Sequence[str] | None = None) -> dict[str, list[CatalogChange]]:
        """Recorded states, oldest first, of every item or of ``items`` only (one customer's)."""
        query = "SELECT item_id, price, available, at FROM catalog_changes"
        args: tuple[str, ...] = ()
        if items is not None:
            items = sorted(set(items))[:10_000]
            query += f" WHERE item_id IN ({','.join('?' * len(items))})"
            args = tuple(items)
        history: dict[str, list[CatalogChange]] = {}
        for item_id, price, available, at in self.connection.execute(query + " ORDER BY item_id, at, id", args):
            history.setdefault(item_id, []).append(
                CatalogChange(item_id, price, None if available is None else bool(available), at))
        return history

    def interest(self, since: float, user_id: str | None = None) -> list[tuple[str, str, str, float]]:
        """``(user_id, item_id, kind, at)``: wish-list items (kind ``wishlist``, whenever added)
        and items viewed or carted since ``since``, the latest time per kind; one customer or all."""
        where, args = ("WHERE user_id = ?", (user_id,)) if user_id is not None else ("", ())
        wished = self.connection.execute(
            f"SELECT user_id, item_id, 'wishlist', added_at FROM wishlist {where}", args).fetchall()
        events = self.connection.execute(
            "SELECT user_id, item_id, type, MAX(ts) FROM events WHERE type IN ('view', 'cart') AND ts >= ?"
            + (" AND user_id = ?" if user_id is not None else "") + " GROUP BY user_id, item_id, type",
            (since, *args)).fetchall()
        return [tuple(row) for row in wished + events]  # type: ignore[misc]

    def delivered_alerts(self, user_id: str | None = None) -> set[tuple[str, str, str, float]]:
        """``(user_id, item_id, reason, change_at)`` of every alert already in a digest."""
        where, args = ("WHERE user_id = ?", (user_id,)) if user_id is not None else ("", ())
        return {tuple(row) for row in self.connection.execute(  # type: ignore[misc]
            f"SELECT user_id, item_id, reason, change_at FROM alerts_delivered {where}", args)}

    def last_digest_at(self) -> dict[str, float]:
        """Each customer's latest digest (sent, exported or being sent): the frequency cap's clock."""
        return {user: at for user, at in self.connection.execute(
            "SELECT user_id, MAX(created_at) FROM digests GROUP BY user_id")}

    def open_digest(self, user_id: str, channel: str, message_id: str, body: str,
                    alerts: Sequence[tuple[str, str, float]], now: float | None = None) -> int:
        """Record a digest about to be delivered and its alerts, in one transaction, before the
        delivery: from the commit on, a rerun neither builds these alerts again nor forgets the
        digest (``pending_digests``). Returns its id."""
        now = time.time() if now is None else now
        status = "sending" if channel == "smtp" else "exported"
        with self._transaction() as connection:
            digest_id = int(connection.execute(
                "INSERT INTO digests (user_id, channel, status, message_id, body, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (user_id, channel, status, message_id, body, now)).lastrowid or 0)
            connection.executemany(
                "INSERT OR IGNORE INTO alerts_delivered (user_id, item_id, reason, change_at, digest_id) "
                "VALUES (?, ?, ?, ?, ?)", [(user_id, item, reason, at, digest_id) for item, reason, at in alerts])
        return digest_id

    def mark_sent(self, digest_id: int, now: float | None = None) -> None:
        """The mail server accepted the digest."""
        with self._transaction() as connection:
            connection.execute("UPDATE digests SET status = 'sent', sent_at = ? WHERE id = ?",
                               (time.time() if now is None else now, digest_id))

    def mark_refused(self, digest_id: int) -> None:
        """The mail server refused the recipient for good: not retried."""
        with self._transaction() as connection:
            connection.execute("UPDATE digests SET status = 'refused' WHERE id = ?", (digest_id,))

    def pending_digests(self) -> list[tuple[int, str, str, str]]:
        """``(id, user_id, message_id, body)`` of e-mail digests recorded but not confirmed sent
        (a run stopped mid-delivery): the next run sends them first, with the same Message-ID."""
        return self.connection.execute(
            "SELECT id, user_id, message_id, body FROM digests WHERE status = 'sending' ORDER BY id").fetchall()

    def count_events(self) -> int:
        return int(self.connection.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def _prune_users(self, connection: sqlite3.Connection, users: Iterable[str], now: float) -> int:
        cutoff = now - self.history_days * 86400
        removed = 0
        for user_id in users:  # a batch touches few shoppers; each delete uses the (user_id, ts) index
            removed += connection.execute(
                "DELETE FROM events WHERE user_id = ? AND (ts < ? OR id NOT IN ("
                "SELECT id FROM events WHERE user_id = ? ORDER BY ts DESC, id DESC LIMIT ?))",
                (user_id, cutoff, user_id, self.history_limit),
            ).rowcount
        return removed

    def _transaction(self) -> _Transaction:
        return _Transaction(self.connection)


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, or ``ROLLBACK`` on any error: nothing is half-written."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def __enter__(self) -> sqlite3.Connection:
        self.connection.execute("BEGIN IMMEDIATE")
        return self.connection

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        self.connection.execute("COMMIT" if kind is None else "ROLLBACK")
