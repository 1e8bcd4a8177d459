"""The PostgreSQL backend: one database that every server, the nightly job and the alerts
run share.

psycopg 3 with psycopg_pool (docs/performance.md: measured against SQLAlchemy Core on the
personal endpoints' hot path): each process opens its own pool after gunicorn forks, of at
most ``pool_size`` connections, and statements run with server-side prepared plans.

Across hosts, the database decides:

- a write about customers takes a transaction-scoped advisory lock per customer, so two
  servers writing about one shopper are serialised (the history limit holds) and a forget
  cannot interleave with a write about the same customer;
- a job (nightly, alerts) holds a session advisory lock for its whole run: a second run on
  any host finds it taken (``BusyError``, exit 75); a killed run's lock ends with its session.

When the database cannot be reached, the backend says so at once (``StoreUnavailable``) for
``RETRY_SECONDS``, then tries one plain connection before it builds a new pool: a request
never waits on a pool that cannot fill, and the server reconnects by itself.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from ..errors import BusyError, StoreError, StoreUnavailable
from .base import PERFORMANCE_TABLES, describe, upgrade

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 2
POOL_WAIT_SECONDS = 2.0
RETRY_SECONDS = 1.0
# Advisory lock namespaces (the first key of pg_advisory_lock(int, int)).
USER_LOCKS, RUN_LOCKS, CATALOG_LOCK, SCHEMA_LOCK = 7301, 7302, 7303, 7304

BASE = [
    """CREATE TABLE IF NOT EXISTS events (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        user_id TEXT NOT NULL,
        item_id TEXT NOT NULL,
        type TEXT NOT NULL CHECK (type IN ('view', 'cart', 'wishlist', 'purchase')),
        ts DOUBLE PRECISION NOT NULL,
        received_at DOUBLE PRECISION NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS events_by_user ON events (user_id, ts)",
    "CREATE INDEX IF NOT EXISTS events_by_type ON events (type, ts)",
    """CREATE TABLE IF NOT EXISTS suppressed (
        user_id TEXT PRIMARY KEY, reason TEXT NOT NULL, at DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS wishlist (
        user_id TEXT NOT NULL, item_id TEXT NOT NULL, added_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (user_id, item_id))""",
    """CREATE TABLE IF NOT EXISTS catalog_changes (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, item_id TEXT NOT NULL, price DOUBLE PRECISION,
        available INTEGER, at DOUBLE PRECISION NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS catalog_changes_by_item ON catalog_changes (item_id, at)",
    """CREATE TABLE IF NOT EXISTS digests (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        user_id TEXT NOT NULL,
        channel TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('sending', 'sent', 'exported', 'refused')),
        message_id TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        sent_at DOUBLE PRECISION)""",
    "CREATE INDEX IF NOT EXISTS digests_by_user ON digests (user_id, created_at)",
    """CREATE TABLE IF NOT EXISTS alerts_delivered (
        user_id TEXT NOT NULL, item_id TEXT NOT NULL, reason TEXT NOT NULL,
        change_at DOUBLE PRECISION NOT NULL, digest_id BIGINT NOT NULL REFERENCES digests (id),
        PRIMARY KEY (user_id, item_id, reason, change_at))""",
]
MIGRATIONS = {
    2: [
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
        "CREATE INDEX IF NOT EXISTS suppressed_by_time ON suppressed (at)",
    ],
    3: [
        statement.format(
            real="DOUBLE PRECISION", id="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"
        )
        for statement in PERFORMANCE_TABLES
    ],
}
LOCK_USERS = (
    f"SELECT pg_advisory_xact_lock({USER_LOCKS}, key) FROM "
    "(SELECT DISTINCT hashtext(id) AS key FROM unnest(%s::text[]) AS id ORDER BY 1) AS keys"
)


@lru_cache(maxsize=256)
def _placeholders(sql: str) -> str:
    """The store's ``?`` placeholders as psycopg's ``%s`` (the statements hold no other ``?`` or ``%``)."""
    return sql.replace("?", "%s")


class _Session:
    """A pooled connection with the store's placeholders."""

    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self.connection = connection

    def execute(self, sql: str, args: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        return self.connection.execute(_placeholders(sql), args)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> psycopg.Cursor[Any]:
        cursor = self.connection.cursor()
        cursor.executemany(_placeholders(sql), list(rows))
        return cursor


class PostgresBackend:
    kind = "postgresql"

    def __init__(self, url: str, password: str | None = None, pool_size: int = 4) -> None:
        self.url = url
        self.where = describe(url)
        self.pool_size = max(1, pool_size)
        self.connect_args: dict[str, Any] = {
            "connect_timeout": CONNECT_TIMEOUT_SECONDS,
            "application_name": "recommender",
        }
        if password:
            self.connect_args["password"] = password
        self.on_state: Callable[[bool], None] | None = None
        self.available = True
        self._pool: ConnectionPool | None = None
        self._pool_pid: int | None = None
        self._schema_ready_in: int | None = None
        self._retry_at = 0.0
        self._lock = threading.Lock()

    def exists(self) -> bool:
        return True

    # ------------------------------------------------------------------ connections
    def _ready_pool(self) -> ConnectionPool:
        """This process's pool; while the database is away, ``StoreUnavailable`` at once
        until ``RETRY_SECONDS`` have passed, then one plain connection decides."""
        with self._lock:
            if not self.available:
                if time.monotonic() < self._retry_at:
                    raise StoreUnavailable(f"activity_db: {self.where} is unreachable; retry later")
                try:
                    psycopg.connect(self.url, **self.connect_args).close()
                except psycopg.Error as exc:
                    self._retry_at = time.monotonic() + RETRY_SECONDS
                    raise StoreUnavailable(
                        f"activity_db: {self.where} is unreachable: {_first_line(exc)}"
                    ) from None
                self._drop_pool()
            if self._pool is None or self._pool_pid != os.getpid():
                self._pool = ConnectionPool(
                    self.url,
                    kwargs={**self.connect_args, "autocommit": True},
                    min_size=1,
                    max_size=self.pool_size,
                    timeout=POOL_WAIT_SECONDS,
                    open=False,
                    name="recommender-activity",
                )
                self._pool.open(wait=False)
                self._pool_pid = os.getpid()
            return self._pool

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        pool = self._ready_pool()
        try:
            with pool.connection() as connection:
                if self._schema_ready_in != os.getpid():
                    self._upgrade(connection)
                yield connection
        except (psycopg.Error, PoolTimeout, PoolClosed) as exc:
            raise self._failed(exc) from None
        if not self.available:
            self.available = True
            logger.warning("activity store %s is reachable again", self.where)
            if self.on_state:
                self.on_state(True)

    def _failed(self, exc: Exception) -> StoreError:
        unreachable = isinstance(exc, (PoolTimeout, PoolClosed)) or (
            isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))
            and (exc.sqlstate is None or exc.sqlstate.startswith(("08", "57P")))
        )
        if not unreachable:
            return StoreError(f"activity_db: {self.where}: {_first_line(exc)}")
        with self._lock:
            if self.available:
                logger.warning("activity store %s is unreachable: %s", self.where, _first_line(exc))
            self.available = False
            self._retry_at = time.monotonic() + RETRY_SECONDS
            self._drop_pool()
        if self.on_state:
            self.on_state(False)
        return StoreUnavailable(f"activity_db: {self.where} is unreachable: {_first_line(exc)}")

    def _drop_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None and self._pool_pid == os.getpid():
            threading.Thread(target=pool.close, kwargs={"timeout": 1.0}, daemon=True).start()

    # ------------------------------------------------------------------ the store's interface
    def ensure_schema(self) -> None:
        self._schema_ready_in = None
        with self._connection():
            pass

    def _upgrade(self, connection: psycopg.Connection[Any]) -> None:
        """Create or upgrade the schema, one process at a time (an advisory lock)."""
        with connection.transaction():
            session = _Session(connection)
            session.execute(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK}, 0)")
            found = session.execute(
                "SELECT to_regclass('schema_version') IS NOT NULL, "
                "to_regclass('events') IS NOT NULL"
            ).fetchone()
            exists, events = found if found else (False, False)
            stored = (
                session.execute("SELECT MAX(version) FROM schema_version").fetchone()
                if exists
                else None
            )
            version = int(stored[0] or 0) if stored else (1 if events else 0)
            upgrade(session, version, BASE, MIGRATIONS)
        self._schema_ready_in = os.getpid()

    @contextmanager
    def reading(self) -> Iterator[_Session]:
        with self._connection() as connection:
            yield _Session(connection)

    @contextmanager
    def writing(self, users: Collection[str] = (), catalog: bool = False) -> Iterator[_Session]:
        with self._connection() as connection, connection.transaction():
            session = _Session(connection)
            if users:
                session.execute(LOCK_USERS, (sorted(users),))
            if catalog:
                session.execute(f"SELECT pg_advisory_xact_lock({CATALOG_LOCK}, 0)")
            yield session

    @contextmanager
    def run_lock(self, name: str) -> Iterator[None]:
        """A session advisory lock on a connection of its own, held for the whole run."""
        try:
            connection = psycopg.connect(self.url, autocommit=True, **self.connect_args)
        except psycopg.Error as exc:
            raise StoreUnavailable(
                f"activity_db: {self.where} is unreachable: {_first_line(exc)}"
            ) from None
        try:
            taken = connection.execute(
                "SELECT pg_try_advisory_lock(%s, hashtext(%s))", (RUN_LOCKS, name)
            ).fetchone()
            if not taken or not taken[0]:
                raise BusyError(f"activity_db: another {name} run holds the lock in {self.where}")
            yield
        finally:
            connection.close()  # ends the session, and the lock with it

    def close(self) -> None:
        with self._lock:
            if self._pool is not None and self._pool_pid == os.getpid():
                self._pool.close()
            self._pool = None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
