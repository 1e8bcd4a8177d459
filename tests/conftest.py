"""Shared fixtures: hand-written logs whose answers are worked out in the tests, a trained model, the app."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from threadpoolctl import threadpool_limits

from recommender import training
from recommender.config import TrainConfig, load_config
from recommender.server import create_app
from recommender.testing import PG_PASSWORD, PostgresCluster, PostgresMissing, free_port  # noqa: F401

threadpool_limits(limits=1, user_api="blas")

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_LOG = ROOT / "data" / "online_retail.parquet"
PYTHON = sys.executable

# Customers: u1 {A,B}, u2 {A,B,C}, u3 {B,C}, u4 {A,B}, u5 {D}.
# Buyers: A 3, B 4, C 2, D 1. Orders: o1 {A,B}, o2 {A,B,C}, o3 {B,C}, o4 {A}, o5 {B}, o6 {D}.
TINY_LOG = """user_id,item_id,timestamp,quantity,order_id,price,name
u1,A,2024-01-01T10:00:00,1,o1,2.00,Apple
u1,B,2024-01-01T10:00:00,2,o1,1.00,Banana
u2,A,2024-01-02T10:00:00,1,o2,2.00,Apple
u2,B,2024-01-02T10:00:00,1,o2,1.00,Banana
u2,C,2024-01-02T10:00:00,1,o2,3.00,Cherry
u3,B,2024-01-03T10:00:00,1,o3,1.00,Banana
u3,C,2024-01-03T10:00:00,1,o3,3.50,Cherry
u4,A,2024-01-04T10:00:00,1,o4,2.00,Apple
u4,B,2024-01-05T10:00:00,1,o5,1.25,Banana
u5,D,2024-01-06T10:00:00,1,o6,9.00,Durian
"""


@pytest.fixture
def tiny_log(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.csv"
    path.write_text(TINY_LOG)
    return path


def tiny_config(data: Path, models_dir: Path, **overrides: object) -> TrainConfig:
    """Config for the tiny log: every item with 2+ buyers gets neighbours; one shared buyer suffices."""
    values = {"data": data, "models_dir": models_dir, "min_support": 2, "min_pair_support": 1,
              "num_threads": 1, "evaluate": False, "activity_db": Path(models_dir).parent / "var" / "activity.sqlite3",
              **overrides}
    return load_config(TrainConfig, overrides=values, environ={})


def snapshot(directory: Path) -> list[tuple[str, object, int]]:
    """Every path under ``directory`` with its link target or size and its mtime."""
    return sorted((str(path.relative_to(directory)),
                   os.readlink(path) if path.is_symlink() else path.lstat().st_size,
                   path.lstat().st_mtime_ns) for path in directory.rglob("*"))


@contextmanager
def unchanged(directory: Path) -> Iterator[Path]:
    """Lend a models directory shared between tests, and fail the test that changed it."""
    before = snapshot(directory)
    yield directory
    assert snapshot(directory) == before, f"{directory} is shared: a test that writes models needs a copy"


def private_copy(models_dir: Path, destination: Path) -> Path:
    """A copy of a trained models directory (``current`` is a relative link) a test may change."""
    shutil.copytree(models_dir, destination, symlinks=True)
    return destination


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


def make_app(models_dir: Path, activity_db: Path, **settings: object):
    """An app on ``models_dir`` whose activity store is a real SQLite file at ``activity_db``."""
    return create_app({"TESTING": True, "models_dir": models_dir, "activity_db": activity_db,
                       "reload_interval": 0, **settings})


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


def wait_until_ready(base: str, server: subprocess.Popen, timeout: float = 60.0) -> None:
    """Poll ``base``/ready until it answers 200 (a model is loaded); fail if the server exits
    or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(base + "/ready", timeout=2):
                return
        except OSError:  # refused while starting, or 503 until the model is loaded
            assert time.monotonic() < deadline and server.poll() is None, "server did not become ready"
            time.sleep(0.2)


# ------------------------------------------------------------------ a real PostgreSQL server
@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A throwaway cluster for the session (``recommender.testing``); skipped, with the
    reason, where PostgreSQL cannot be installed, and a failure under CI."""
    try:
        cluster = PostgresCluster()
    except PostgresMissing as exc:
        if os.environ.get("CI"):
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    yield cluster
    cluster.remove()


@pytest.fixture
def pg_url(postgres_cluster: PostgresCluster) -> str:
    """A fresh database on the shared cluster (the cluster running)."""
    try:
        return postgres_cluster.new_database()
    except Exception:
        postgres_cluster.start()
        return postgres_cluster.new_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where an activity store lives, on each backend: a SQLite file, a PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "var" / "activity.sqlite3")
    return request.getfixturevalue("pg_url")
