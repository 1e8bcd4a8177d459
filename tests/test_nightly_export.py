"""The nightly job (lock, nothing-new, retrain on API purchases, server reload, pruning) and the export."""

from __future__ import annotations

import csv
import fcntl
import json
import subprocess
import threading
import time
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from recommender import artifacts, export, nightly
from recommender.activity import ActivityStore, Event
from recommender.errors import NightlyBusyError
from recommender.serving.service import RecommendationService

from helpers import PYTHON, ROOT, make_app, tiny_config, write_log


@pytest.fixture
def setup(tmp_path: Path, store_location: str):
    """The nightly job's config on each store (SQLite file, PostgreSQL database)."""
    log, models, activity = tmp_path / "tribes.csv", tmp_path / "models", store_location
    write_log(log)
    ActivityStore(activity).create_schema()
    config = tiny_config(
        log,
        models,
        include_activity=activity,
        activity_db=activity,
        als_factors=2,
        event_retention_days=30,
    )
    return config, activity


def test_nightly_trains_then_finds_nothing_new_then_picks_up_api_purchases(setup) -> None:
    config, activity = setup
    first = nightly.run(config, progress=False)
    assert first["status"] == "trained" and first["server"] == "no server_url given"
    assert nightly.run(config, progress=False) == {
        "status": "nothing new",
        "version": first["version"],
    }
    store = ActivityStore(activity)
    store.add_events([Event("newbie", "K1", "purchase", time.time())])
    store.close()
    third = nightly.run(config, progress=False)
    assert third["status"] == "trained" and third["version"] > first["version"]
    assert "newbie" in artifacts.load_current(config.models_dir).arrays["user_ids"].tolist()


def test_nightly_prunes_old_events(setup) -> None:
    config, activity = setup
    store = ActivityStore(activity)
    now = time.time()
    store.add_events(
        [Event("a", "K1", "view", now - 40 * 86400), Event("a", "K2", "view", now)],
        now=now - 40 * 86400,
    )
    store.close()
    assert nightly.run(config, progress=False)["events_pruned"] == 1
    store = ActivityStore(activity)
    assert [e.item_id for e in store.recent_events("a")] == ["K2"]
    store.close()


def test_only_one_nightly_run_at_a_time(setup, tmp_path: Path) -> None:
    config, _ = setup
    config.models_dir.mkdir(parents=True, exist_ok=True)
    with open(config.models_dir / nightly.LOCK_NAME, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(NightlyBusyError, match="another nightly run is in progress"):
            nightly.run(config, progress=False)
        result = subprocess.run(
            [
                PYTHON,
                "-m",
                "recommender",
                "nightly",
                "--data",
                str(config.data),
                "--models-dir",
                str(config.models_dir),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 75 and "busy:" in result.stderr
    assert artifacts.current_version(config.models_dir) is None


def test_nightly_waits_until_the_running_server_serves_the_new_version(
    setup, tmp_path: Path
) -> None:
    config, _ = setup
    first = nightly.run(config, progress=False)["version"]
    app = make_app(config.models_dir, tmp_path / "served.sqlite3", reload_interval=0.2)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        forced = tiny_config(
            config.data,
            config.models_dir,
            include_activity=config.include_activity,
            als_factors=2,
            force=True,
            server_url=url,
        )
        result = nightly.run(forced, progress=False)
        assert result["version"] != first and result["server"] == f"serving {result['version']}"
    finally:
        server.shutdown()


@pytest.fixture
def service(setup) -> RecommendationService:
    config, _ = setup
    nightly.run(config, progress=False)
    return RecommendationService(artifacts.load_current_bundle(config.models_dir))


def test_export_csv_is_what_the_api_answers(service: RecommendationService, tmp_path: Path) -> None:
    out = tmp_path / "campaign.csv"
    counts = export.export(service, out, k=3, batch_size=4, jobs=2, progress=False)
    assert counts == {"customers": len(service.users), "skipped": 0}
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert len(rows) == 3 * len(service.users)
    for user in service.users.ids_.tolist():
        exported = [r["item_id"] for r in rows if r["user_id"] == user]
        assert exported == [r["item_id"] for r in service.for_user(user, 3)["recommendations"]], (
            user
        )
    assert not (tmp_path / "campaign.csv.partial").exists()


def test_export_jsonl_skips_opted_out_and_forgotten(
    service: RecommendationService, tmp_path: Path
) -> None:
    out = tmp_path / "campaign.jsonl"
    counts = export.export(
        service, out, k=2, format="jsonl", excluded_customers={"g1", "k2"}, progress=False
    )
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert counts["skipped"] == 2 and len(lines) == len(service.users) - 2
    assert {"g1", "k2"}.isdisjoint(line["user_id"] for line in lines)
    assert all(len(line["recommendations"]) == 2 for line in lines)


def test_a_failed_export_leaves_no_file(
    service: RecommendationService, tmp_path: Path, monkeypatch
) -> None:
    def broken(*args, **kwargs):
        raise MemoryError("simulated")

    monkeypatch.setattr(export, "top_k_for_users", broken)
    with pytest.raises(MemoryError):
        export.export(service, tmp_path / "campaign.csv", progress=False)
    assert list(tmp_path.glob("campaign*")) == []


def test_export_command_honours_the_customers_file_and_suppression_list(
    setup, tmp_path: Path
) -> None:
    config, activity = setup
    nightly.run(config, progress=False)
    customers = tmp_path / "customers.csv"
    customers.write_text("id,name,opted_out\ng1,Ana,true\ng2,Ben,false\n")
    store = ActivityStore(activity)
    store.forget("k1", now=0)
    store.close()
    out = tmp_path / "out.csv"
    result = subprocess.run(
        [
            PYTHON,
            "-m",
            "recommender",
            "export",
            "--models-dir",
            str(config.models_dir),
            "--out",
            str(out),
            "--k",
            "2",
            "--customers-file",
            str(customers),
            "--activity-db",
            str(activity),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "2 opted out or forgotten" in result.stderr
    users = {row["user_id"] for row in csv.DictReader(out.read_text().splitlines())}
    assert "g1" not in users and "k1" not in users and "g2" in users


ODD_NAMES = {
    "Apple": 'Crème "brûlée", 日本製',
    "Banana": "=SUM(A1) ½ litre",
    "Cherry": "Tin; with\ttab",
}


def test_export_files_keep_odd_names_intact_whatever_the_locale(tmp_path: Path) -> None:
    """Quotes, commas, tabs and non-ASCII names survive both formats: CSV as RFC 4180 says
    (CRLF, quoted fields, UTF-8), JSON Lines as strict JSON, standard output in UTF-8 even
    where the locale says ASCII."""
    from recommender import training

    from helpers import TINY_LOG

    log = tmp_path / "odd.csv"
    text = TINY_LOG
    for plain, odd in ODD_NAMES.items():
        text = text.replace(f",{plain}\n", f',"{odd.replace(chr(34), chr(34) * 2)}"\n')
    log.write_text(text, encoding="utf-8")
    models = tmp_path / "models"
    training.run(tiny_config(log, models))
    out = tmp_path / "campaign.csv"
    command = [
        PYTHON,
        "-m",
        "recommender",
        "export",
        "--models-dir",
        str(models),
        "--k",
        "3",
        "--activity-db",
        str(tmp_path / "activity.sqlite3"),
    ]
    ascii_locale = {**__import__("os").environ, "PYTHONIOENCODING": "ascii", "LC_ALL": "C"}
    written = subprocess.run(
        [*command, "--out", str(out)], cwd=ROOT, capture_output=True, timeout=120, env=ascii_locale
    )
    assert written.returncode == 0, written.stderr
    raw = out.read_bytes()
    assert raw.count(b"\r\n") == raw.count(b"\n") and raw.endswith(b"\r\n")
    with out.open(newline="", encoding="utf-8") as handle:
        names = {row["name"] for row in csv.DictReader(handle)}
    assert set(ODD_NAMES.values()) <= names
    streamed = subprocess.run(
        [*command, "--out", "-", "--format", "jsonl"],
        cwd=ROOT,
        capture_output=True,
        timeout=120,
        env=ascii_locale,
    )
    assert streamed.returncode == 0, streamed.stderr.decode()

    def no_constants(name: str) -> None:
        raise AssertionError(f"{name} is not JSON")

    lines = [
        json.loads(line, parse_constant=no_constants)
        for line in streamed.stdout.decode("utf-8").splitlines()
    ]
    assert set(ODD_NAMES.values()) <= {
        pick["name"] for line in lines for pick in line["recommendations"]
    }
