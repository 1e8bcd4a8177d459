"""The explorer page in a real browser: Debian's headless Chromium driven by Playwright against
the production server on 127.0.0.1. Skipped, with the reason, where Chromium is not installed
(``make test`` installs it)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from recommender import training
from recommender.activity import ActivityStore

from helpers import ROOT, free_port, serve_command, tiny_config, wait_until_ready, write_log

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason="Debian's chromium is not installed (make test installs it)",
    ),
]


@pytest.fixture
def server(tmp_path: Path):
    log, models, catalog = tmp_path / "tribes.csv", tmp_path / "models", tmp_path / "catalog.csv"
    write_log(log)
    catalog.write_text(
        "item_id,name\n"
        + "".join(
            f"{tribe}{n},{'Garden' if tribe == 'G' else 'Kitchen'} {tribe}{n}\n"
            for tribe in "GK"
            for n in range(1, 5)
        )
    )
    training.run(tiny_config(log, models, als_factors=2, catalog=catalog))
    customers = tmp_path / "customers.csv"
    customers.write_text("id,name\ng1,Ana\n")
    port = free_port()
    process = subprocess.Popen(
        serve_command(
            models,
            tmp_path / "activity.sqlite3",
            port,
            "--customers-file",
            str(customers),
            workers=1,
        ),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    wait_until_ready(base, process)
    events = [
        {"user_id": "g1", "item_id": "K2", "type": "view"},
        {"user_id": "g1", "item_id": "G4", "type": "cart"},
    ]
    request = urllib.request.Request(
        base + "/v1/events",
        data=json.dumps({"events": events}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    urllib.request.urlopen(request).read()
    # G4, carted just now, drops from 10.00 to 5.00: a price-drop alert for g1.
    store = ActivityStore(tmp_path / "activity.sqlite3")
    store.record_catalog([("G4", 10.0, True)], now=time.time() - 86400)
    store.record_catalog([("G4", 5.0, None)], now=time.time() + 1)
    store.close()
    yield base
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)


def test_explorer_in_chromium(server: str, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
            ],
        )
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(server + "/")
            page.wait_for_selector("body[data-loaded='model']")
            assert page.text_content("#model-version").strip().endswith("Z")

            page.fill("#search-input", "garden")
            page.click("#search-button")
            page.wait_for_selector("body[data-searched]")
            assert page.text_content("#search-summary").startswith("4 items match")
            page.click("#search-results li[data-item-id='G1']")
            page.wait_for_selector("#also-bought tr[data-item-id]")
            also = [
                row.get_attribute("data-item-id")
                for row in page.locator("#also-bought tr[data-item-id]").all()
            ]
            assert len(also) == 7 and also[0].startswith(
                "G"
            )  # every other item: neighbours, then popular
            assert page.locator("#bought-together tr[data-item-id]").count() > 0
            assert "Garden G1" in page.text_content("#item-title")

            page.fill("#customer-input", "g1")
            page.click("#customer-button")
            page.wait_for_selector("body[data-customer='g1']")
            history = [
                item.get_attribute("data-item-id") for item in page.locator("#history li").all()
            ]
            assert sorted(history) == ["G1", "G2", "G3"]
            assert page.locator("#personal li").count() == 5  # the 8 items less the 3 bought
            again = page.locator("#buy-again li").all()
            assert sorted(item.get_attribute("data-item-id") for item in again) == sorted(history)
            assert all("last bought 20" in (item.text_content() or "") for item in again)
            assert page.text_content("#greeting") == "Hello, Ana"
            reasons = [h.text_content() for h in page.locator("#page-you-made h4").all()]
            assert reasons and all(reason.startswith("because you") for reason in reasons)
            alerts = [
                item.text_content() for item in page.locator("#alerts li[data-item-id='G4']").all()
            ]
            assert any(
                text.startswith("price dropped: Garden G4 (G4) 5.00, was 10.00") for text in alerts
            ), alerts

            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "explorer.png"), full_page=True)
            assert (ARTIFACTS / "explorer.png").stat().st_size > 10_000

            page.click("#report-link")
            page.wait_for_load_state()
            assert page.title().startswith("Evaluation")
            assert errors == []
        finally:
            browser.close()
