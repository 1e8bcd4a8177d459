"""The SQLite backend: one file on the serving host, the embedded default.

WAL mode with ``synchronous=FULL``: a write is on disk before the call returns, readers never
block the writer, and several gunicorn workers (processes) write to one file, serialised by
``BEGIN IMMEDIATE`` (``busy_timeout`` waits for the lock instead of failing). Each thread
keeps its own connection (SQLite connections are not shared between threads), opened once,
so a request does not pay for opening one; a forked process opens its own.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import BusyError, StoreError, StoreUnavailable
from .base import PERFORMANCE_TABLES, upgrade

# Version 1: the schema written before the store had a version (upgraded in place).
BASE = [
    """CREATE TABLE IF NOT EXISTS events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id TEXT NOT NULL,
        item_id TEXT NOT NULL,
        type TEXT NOT NULL CHECK (type IN ('view', 'cart', 'wishlist', 'purchase')),
        ts REAL NOT NULL,
        received_at REAL NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS events_by_user ON events (user_id, ts)",
    "CREATE INDEX IF NOT EXISTS events_by_type ON events (type, ts)",
    """CREATE TABLE IF NOT EXISTS suppressed (
        user_id TEXT PRIMARY KEY, reason TEXT NOT NULL, at REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS wishlist (
        user_id TEXT NOT NULL, item_id TEXT NOT NULL, added_at REAL NOT NULL,
        PRIMARY KEY (user_id, item_id))""",
    """CREATE TABLE IF NOT EXISTS catalog_changes (
        id INTEGER PRIMARY KEY AUTOINCREMENT, item_id TEXT NOT NULL, price REAL, available INTEGER,
        at REAL NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS catalog_changes_by_item ON catalog_changes (item_id, at)",
    """CREATE TABLE IF NOT EXISTS digests (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id TEXT NOT NULL,
        channel TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('sending', 'sent', 'exported', 'refused')),
        message_id TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at REAL NOT NULL,
        sent_at REAL)""",
    "CREATE INDEX IF NOT EXISTS digests_by_user ON digests (user_id, created_at)",
    """CREATE TABLE IF NOT EXISTS alerts_delivered (
        user_id TEXT NOT NULL, item_id TEXT NOT NULL, reason TEXT NOT NULL, change_at REAL NOT NULL,
        digest_id INTEGER NOT NULL REFERENCES digests (id),
        PRIMARY KEY (user_id, item_id, reason, change_at))""",
]
MIGRATIONS = {
    2: [
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
        "CREATE INDEX IF NOT EXISTS suppressed_by_time ON suppressed (at)",
    ],
    3: [
        statement.format(real="REAL", id="INTEGER PRIMARY KEY AUTOINCREMENT")
        for statement in PERFORMANCE_TABLES
    ],
}


class SqliteBackend:
    kind = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = str(path)
        self.on_state: Callable[[bool], None] | None = None
        self._local = threading.local()
        self._schema_ready_in: int | None = None

    def exists(self) -> bool:
        return self.path.is_file()

    @property
    def connection(self) -> sqlite3.Connection:
        """This thread's connection, the schema checked once per process."""
        connection = self._open()
        if self._schema_ready_in != os.getpid():
            self.ensure_schema()
        return connection

    def _open(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None or self._local.pid != os.getpid():
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                connection = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
                connection.execute("PRAGMA busy_timeout = 30000")
                connection.execute("PRAGMA journal_mode = WAL")
                connection.execute("PRAGMA synchronous = FULL")
            except (OSError, sqlite3.Error) as exc:
                raise StoreUnavailable(f"activity_db: cannot open {self.path}: {exc}") from None
            self._local.connection, self._local.pid = connection, os.getpid()
        return connection

    def ensure_schema(self) -> None:
        connection = self._open()
        with self._transaction(connection) as db:
            tables = {
                row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
            if "schema_version" in tables:
                version = int(
                    db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0
                )
            else:
                version = 1 if "events" in tables else 0
            upgrade(db, version, BASE, MIGRATIONS)
        self._schema_ready_in = os.getpid()

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        connection = self.connection
        try:
            yield connection
        except sqlite3.Error as exc:
            raise self._translate(exc) from None

    def writing(self, users: Collection[str] = (), catalog: bool = False):  # type: ignore[no-untyped-def]
        """One ``BEGIN IMMEDIATE`` transaction: SQLite has one writer at a time, which
        serialises every write, whichever customers it is about."""
        return self._transaction(self.connection)

    @contextmanager
    def _transaction(self, connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        try:
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._translate(exc) from None

    @contextmanager
    def run_lock(self, name: str) -> Iterator[None]:
        """A lock file beside the database: SQLite lives on one host, and so do its runs."""
        lock_path = self.path.with_name(f"{self.path.name}.{name}.lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "a+") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise BusyError(f"{lock_path}: another {name} run is in progress") from None
            yield

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            if self._local.pid == os.getpid():
                connection.close()
            self._local.connection = None

    def _translate(self, exc: sqlite3.Error) -> StoreError:
        message = f"activity_db: {self.path}: {exc}"
        if isinstance(exc, sqlite3.OperationalError) and "no such table" not in str(exc):
            return StoreUnavailable(message)  # locked past the timeout, disk full, I/O error
        return StoreError(message)
