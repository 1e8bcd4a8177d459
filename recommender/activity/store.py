"""``ActivityStore``: the activity store, put together from its parts (``events``,
``privacy``, ``ledger``, ``performance``), whose reads and writes are SQL that SQLite and PostgreSQL both
run (``?`` placeholders; the PostgreSQL backend passes them to psycopg as ``%s``).
The backend gives connections, transactions and locks:

- ``reading()``: a connection for reads (no transaction kept open);
- ``writing(users)``: one transaction, all or nothing, serialised with every other write
  about the same ``users`` (SQLite: the database's write lock; PostgreSQL: an advisory lock
  per customer), so a customer's history limit holds and a forget cannot interleave with a
  write about them, whatever the number of servers;
- ``run_lock(name)``: one run of a job (nightly, alerts) per store;
- driver errors as ``StoreUnavailable`` (cannot reach it: HTTP 503, retry) or ``StoreError``.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

from .base import Backend, is_database_url
from .events import ShopperActivity
from .ledger import CatalogLedger
from .performance import Performance
from .privacy import Suppression


class ActivityStore(ShopperActivity, Suppression, CatalogLedger, Performance):
    """Events, wish lists, suppression, catalog history, the alert ledger, and what
    recommendations earn (impressions, attributions, experiments).

    Parameters
    ----------
    location : a SQLite file (its directory is created if missing) or a PostgreSQL URL.
    history_limit : events kept per shopper (the newest).
    history_days : events older than this are deleted.
    password : the PostgreSQL password when the URL has none (``RECO_ACTIVITY_DB_PASSWORD``);
        libpq's own ``PGPASSWORD`` and ``~/.pgpass`` work too.
    pool_size : PostgreSQL connections per process at most (one per serving thread is enough).
    """

    backend: Backend

    def __init__(
        self,
        location: str | Path,
        history_limit: int = 200,
        history_days: float = 90.0,
        password: str | None = None,
        pool_size: int = 4,
    ) -> None:
        self.history_limit = history_limit
        self.history_days = history_days
        if is_database_url(location):
            from .postgres import PostgresBackend

            self.backend = PostgresBackend(str(location), password, pool_size)
        else:
            from .sqlite import SqliteBackend

            self.backend = SqliteBackend(Path(location))
        self._known_suppressed: dict[str, str] = {}
        self._known_since: float | None = None
        self._known_checked = 0.0

    @property
    def where(self) -> str:
        """The store's location for messages (no password)."""
        return self.backend.where

    def exists(self) -> bool:
        """Whether there is a store to read: the SQLite file exists (a server URL always does)."""
        return self.backend.exists()

    def create_schema(self) -> None:
        """Create the tables, or upgrade an older schema in place (safe from every worker at once)."""
        self.backend.ensure_schema()

    def close(self) -> None:
        """Close this process's (SQLite: this thread's) connections."""
        self.backend.close()

    def run_lock(self, name: str) -> AbstractContextManager[None]:
        """Hold the store's lock for one run of ``name`` (raises ``BusyError`` if another holds it)."""
        return self.backend.run_lock(name)

    def schema_version(self) -> int:
        with self.backend.reading() as db:
            return int(db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0])
