"""The activity store's contract, on both backends: a real SQLite file and a real PostgreSQL
server (a throwaway cluster on 127.0.0.1). Atomic batches, bounded history under concurrent
writers in several processes, wish lists, privacy, catalog history, the alert ledger, run
locks, the schema's version and the upgrade of a file written before it had one."""

from __future__ import annotations

import multiprocessing
import shutil
import time
from pathlib import Path

import pytest

from recommender.activity import SCHEMA_VERSION, ActivityStore, Event, describe
from recommender.errors import BusyError, StoreError, StoreUnavailable

from helpers import count_events

NOW = 1_700_000_000.0
DAY = 86400.0
V1_FILE = (
    Path(__file__).parent / "data" / "activity_v1.sqlite3"
)  # written by the store before versions


@pytest.fixture
def store(store_location: str):
    store = ActivityStore(store_location, history_limit=3, history_days=10)
    store.create_schema()
    yield store
    store.close()


def test_sqlite_is_in_wal_mode_with_durable_writes(tmp_path: Path) -> None:
    store = ActivityStore(tmp_path / "activity.sqlite3")
    connection = store.backend.connection  # type: ignore[attr-defined]
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert connection.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_schema_is_versioned(store: ActivityStore) -> None:
    assert store.schema_version() == SCHEMA_VERSION
    store.create_schema()  # again: nothing changes
    assert store.schema_version() == SCHEMA_VERSION


def test_recent_events_newest_first_and_bounded(store: ActivityStore) -> None:
    events = [Event("ana", f"item{i}", "view", NOW - i * 3600) for i in range(5)]
    events.append(Event("ben", "x", "cart", NOW))
    assert store.add_events(events, now=NOW) == 6
    recent = store.recent_events("ana", now=NOW)
    assert [e.item_id for e in recent] == [
        "item0",
        "item1",
        "item2",
    ]  # history_limit 3, newest first
    assert recent[0] == Event("ana", "item0", "view", NOW)
    assert count_events(store) == 4  # ana's two oldest were pruned at once
    assert store.recent_events("nobody", now=NOW) == []


def test_old_events_are_pruned_by_age(store: ActivityStore) -> None:
    store.add_events(
        [Event("ana", "old", "view", NOW - 11 * DAY), Event("ana", "new", "view", NOW)], now=NOW
    )
    assert [e.item_id for e in store.recent_events("ana", now=NOW)] == ["new"]
    assert count_events(store) == 1
    assert store.prune(now=NOW + 11 * DAY) == 1
    assert count_events(store) == 0


def test_a_failing_batch_writes_nothing(store: ActivityStore) -> None:
    with pytest.raises(StoreError):
        store.add_events(
            [Event("ana", "a", "view", NOW), Event("ana", "b", "teleport", NOW)], now=NOW
        )
    assert count_events(store) == 0


def test_wishlist_round_trip(store: ActivityStore) -> None:
    assert store.add_to_wishlist("ana", "tent", now=NOW) is True
    assert store.add_to_wishlist("ana", "tent", now=NOW + 1) is False
    assert store.add_to_wishlist("ana", "stove", now=NOW + 2) is True
    assert store.wishlist("ana") == [("stove", NOW + 2), ("tent", NOW)]
    assert [(e.item_id, e.type) for e in store.recent_events("ana", now=NOW)] == [
        ("stove", "wishlist"),
        ("tent", "wishlist"),
    ]
    assert store.remove_from_wishlist("ana", "tent") is True
    assert store.remove_from_wishlist("ana", "tent") is False
    assert store.wishlist("ana") == [("stove", NOW + 2)]
    assert store.wishlist("ben") == []


def test_a_shopper_in_one_read(store: ActivityStore) -> None:
    """Suppression, recent events and wish list together, as the separate reads give them."""
    store.add_events(
        [
            Event("ana", "a", "view", NOW - 30),
            Event("ana", "b", "cart", NOW - 10),
            Event("ana", "old", "view", NOW - 11 * DAY),
            Event("ben", "c", "view", NOW),
        ],
        now=NOW,
    )
    store.add_to_wishlist("ana", "tent", now=NOW - 20)
    store.add_to_wishlist("ana", "stove", now=NOW - 5)
    ana = store.shopper("ana", wishlist=True, now=NOW)
    assert ana.suppression is None
    assert ana.recent == store.recent_events("ana", now=NOW)
    assert [(e.item_id, e.type) for e in ana.recent] == [
        ("stove", "wishlist"),
        ("b", "cart"),
        ("tent", "wishlist"),
    ]
    assert ana.wishlist == store.wishlist("ana") == [("stove", NOW - 5), ("tent", NOW - 20)]
    assert store.shopper("ana", now=NOW).wishlist == []
    store.set_opt_out("ben", True, now=NOW)
    ben = store.shopper("ben", wishlist=True, now=NOW)
    assert (ben.suppression, [e.item_id for e in ben.recent], ben.wishlist) == (
        "opted_out",
        ["c"],
        [],
    )
    assert store.shopper("nobody", now=NOW).recent == []


def test_purchases_for_training(store: ActivityStore) -> None:
    store.add_events(
        [
            Event("ana", "a", "purchase", NOW - 10),
            Event("ana", "b", "view", NOW),
            Event("ben", "c", "purchase", NOW - 20),
        ],
        now=NOW,
    )
    assert [(e.user_id, e.item_id) for e in store.purchases()] == [("ben", "c"), ("ana", "a")]
    assert [e.item_id for e in store.purchases(since=NOW - 15)] == ["a"]


def test_forget_and_opt_out(store: ActivityStore) -> None:
    store.add_events([Event("ana", "a", "view", NOW), Event("ben", "b", "view", NOW)], now=NOW)
    store.add_to_wishlist("ana", "tent", now=NOW)
    store.open_digest("ana", "file", "", "[]", [("tent", "back_in_stock", NOW)], now=NOW)
    assert store.forget("ana", now=NOW) == {
        "events_erased": 2,
        "wishlist_items_erased": 1,
        "attributed_events_erased": 0,
    }
    assert store.suppression("ana") == "forgotten"
    assert store.everything_about("ana") == {
        "events": [],
        "wishlist": [],
        "attributed_events": [],
        "experiments": [],
        "suppression": "forgotten",
    }
    assert store.delivered_alerts("ana") == set() and "ana" not in store.last_digest_at()
    # Nothing more is stored about a forgotten customer, by events or by the wish list.
    assert store.add_events([Event("ana", "c", "view", NOW)], now=NOW) == 0
    assert store.add_to_wishlist("ana", "lamp", now=NOW) is False and store.wishlist("ana") == []
    store.set_opt_out("ben", True, now=NOW)
    store.set_opt_out("ana", False, now=NOW)  # a forgotten customer stays forgotten
    assert sorted(store.suppressed()) == ["ana", "ben"]
    assert store.suppressed("forgotten") == ["ana"]
    store.set_opt_out("ben", False, now=NOW)
    assert store.suppression("ben") is None
    assert [e["item_id"] for e in store.everything_about("ben")["events"]] == ["b"]  # type: ignore[index]


def test_catalog_history_interest_and_the_alert_ledger(store: ActivityStore) -> None:
    assert store.record_catalog([("A", 2.0, True), ("C", 3.5, False)], now=NOW) == 2
    assert store.record_catalog([("A", None, None), ("C", None, True)], now=NOW + 1) == 1
    history = store.catalog_history()
    assert [(s.price, s.available, s.at) for s in history["C"]] == [
        (3.5, False, NOW),
        (3.5, True, NOW + 1),
    ]
    assert list(store.catalog_history(["A"])) == ["A"] and store.catalog_history([]) == {}
    store.add_to_wishlist("ana", "C", now=NOW)
    store.add_events([Event("ben", "A", "view", NOW - 5), Event("ben", "A", "view", NOW)], now=NOW)
    assert sorted(store.interest(NOW - 1)) == [
        ("ana", "C", "wishlist", NOW),
        ("ben", "A", "view", NOW),
    ]
    assert store.interest(NOW - 1, "ana") == [("ana", "C", "wishlist", NOW)]
    digest = store.open_digest(
        "ana", "smtp", "<m1@shop>", "body", [("C", "back_in_stock", NOW + 1)], now=NOW + 2
    )
    assert store.pending_digests() == [(digest, "ana", "<m1@shop>", "body")]
    assert store.delivered_alerts() == {("ana", "C", "back_in_stock", NOW + 1)}
    assert store.last_digest_at() == {"ana": NOW + 2}
    store.mark_sent(digest, now=NOW + 3)
    assert store.pending_digests() == []
    refused = store.open_digest(
        "ben", "smtp", "<m2@shop>", "body", [("A", "price_drop", NOW)], now=NOW + 2
    )
    store.mark_refused(refused)
    assert store.pending_digests() == []


def test_run_locks_admit_one_run_at_a_time(store: ActivityStore, store_location: str) -> None:
    other = ActivityStore(store_location)
    with store.run_lock("nightly"):
        with pytest.raises(BusyError):
            with other.run_lock("nightly"):
                pass
        with other.run_lock("alerts"):  # another job's lock is another lock
            pass
    with other.run_lock("nightly"):  # released with the run
        pass
    other.close()


def _write(
    location: str, writer: int, batches: int, user: str | None, refused: object = None
) -> None:
    """``batches`` batches of 5 events; with ``batches`` 0, batches until 5 were refused (the
    customer was forgotten meanwhile) or 60 seconds passed."""
    store = ActivityStore(
        location, history_limit=10_000 if user is None else 7, history_days=10_000
    )
    dropped, batch, deadline = 0, 0, time.monotonic() + 60
    while batch < batches or (batches == 0 and dropped < 5 and time.monotonic() < deadline):
        dropped += (
            store.add_events(
                [
                    Event(user or f"w{writer}", f"i{writer}-{batch}-{n}", "view", NOW + batch)
                    for n in range(5)
                ],
                now=NOW,
            )
            == 0
        )
        batch += 1
    store.close()
    if refused is not None:
        refused.put(dropped)  # type: ignore[attr-defined]


def _run_writers(
    location: str,
    writers: int,
    batches: int,
    user: str | None = None,
    also: multiprocessing.process.BaseProcess | None = None,
) -> int:
    """Run the writers (and ``also``) in processes of their own; the batches they saw refused."""
    context = multiprocessing.get_context("spawn")
    refused = context.Queue()
    processes = [
        context.Process(target=_write, args=(location, n, batches, user, refused))
        for n in range(writers)
    ]
    for process in processes + ([also] if also else []):
        process.start()
    counts = [refused.get(timeout=120) for _ in processes]
    for process in processes + ([also] if also else []):
        process.join(timeout=120)
        assert process.exitcode == 0
    return sum(counts)


def test_concurrent_writers_in_several_processes_lose_nothing(
    store: ActivityStore, store_location: str
) -> None:
    assert _run_writers(store_location, 4, 40) == 0
    assert count_events(store) == 4 * 40 * 5


def test_the_history_limit_holds_under_concurrent_writers(
    store: ActivityStore, store_location: str
) -> None:
    """Four processes write about one shopper at once, each pruning to 7 events: each write
    is serialised with the others about that shopper, so 7 remain, not 7 per writer."""
    _run_writers(store_location, 4, 25, user="shared")
    assert count_events(store) == 7


def _forget_once_written(location: str) -> None:
    store = ActivityStore(location)
    deadline = time.monotonic() + 60
    while count_events(store) == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    store.forget("victim")


def test_a_forget_amid_concurrent_writes_leaves_nothing(
    store: ActivityStore, store_location: str
) -> None:
    """Writers keep recording the customer while another process forgets them: whatever
    commits after the forget stores nothing, and the forget erased all before it."""
    forgetter = multiprocessing.get_context("spawn").Process(
        target=_forget_once_written, args=(store_location,)
    )
    refused = _run_writers(store_location, 3, 0, user="victim", also=forgetter)
    assert refused == 3 * 5, "the writers did not see the forget"
    assert store.suppression("victim") == "forgotten"
    assert store.recent_events("victim", now=NOW) == [] and count_events(store) == 0


def test_a_store_written_before_versions_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "activity.sqlite3"
    shutil.copy(V1_FILE, path)
    store = ActivityStore(path, history_days=100_000)
    assert store.schema_version() == SCHEMA_VERSION
    assert [(e.item_id, e.type) for e in store.recent_events("ana", now=NOW)] == [
        ("lamp", "wishlist"),
        ("stove", "purchase"),
        ("tent", "view"),
    ]
    assert store.wishlist("ana") == [("lamp", NOW + 3)]
    assert store.suppression("ben") == "opted_out" and store.suppression("cem") == "forgotten"
    assert [c.price for c in store.catalog_history()["tent"]] == [99.0]
    assert store.delivered_alerts() == {("ana", "tent", "price_drop", NOW + 6)}
    assert store.add_events([Event("ana", "rope", "cart", NOW + 8)], now=NOW + 8) == 1
    store.close()


def test_a_store_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "activity.sqlite3"
    ActivityStore(path).create_schema()
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(StoreError, match="newer"):
        ActivityStore(path).wishlist("ana")


def test_a_database_url_never_shows_its_password() -> None:
    assert (
        describe("postgresql://shop:s3cret@db.example:5432/reco")
        == "postgresql://shop:***@db.example:5432/reco"
    )
    assert describe("postgresql://shop@db.example/reco") == "postgresql://shop@db.example/reco"
    assert describe("var/activity.sqlite3") == "var/activity.sqlite3"


def test_postgres_away_and_back(postgres_cluster, pg_url: str) -> None:
    """With the database stopped, calls fail at once with StoreUnavailable (the suppression
    list last read still answers); after it restarts, the same store works again by itself."""
    store = ActivityStore(pg_url)
    store.forget("gone", now=NOW)
    assert store.suppression("gone") == "forgotten"
    postgres_cluster.stop()
    try:
        with pytest.raises(StoreUnavailable):
            store.add_events([Event("ana", "a", "view", NOW)], now=NOW)
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            store.recent_events("ana")
        assert time.monotonic() - started < 0.5  # no wait on a pool that cannot fill
        assert store.suppression("gone") == "forgotten" and store.suppression("ana") is None
    finally:
        postgres_cluster.start()
    deadline = time.monotonic() + 10
    while True:
        try:
            assert store.add_events([Event("ana", "a", "view", NOW)], now=NOW) == 1
            break
        except StoreUnavailable:
            assert time.monotonic() < deadline, "the store did not reconnect"
            time.sleep(0.2)
    assert [e.item_id for e in store.recent_events("ana", now=NOW)] == ["a"]
    store.close()


def test_postgres_password_from_the_setting(postgres_cluster, pg_url: str) -> None:
    from helpers import PG_PASSWORD

    bare = pg_url.replace(f":{PG_PASSWORD}@", "@")
    # Both closed: a refused store's pool goes on trying to connect in its own threads, and
    # a pool left to the cyclic GC can be collected in one of them, failing a later test.
    without = ActivityStore(bare)
    try:
        with pytest.raises(StoreError) as refused:
            without.wishlist("ana")
    finally:
        without.close()
    assert PG_PASSWORD not in str(refused.value)
    with_password = ActivityStore(bare, password=PG_PASSWORD)
    try:
        assert with_password.wishlist("ana") == []
    finally:
        with_password.close()
