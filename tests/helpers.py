"""Test helpers, in one module (fixtures stay in ``conftest.py``): hand-written logs whose
answers the tests work out, configs and apps over them, real server processes, and counts
read straight from a store. ``recommender.testing`` holds what benchmarks share (free ports,
a throwaway PostgreSQL cluster)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recommender.activity import ActivityStore
from recommender.bundle import PersonalLists, StreamedLists
from recommender.config import TrainConfig, load_config
from recommender.server import create_app
from recommender.testing import PG_PASSWORD, PostgresCluster, PostgresMissing, free_port  # noqa: F401

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


def tiny_config(data: Path, models_dir: Path, **overrides: object) -> TrainConfig:
    """Config for the tiny log: every item with 2+ buyers gets neighbours; one shared buyer suffices."""
    values = {
        "data": data,
        "models_dir": models_dir,
        "min_support": 2,
        "min_pair_support": 1,
        "num_threads": 1,
        "evaluate": False,
        "activity_db": Path(models_dir).parent / "var" / "activity.sqlite3",
        **overrides,
    }
    return load_config(TrainConfig, overrides=values, environ={})


def snapshot(directory: Path) -> list[tuple[str, object, int]]:
    """Every path under ``directory`` with its link target or size and its mtime."""
    return sorted(
        (
            str(path.relative_to(directory)),
            os.readlink(path) if path.is_symlink() else path.lstat().st_size,
            path.lstat().st_mtime_ns,
        )
        for path in directory.rglob("*")
    )


@contextmanager
def unchanged(directory: Path) -> Iterator[Path]:
    """Lend a models directory shared between tests, and fail the test that changed it."""
    before = snapshot(directory)
    yield directory
    assert snapshot(directory) == before, (
        f"{directory} is shared: a test that writes models needs a copy"
    )


def private_copy(models_dir: Path, destination: Path) -> Path:
    """A copy of a trained models directory (``current`` is a relative link) a test may change."""
    shutil.copytree(models_dir, destination, symlinks=True)
    return destination


# Apps made by the running test: their stores are closed when it ends (``conftest``), so that
# no PostgreSQL pool is left for the garbage collector to stop during a later test.
OPEN_APPS: list = []


def make_app(models_dir: Path, activity_db: Path | str, **settings: object):
    """An app on ``models_dir`` whose activity store is a real SQLite file (or PostgreSQL
    database) at ``activity_db``."""
    app = create_app(
        {
            "TESTING": True,
            "models_dir": models_dir,
            "activity_db": activity_db,
            "reload_interval": 0,
            **settings,
        }
    )
    OPEN_APPS.append(app)
    return app


def close_apps() -> None:
    """Close the stores of every app ``make_app`` made since the last call."""
    while OPEN_APPS:
        app = OPEN_APPS.pop()
        app.extensions["recommender_tracing"].counter.close()
        app.extensions["recommender_activity"].close()


def wait_until_ready(base: str, server: subprocess.Popen, timeout: float = 60.0) -> None:
    """Poll ``base``/ready until it answers 200 (a model is loaded); fail if the server exits
    or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(base + "/ready", timeout=2):
                return
        except OSError:  # refused while starting, or 503 until the model is loaded
            assert time.monotonic() < deadline and server.poll() is None, (
                "server did not become ready"
            )
            time.sleep(0.2)


def serve_command(
    models: Path, activity: Path | str, port: int, *options: str, workers: int = 2
) -> list[str]:
    """``serve.py`` on 127.0.0.1:``port`` over ``models`` and the store at ``activity``, no
    request log, with ``options`` added."""
    return [
        PYTHON,
        "serve.py",
        "--port",
        str(port),
        "--models-dir",
        str(models),
        "--workers",
        str(workers),
        "--activity-db",
        str(activity),
        "--request-log",
        "",
        *options,
    ]


def start_server(
    models: Path,
    activity: Path | str,
    port: int,
    *options: str,
    workers: int = 2,
    env: dict[str, str] | None = None,
) -> subprocess.Popen:
    """A real server process (gunicorn), ready to answer; killed if it does not get ready."""
    server = subprocess.Popen(
        serve_command(models, activity, port, *options, workers=workers),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    try:
        wait_until_ready(f"http://127.0.0.1:{port}", server)
    except AssertionError:
        server.kill()
        raise
    return server


# ------------------------------------------------------------------ logs with known answers
# Customers x items A, B, C, D: u1 {A,B}, u2 {A,B,C}, u3 {B,C}, u4 {A,B}, u5 {D}.
USER_ITEMS = sp.csr_matrix(
    np.array(
        [[1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 1]], dtype=np.float32
    )
)

GARDEN, KITCHEN = ["G1", "G2", "G3", "G4"], ["K1", "K2", "K3", "K4"]
BASKETS = {
    "g1": ["G1", "G2", "G3"],
    "g2": ["G1", "G2", "G4"],
    "g3": ["G1", "G3", "G4"],
    "g4": ["G2", "G3", "G4"],
    "g5": GARDEN,
    "g6": GARDEN,
    "g7": GARDEN,
    "k1": ["K1", "K2", "K3"],
    "k2": ["K1", "K2", "K4"],
    "k3": ["K1", "K3", "K4"],
    "k4": ["K2", "K3", "K4"],
    "k5": KITCHEN,
    "k6": KITCHEN,
    "k7": KITCHEN,
    "x1": ["G1", "K1"],
}
PRICES = {"G1": 10, "G2": 20, "G3": 30, "G4": 40, "K1": 5, "K2": 15, "K3": 25, "K4": 35}


def write_log(path: Path) -> None:
    lines = ["user_id,item_id,timestamp,quantity,order_id,price"]
    for day, (user, items) in enumerate(BASKETS.items(), start=1):
        lines += [
            f"{user},{item},2024-03-{day:02d}T12:00:00,1,{user}-o,{PRICES[item]}" for item in items
        ]
    path.write_text("\n".join(lines) + "\n")


ORIGIN = pd.Timestamp("2023-01-01")


def shop_log(customers: int, days_active: callable, seed: int = 0) -> pd.DataFrame:
    """One order every ``gap`` days for each customer over the days ``days_active(c)`` gives,
    each order two items drawn from 400 (so new items keep appearing)."""
    rng = np.random.default_rng(seed)
    rows = []
    for customer in range(customers):
        for order, day in enumerate(days_active(customer)):
            for item in rng.choice(400, 2, replace=False):
                rows.append(
                    (
                        f"c{customer}",
                        f"i{item}",
                        ORIGIN + pd.Timedelta(days=float(day)),
                        f"c{customer}-{order}",
                    )
                )
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "order_id"])
    return frame.astype({"user_id": "string", "item_id": "string", "order_id": "string"})


def write_uniform_log(path: Path) -> None:
    log = shop_log(120, lambda c: range(c % 7, 200, 7), seed=3)
    log.to_csv(path, index=False)


# ------------------------------------------------------------------ a real SMTP server
class Inbox:
    """aiosmtpd handler: keeps every accepted message. With ``hold_after`` set, the message
    after that many is held unanswered until ``release`` is set, then refused with 421 and not
    kept: a client killed meanwhile never learnt it was accepted, and it was not."""

    def __init__(self, hold_after: int | None = None) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.hold_after = hold_after
        self.holding = threading.Event()
        self.release = threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.hold_after is not None and len(self.messages) >= self.hold_after:
            self.holding.set()
            while not self.release.is_set():
                await asyncio.sleep(0.05)
            return "421 closing"
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        message["X-Envelope-To"] = ",".join(envelope.rcpt_tos)
        self.messages.append(message)  # type: ignore[arg-type]
        return "250 OK"

    def recipients(self) -> Counter[str]:
        return Counter(str(m["To"]) for m in self.messages)


# ------------------------------------------------------------------ reading what was stored
def count_events(store: ActivityStore) -> int:
    """Events in a store, counted straight from the database (no store method needed)."""
    with store.backend.reading() as db:
        return int(db.execute("SELECT COUNT(*) FROM events").fetchone()[0])


def collect_lists(streamed: StreamedLists) -> PersonalLists:
    """Streamed precomputed lists (``serving.batch.stream_lists``) gathered in memory."""
    blocks = list(streamed.packed.chunks)
    packed = np.concatenate(blocks) if blocks else np.empty((0, 2, streamed.depth), dtype=np.int32)
    return PersonalLists.from_packed(
        packed, next(iter(streamed.strategy.chunks)), np.asarray(streamed.rows)
    )


# "Buy it again": c1 buys Milk weekly (4 orders) and Bread twice a week apart, a Lamp once;
# c2 Milk twice 14 days apart and a Lamp once; c3 a Lamp, Bread and Jam once; c4 Milk and Jam
# once, on the log's last day (2024-01-31). Milk's cycle: (21 + 14) days over 3 + 1 rebuys =
# 8.75; rates (rebuyers + 1) / (buyers + 2): Milk 3/5, Bread 2/4, Lamp 1/5, Jam 1/4; the shop's
# rate: 3 of 10 customer-item pairs bought twice or more.
REPEAT_LOG = """user_id,item_id,timestamp,quantity,order_id,price,name,category
c1,Milk,2024-01-01T09:00:00,1,c1-1,1.00,Milk,dairy
c1,Milk,2024-01-08T09:00:00,1,c1-2,1.00,Milk,dairy
c1,Lamp,2024-01-08T09:00:00,1,c1-2,30.00,Lamp,home
c1,Milk,2024-01-15T09:00:00,1,c1-3,1.00,Milk,dairy
c1,Bread,2024-01-15T09:00:00,1,c1-3,2.00,Bread,bakery
c1,Milk,2024-01-22T09:00:00,1,c1-4,1.00,Milk,dairy
c1,Bread,2024-01-22T09:00:00,1,c1-4,2.00,Bread,bakery
c2,Milk,2024-01-05T09:00:00,1,c2-1,1.00,Milk,dairy
c2,Milk,2024-01-19T09:00:00,1,c2-2,1.00,Milk,dairy
c2,Lamp,2024-01-19T09:00:00,1,c2-2,30.00,Lamp,home
c3,Lamp,2024-01-10T09:00:00,1,c3-1,30.00,Lamp,home
c3,Bread,2024-01-29T09:00:00,1,c3-2,2.00,Bread,bakery
c3,Jam,2024-01-29T09:00:00,1,c3-2,3.00,Jam,bakery
c4,Milk,2024-01-31T09:00:00,1,c4-1,1.00,Milk,dairy
c4,Jam,2024-01-31T09:00:00,1,c4-1,3.00,Jam,bakery
"""


def rebuy_log(customers: int, staples: bool, seed: int = 0) -> pd.DataFrame:
    """A shop of ``customers`` with an order every 7 days for 24 weeks: with ``staples`` each
    customer's orders hold their own 3 staples (of 60) plus one item at random; without, 3
    items they never bought before (nobody rebuys)."""
    rng = np.random.default_rng(seed)
    rows = []
    for customer in range(customers):
        own = rng.choice(60, 3, replace=False)
        unseen = list(rng.permutation(400) + 60)
        for order in range(24):
            start = customer % 7
            items = (
                [*own, int(rng.integers(60, 460))] if staples else [unseen.pop() for _ in range(3)]
            )
            for item in dict.fromkeys(int(i) for i in items):
                rows.append(
                    (
                        f"c{customer}",
                        f"i{item}",
                        ORIGIN + pd.Timedelta(days=float(start + 7 * order)),
                        f"c{customer}-{order}",
                    )
                )
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "order_id"])
    return frame.astype({"user_id": "string", "item_id": "string", "order_id": "string"})
