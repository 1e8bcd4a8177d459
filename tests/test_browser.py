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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from recommender import training
from recommender.activity import ActivityStore

from helpers import (
    BASKETS,
    PRICES,
    ROOT,
    free_port,
    serve_command,
    tiny_config,
    wait_until_ready,
    write_log,
)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
ADMIN_TOKEN = "browser-test-admin-token"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason="Debian's chromium is not installed (make test installs it)",
    ),
]


def _call(base: str, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
    """One JSON request to the server; the answer's JSON."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, headers=headers, method=method)
    with urllib.request.urlopen(request) as response:
        return json.loads(response.read())


def _serve(tmp_path: Path, *options: str) -> Iterator[str]:
    """A real server over the tribes log with ``options``; g1 has a view, a cart and a
    price-drop alert."""
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
            *options,
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
    _call(base, "POST", "/v1/events", {"events": events})
    # G4, carted just now, drops from 10.00 to 5.00: a price-drop alert for g1.
    store = ActivityStore(tmp_path / "activity.sqlite3")
    store.record_catalog([("G4", 10.0, True)], now=time.time() - 86400)
    store.record_catalog([("G4", 5.0, None)], now=time.time() + 1)
    store.close()
    try:
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """No admin token: the admin endpoints are disabled."""
    yield from _serve(tmp_path)


@pytest.fixture
def admin_server(tmp_path: Path) -> Iterator[str]:
    """An admin token, and impressions written every 0.2 s."""
    yield from _serve(tmp_path, "--admin-token", ADMIN_TOKEN, "--impressions-flush-seconds", "0.2")


@contextmanager
def chromium(profile: Path) -> Iterator[Any]:
    """A headless Chromium (a persistent context over ``profile``)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(profile),
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
            yield browser
        finally:
            browser.close()


def test_explorer_in_chromium(server: str, tmp_path: Path) -> None:
    with chromium(tmp_path / "profile") as browser:
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
        history = [item.get_attribute("data-item-id") for item in page.locator("#history li").all()]
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

        # Without an admin token configured, the Performance view says so.
        page.click("#nav-performance")
        # The view switches on the hash change, after the click returns: wait for what it
        # sets last (the Performance view's state) before looking at what it hid first.
        page.wait_for_selector("body[data-performance='no-token']")
        assert page.is_hidden("#explore-view")
        page.fill("#token-input", "any-token-at-all")
        page.click("#token-button")
        page.wait_for_selector("body[data-performance='failed']")
        assert page.text_content("#performance-error").startswith(
            "admin endpoints disabled: no admin token configured"
        )

        page.click("#report-link")
        page.wait_for_load_state()
        assert page.title().startswith("Evaluation")
        assert errors == []


def test_performance_in_chromium(admin_server: str, tmp_path: Path) -> None:
    """The Performance view before any traffic (it says what is missing), then after an
    experiment's lists were shown and clicked and bought from."""
    base = admin_server
    with chromium(tmp_path / "profile") as browser:
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        blocked: list[str] = []  # what the Content-Security-Policy refused
        page.on(
            "console",
            lambda message: (
                blocked.append(message.text) if "Content Security Policy" in message.text else None
            ),
        )
        page.goto(base + "/#performance")
        page.wait_for_selector("body[data-performance='no-token']")
        assert page.is_visible("#performance-view") and page.is_hidden("#explore-view")

        page.fill("#token-input", "a-wrong-admin-token")
        page.click("#token-button")
        page.wait_for_selector("body[data-performance='failed']")
        assert page.text_content("#performance-error").startswith("wrong token")

        page.fill("#token-input", ADMIN_TOKEN)
        page.click("#token-button")
        page.wait_for_selector("body[data-performance='loaded']")
        assert ADMIN_TOKEN not in page.url
        assert page.evaluate("sessionStorage.getItem('recommender-admin-token')") == ADMIN_TOKEN
        assert page.is_visible("#missing")
        missing = [item.text_content() for item in page.locator("#missing li").all()]
        assert any(sentence.startswith("no recommendations shown yet") for sentence in missing)
        assert any(sentence.startswith("no experiments yet") for sentence in missing)
        assert page.text_content("#not-attributed") == "No event has cited a list yet."
        assert page.text_content("#experiments") == "none yet"
        assert page.locator("#plots svg path").count() > 20  # axes, and "no traffic yet"

        # Traffic: a popular holdout against control, one list per customer, a view from
        # two in three, a purchase from every other one, and an event citing a forged id.
        variants = [
            {"name": "control", "weight": 1},
            {"name": "holdout", "weight": 1, "strategy": "popular"},
        ]
        _call(base, "PUT", "/v1/admin/experiments/holdout", {"variants": variants}, ADMIN_TOKEN)
        events = [{"user_id": "g1", "item_id": "G4", "type": "view", "recommendation_id": "forged"}]
        for position, user in enumerate(BASKETS):
            answer = _call(base, "GET", f"/v1/users/{user}/recommendations?k=4")
            item = answer["recommendations"][0]["item_id"]
            cited = {
                "user_id": user,
                "item_id": item,
                "recommendation_id": answer["recommendation_id"],
            }
            if position % 3:
                events.append({**cited, "type": "view"})
            if position % 2 == 0:
                events.append({**cited, "type": "purchase", "quantity": 1, "price": PRICES[item]})
        stored = _call(base, "POST", "/v1/events", {"events": events})
        assert stored["attributed"] == len(events) - 1 and stored["not_attributed"] == 1
        deadline = time.monotonic() + 10
        while True:  # impressions are written every 0.2 s
            summary = _call(base, "GET", "/v1/admin/performance?days=30", token=ADMIN_TOKEN)
            if summary["totals"]["impressions"] == len(BASKETS):
                break
            assert time.monotonic() < deadline, summary["totals"]
            time.sleep(0.2)

        page.reload()
        page.wait_for_selector("body[data-performance='loaded']")
        assert page.is_hidden("#missing-section")
        totals = [cell.text_content() for cell in page.locator("#totals td").all()]
        assert totals[0] == str(len(BASKETS)) and totals[1] == "10" and totals[4] == "8"
        assert page.text_content("#not-attributed").startswith(
            "Events that cited a list and were not attributed: 1 forged"
        )
        plots = page.locator("#plots svg")
        assert plots.count() == 1 and page.locator("#plots svg path").count() > 50
        assert plots.bounding_box()["width"] > 1000  # scaled to the page's width
        experiment = page.locator("#experiments .experiment[data-experiment='holdout']")
        rows = experiment.locator("table.variants tr[data-variant]").all()
        assert [row.get_attribute("data-variant") for row in rows] == ["control", "holdout"]
        shoppers = [int(row.locator("td").nth(2).text_content()) for row in rows]
        assert sum(shoppers) == len(BASKETS) and min(shoppers) > 0
        assert (
            experiment.locator("p.verdict").text_content().startswith("holdout against control: ")
        )
        assert experiment.locator("table.comparison tr.decides").count() == 1
        assert (
            experiment.locator("p.shoppers-needed")
            .text_content()
            .startswith("Shoppers needed to detect a 5.0% lift in CTR")
        )

        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "performance.png"), full_page=True)
        assert (ARTIFACTS / "performance.png").stat().st_size > 10_000
        assert errors == [] and blocked == []
