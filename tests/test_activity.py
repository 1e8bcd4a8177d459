"""The activity store on a real SQLite file: atomic batches, bounded history, wish lists, many writers."""
from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from recommender.activity import ActivityStore, Event

NOW = 1_700_000_000.0
DAY = 86400.0


@pytest.fixture
def store(tmp_path: Path):
    store = ActivityStore(tmp_path / "var" / "activity.sqlite3", history_limit=3, history_days=10)
    store.create_schema()
    yield store
    store.close()


def test_wal_mode_and_durable_writes(store: ActivityStore) -> None:
    assert store.connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.connection.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_recent_events_newest_first_and_bounded(store: ActivityStore) -> None:
    events = [Event("ana", f"item{i}", "view", NOW - i * 3600) for i in range(5)]
    events.append(Event("ben", "x", "cart", NOW))
    assert store.add_events(events, now=NOW) == 6
    recent = store.recent_events("ana", now=NOW)
    assert [e.item_id for e in recent] == ["item0", "item1", "item2"]  # history_limit 3, newest first
    assert store.count_events() == 4  # ana's two oldest were pruned at once
    assert store.recent_events("nobody", now=NOW) == []


def test_old_events_are_pruned_by_age(store: ActivityStore) -> None:
    store.add_events([Event("ana", "old", "view", NOW - 11 * DAY), Event("ana", "new", "view", NOW)], now=NOW)
    assert [e.item_id for e in store.recent_events("ana", now=NOW)] == ["new"]
    assert store.count_events() == 1
    assert store.prune(now=NOW + 11 * DAY) == 1
    assert store.count_events() == 0


def test_a_failing_batch_writes_nothing(store: ActivityStore) -> None:
    with pytest.raises(sqlite3.IntegrityError):
        store.add_events([Event("ana", "a", "view", NOW), Event("ana", "b", "teleport", NOW)], now=NOW)
    assert store.count_events() == 0


def test_wishlist_round_trip(store: ActivityStore) -> None:
    assert store.add_to_wishlist("ana", "tent", now=NOW) is True
    assert store.add_to_wishlist("ana", "tent", now=NOW + 1) is False
    assert store.add_to_wishlist("ana", "stove", now=NOW + 2) is True
    assert store.wishlist("ana") == [("stove", NOW + 2), ("tent", NOW)]
    assert [(e.item_id, e.type) for e in store.recent_events("ana", now=NOW)] == [("stove", "wishlist"), ("tent", "wishlist")]
    assert store.remove_from_wishlist("ana", "tent") is True
    assert store.remove_from_wishlist("ana", "tent") is False
    assert store.wishlist("ana") == [("stove", NOW + 2)]
    assert store.wishlist("ben") == []


def test_purchases_for_training(store: ActivityStore) -> None:
    store.add_events([Event("ana", "a", "purchase", NOW - 10), Event("ana", "b", "view", NOW),
                      Event("ben", "c", "purchase", NOW - 20)], now=NOW)
    assert [(e.user_id, e.item_id) for e in store.purchases()] == [("ben", "c"), ("ana", "a")]
    assert [e.item_id for e in store.purchases(since=NOW - 15)] == ["a"]


def _write(path: str, writer: int, batches: int) -> None:
    store = ActivityStore(path, history_limit=10_000, history_days=10_000)
    for batch in range(batches):
        store.add_events([Event(f"w{writer}", f"i{batch}-{n}", "view", NOW) for n in range(5)], now=NOW)
    store.close()


def test_concurrent_writers_in_several_processes_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"
    ActivityStore(path).create_schema()
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_write, args=(str(path), n, 40)) for n in range(4)]
    for process in writers:
        process.start()
    for process in writers:
        process.join(timeout=120)
        assert process.exitcode == 0
    store = ActivityStore(path)
    assert store.count_events() == 4 * 40 * 5
    store.close()
