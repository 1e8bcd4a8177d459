"""Fixtures: a trained tiny model (once per session), the app and its test client, a
PostgreSQL cluster, and a store location on each backend. Helpers live in ``helpers.py``."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from threadpoolctl import threadpool_limits

from recommender import training

from helpers import (  # noqa: F401
    TINY_LOG,
    Inbox,
    PostgresCluster,
    PostgresMissing,
    close_apps,
    free_port,
    make_app,
    private_copy,
    tiny_config,
    unchanged,
)

threadpool_limits(limits=1, user_api="blas")


# The files that take longest (minutes each), run first: under ``make test`` two workers
# (pytest-xdist, ``--dist loadfile``) share the files, and the Spark parity tests, which
# take half of the suite's time, then run beside the rest instead of after it.
LONGEST_FIRST = ("test_spark.py", "test_quality.py", "test_faults.py", "test_fuzz.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: each file's tests keep their order


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Under ``CI=true`` (``make test``) a skipped test fails, with the reason: a CI without
    Java, Chromium or PostgreSQL must not pass without the tests that need them."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if os.environ.get("CI") == "true" and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, which runs every test: {report.longrepr}"


@pytest.fixture(autouse=True)
def apps_closed() -> Iterator[None]:
    """Every app a test made has its activity store closed when the test ends."""
    yield
    close_apps()


@pytest.fixture
def tiny_log(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.csv"
    path.write_text(TINY_LOG)
    return path


@pytest.fixture(scope="session")
def tiny_models_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny-shared")
    log = root / "tiny.csv"
    log.write_text(TINY_LOG)
    training.run(tiny_config(log, root / "models"))
    return root / "models"


@pytest.fixture
def shared_models(tiny_models_once: Path) -> Iterator[Path]:
    """The tiny log's model, trained once per session, for tests that only read it."""
    with unchanged(tiny_models_once) as models_dir:
        yield models_dir


@pytest.fixture
def trained_models(tiny_models_once: Path, tmp_path: Path) -> Path:
    """The tiny log's model in this test's own ``tmp_path / "models"`` (beside ``activity_db``),
    for tests that train, promote, prune or corrupt versions there."""
    return private_copy(tiny_models_once, tmp_path / "models")


@pytest.fixture
def activity_db(tmp_path: Path) -> Path:
    return tmp_path / "var" / "activity.sqlite3"


@pytest.fixture
def app(shared_models: Path, activity_db: Path):
    """An app on the shared tiny model with this test's own activity database."""
    return make_app(shared_models, activity_db)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def smtp_server() -> Any:
    servers: list[Controller] = []

    def start(inbox: Inbox) -> int:
        port = free_port()
        controller = Controller(inbox, hostname="127.0.0.1", port=port)
        controller.start()
        servers.append(controller)
        return port

    yield start
    for controller in servers:
        controller.stop()


# ------------------------------------------------------------------ a real PostgreSQL server
@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A throwaway cluster for the session (``recommender.testing``); skipped, with the
    reason, where PostgreSQL cannot be installed, and a failure under CI."""
    try:
        cluster = PostgresCluster()
    except PostgresMissing as exc:
        pytest.skip(str(exc))
    yield cluster
    cluster.remove()


@pytest.fixture
def pg_url(postgres_cluster: PostgresCluster) -> Iterator[str]:
    """A fresh database on the shared cluster (the cluster running).

    After the test, a collection in this (the main) thread: a store the test dropped without
    closing leaves a psycopg pool in a reference cycle, and a collection that happens to run
    later in one of that pool's own worker threads fails to join it ("cannot join current
    thread", raised into whichever test is running then)."""
    try:
        url = postgres_cluster.new_database()
    except Exception:
        postgres_cluster.start()
        url = postgres_cluster.new_database()
    yield url
    gc.collect()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where an activity store lives, on each backend: a SQLite file, a PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "var" / "activity.sqlite3")
    return request.getfixturevalue("pg_url")
