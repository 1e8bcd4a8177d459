"""E-mail alerts: the rules on a tiny catalog, the HTTP view, and delivery to a real SMTP
server on 127.0.0.1 (aiosmtpd), counted at the server: the right customers and items, nobody
opted out or forgotten, the frequency cap across runs, and a run killed mid-delivery whose
rerun sends every message exactly once."""

from __future__ import annotations

import email
import email.policy
import html
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from recommender import artifacts
from recommender.activity import ActivityStore
from recommender.alerts import compose, find_alerts
from recommender.config import AlertsConfig
from recommender.serving.service import RecommendationService

from helpers import PYTHON, ROOT, Inbox, free_port, make_app

DAY = 86400.0
T0 = float(
    int(time.time() - 3 * 86400)
)  # catalog recorded (recent: the CLI judges "recent" by the clock)
T1 = T0 + DAY  # customers show interest
T2 = T0 + 2 * DAY  # the catalog changes
TOKEN = "a-long-enough-admin-token"
NO_NEW = AlertsConfig(rules=("back_in_stock", "price_drop"))


def tiny_catalog_story(store: ActivityStore) -> None:
    """A 2.00, B 1.00 and C 3.50 recorded (C sold out); interest; then C back, A at 1.50."""
    store.create_schema()
    store.record_catalog([("A", 2.0, True), ("B", 1.0, True), ("C", 3.5, False)], now=T0)
    store.add_to_wishlist("u1", "C", now=T1)  # wished while sold out: back in stock
    store.add_events([_event("u2", "A", "view", T1)], now=T1)  # viewed at 2.00: price drop
    store.add_to_wishlist("u3", "A", now=T1)  # forgotten below: nothing
    store.add_to_wishlist("u4", "C", now=T1)  # opted out below: nothing
    store.add_to_wishlist("u6", "B", now=T1)  # B does not change: nothing
    store.forget("u3", now=T1)
    store.set_opt_out("u4", True, now=T1)
    store.record_catalog([("C", None, True), ("A", 1.5, None), ("B", 1.0, True)], now=T2)


def _event(user: str, item: str, kind: str, at: float) -> Any:
    from recommender.activity import Event

    return Event(user, item, kind, at)


def test_back_in_stock_and_price_drop_reach_the_interested_customers_only(
    shared_models: Path, tmp_path: Path
) -> None:
    store = ActivityStore(tmp_path / "activity.sqlite3")
    tiny_catalog_story(store)
    service = RecommendationService(artifacts.load_current_bundle(shared_models))
    excluded = frozenset(store.suppressed())
    found = find_alerts(store, service, NO_NEW, excluded, now=T2 + 60)
    assert {user: [(a.reason, a.item_id) for a in alerts] for user, alerts in found.items()} == {
        "u1": [("back_in_stock", "C")],
        "u2": [("price_drop", "A")],
    }
    back, drop = found["u1"][0], found["u2"][0]
    assert (back.name, back.price, back.change_at, back.because) == (
        "Cherry",
        3.5,
        T2,
        "on your wish list",
    )
    assert (drop.name, drop.price, drop.previous_price, drop.because) == (
        "Apple",
        1.5,
        2.0,
        "you viewed it",
    )
    # A drop smaller than the threshold is no alert: 1.50 is 25% below 2.00, not 30%.
    assert not find_alerts(
        store, service, AlertsConfig(rules=("price_drop",), price_drop=0.3), excluded, now=T2
    )
    # Views older than interest_days no longer count; wish lists always do.
    late = find_alerts(store, service, NO_NEW, excluded, now=T1 + 31 * DAY)
    assert list(late) == ["u1"]


def test_new_for_you_is_a_recently_first_sold_item_among_the_personal_top(
    shared_models: Path, tmp_path: Path
) -> None:
    store = ActivityStore(tmp_path / "activity.sqlite3")
    store.create_schema()
    service = RecommendationService(artifacts.load_current_bundle(shared_models))
    # First sales in the tiny log: A and B on Jan 1, C on Jan 2, D on Jan 6: within 2 days of
    # the newest, only D is new; it is in every top-4 of a customer who does not own it.
    settings = AlertsConfig(rules=("new_for_you",), new_days=2, new_top=4)
    found = find_alerts(store, service, settings, frozenset({"u2"}))
    assert sorted(found) == ["u1", "u3", "u4"]
    assert all(
        [(a.reason, a.item_id, a.name) for a in alerts] == [("new_for_you", "D", "Durian")]
        for alerts in found.values()
    )


def test_alerts_endpoint_and_catalog_admin(shared_models: Path, activity_db: Path) -> None:
    app = make_app(
        shared_models, activity_db, admin_token=TOKEN, alerts={"rules": "back_in_stock,price_drop"}
    )
    client = app.test_client()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.put("/v1/admin/catalog/C", json={"available": False}).status_code == 401
    assert (
        client.put("/v1/admin/catalog/C", json={"available": False}, headers=auth).get_json()[
            "changed"
        ]
        is True
    )
    assert (
        client.put("/v1/admin/catalog/C", json={"available": False}, headers=auth).get_json()[
            "changed"
        ]
        is False
    )
    for body, field in (
        ({"price": -1}, "price"),
        ({"price": "cheap"}, "price"),
        ({"available": "yes"}, "available"),
        ({"colour": "red"}, "colour"),
        ({}, "price"),
    ):
        response = client.put("/v1/admin/catalog/C", json=body, headers=auth)
        assert response.status_code == 400 and response.get_json()["error"]["message"].startswith(
            field
        )
    assert client.put("/v1/users/u1/wishlist/C").status_code == 201
    assert client.get("/v1/users/u1/alerts").get_json()["alerts"] == []
    time.sleep(0.01)  # the restock must come after the wish
    client.put("/v1/admin/catalog/C", json={"available": True, "price": 3.5}, headers=auth)
    alerts = client.get("/v1/users/u1/alerts").get_json()
    assert [
        (a["reason"], a["item_id"], a["name"], a["price"], a["emailed"]) for a in alerts["alerts"]
    ] == [("back_in_stock", "C", "Cherry", 3.5, False)]
    assert client.put("/v1/users/u1/opt-out", headers=auth).status_code == 200
    assert client.get("/v1/users/u1/alerts").get_json() == {
        "user_id": "u1",
        "alerts": [],
        "personalized": False,
        "reason": "opted_out",
    }


def test_digest_has_text_html_and_unsubscribe_link() -> None:
    from recommender.alerts import Alert

    alerts = [Alert("u 1", "C", "back_in_stock", "Cherry <b>", 3.5, None, T2, "on your wish list")]
    message = compose("u 1", "u1@example.com", alerts, AlertsConfig(shop_name="Tiny shop"))
    text = message.get_body(("plain",)).get_content()
    page = message.get_body(("html",)).get_content()
    assert "Cherry <b> is back in stock at 3.50" in text and "Cherry &lt;b&gt;" in page
    assert message["List-Unsubscribe"] == "<https://shop.example/unsubscribe?customer=u%201>"
    assert "customer=u%201" in text and "customer=u%201" in page
    assert message["Subject"] == "Cherry <b> is back in stock - Tiny shop"


def _customers_file(tmp_path: Path, users: list[str], opted_out: tuple[str, ...] = ()) -> Path:
    path = tmp_path / "customers.csv"
    path.write_text(
        "id,name,email,opted_out\n"
        + "".join(
            f"{user},{user.upper()},{user}@example.com,{'true' if user in opted_out else 'false'}\n"
            for user in users
        )
    )
    return path


def _alerts_command(
    models: Path, db: Path | str, customers: Path, port: int, *extra: str
) -> list[str]:
    return [
        PYTHON,
        "-m",
        "recommender",
        "alerts",
        "--models-dir",
        str(models),
        "--activity-db",
        str(db),
        "--customers-file",
        str(customers),
        "--smtp-host",
        "127.0.0.1",
        "--smtp-port",
        str(port),
        "--rules",
        "back_in_stock,price_drop",
        *extra,
    ]


def test_smtp_delivery_right_people_cap_across_runs(
    shared_models: Path, tmp_path: Path, smtp_server: Any
) -> None:
    db = tmp_path / "activity.sqlite3"
    store = ActivityStore(db)
    tiny_catalog_story(store)
    customers = _customers_file(tmp_path, ["u1", "u2", "u3", "u4", "u5", "u6"], opted_out=("u5",))
    store.add_to_wishlist("u5", "C", now=T1)  # opted out in the customers file
    inbox = Inbox()
    port = smtp_server(inbox)
    out = tmp_path / "alerts.csv"
    first = subprocess.run(
        _alerts_command(shared_models, db, customers, port, "--out", str(out)),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert first.returncode == 0, first.stderr
    assert inbox.recipients() == {"u1@example.com": 1, "u2@example.com": 1}
    by_to = {str(m["To"]): m for m in inbox.messages}
    assert "Cherry is back in stock" in by_to["u1@example.com"].get_body(("plain",)).get_content()
    assert "Apple now 1.50, was 2.00" in by_to["u2@example.com"].get_body(("plain",)).get_content()
    assert out.read_text().splitlines()[0].startswith("user_id,reason,item_id,name,price")
    assert sorted(line.split(",")[:3][0] for line in out.read_text().splitlines()[1:]) == [
        "u1",
        "u2",
    ]

    # B drops: u6 (wished it) hears of it; u1 (viewed it after the last run) is capped, one
    # digest per 7 days; nobody hears of the earlier alerts again.
    store.add_events([_event("u1", "B", "view", T2 + 10)], now=T2 + 10)
    store.record_catalog([("B", 0.5, None)], now=T2 + 20)
    again = subprocess.run(
        _alerts_command(shared_models, db, customers, port),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr
    assert inbox.recipients() == {"u1@example.com": 1, "u2@example.com": 1, "u6@example.com": 1}
    assert "Banana now 0.50, was 1.00" in inbox.messages[-1].get_body(("plain",)).get_content()
    assert "1 customers capped" in again.stderr
    # Without the cap, u1 gets the new drop only (not the restock again).
    uncapped = subprocess.run(
        _alerts_command(shared_models, db, customers, port, "--cap-days", "0"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert uncapped.returncode == 0, uncapped.stderr
    assert inbox.recipients() == {"u1@example.com": 2, "u2@example.com": 1, "u6@example.com": 1}
    assert "Banana now 0.50, was 1.00" in inbox.messages[-1].get_body(("plain",)).get_content()
    assert "Cherry" not in inbox.messages[-1].get_body(("plain",)).get_content()


@pytest.mark.slow
def test_a_run_killed_mid_delivery_sends_each_message_once_on_rerun(
    shared_models: Path, tmp_path: Path, smtp_server: Any
) -> None:
    db = tmp_path / "activity.sqlite3"
    store = ActivityStore(db)
    store.create_schema()
    users = [f"c{n}" for n in range(6)]
    store.record_catalog([("C", 3.5, False)], now=T0)
    for user in users:
        store.add_to_wishlist(user, "C", now=T1)
    store.record_catalog([("C", None, True)], now=T2)
    customers = _customers_file(tmp_path, users)
    inbox = Inbox(hold_after=2)
    port = smtp_server(inbox)
    run = subprocess.Popen(
        _alerts_command(shared_models, db, customers, port),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        # The third message is held: by then the second is confirmed in the store.
        assert inbox.holding.wait(60), "the alerts run never reached its third e-mail"
        os.killpg(run.pid, signal.SIGKILL)
        run.wait(30)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
        inbox.release.set()
    assert len(inbox.messages) == 2
    inbox.hold_after = None
    rerun = subprocess.run(
        _alerts_command(shared_models, db, customers, port),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert inbox.recipients() == {f"{user}@example.com": 1 for user in users}
    assert "1 unconfirmed e-mails of an earlier run sent" in rerun.stderr
    # The resent one kept its Message-ID; every Message-ID is distinct.
    assert len({str(m["Message-ID"]) for m in inbox.messages}) == len(users)


def test_alerts_without_a_destination_or_with_an_unreachable_server_fail_cleanly(
    shared_models: Path, tmp_path: Path
) -> None:
    db, customers = tmp_path / "activity.sqlite3", _customers_file(tmp_path, ["u1"])
    nowhere = subprocess.run(
        [
            PYTHON,
            "-m",
            "recommender",
            "alerts",
            "--models-dir",
            str(shared_models),
            "--activity-db",
            str(db),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert nowhere.returncode == 2 and nowhere.stderr.strip().splitlines()[-1].startswith(
        "error: out:"
    )
    store = ActivityStore(db)
    tiny_catalog_story(store)
    down = subprocess.run(
        _alerts_command(shared_models, db, customers, free_port()),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert down.returncode == 1 and "smtp_host: cannot connect" in down.stderr
    assert "Traceback" not in down.stderr
    # Nothing was recorded as delivered: the next run with a server sends it.
    assert store.delivered_alerts() == set()


def test_a_training_run_records_its_catalog_files_price_and_availability_changes(
    tmp_path: Path,
) -> None:
    from recommender import training

    from helpers import TINY_LOG, tiny_config

    log, catalog = tmp_path / "tiny.csv", tmp_path / "catalog.csv"
    log.write_text(TINY_LOG)
    catalog.write_text("item_id,price,available\nA,2.00,true\nC,3.50,false\n")
    config = tiny_config(log, tmp_path / "models", catalog=catalog)
    training.run(config)
    catalog.write_text("item_id,price,available\nA,1.50,true\nC,3.50,true\n")
    training.run(tiny_config(log, tmp_path / "models", catalog=catalog, force=True))
    store = ActivityStore(config.activity_db)
    history = store.catalog_history()
    assert [(s.price, s.available) for s in history["A"]] == [(2.0, True), (1.5, True)]
    assert [(s.price, s.available) for s in history["C"]] == [(3.5, False), (3.5, True)]


def test_forgetting_a_customer_erases_their_digests_and_delivered_alerts(tmp_path: Path) -> None:
    store = ActivityStore(tmp_path / "activity.sqlite3")
    store.create_schema()
    store.open_digest("u1", "file", "", "[]", [("C", "back_in_stock", T2)], now=T2)
    store.open_digest("u2", "file", "", "[]", [("C", "back_in_stock", T2)], now=T2)
    store.forget("u1")
    assert store.delivered_alerts() == {("u2", "C", "back_in_stock", T2)}
    assert set(store.last_digest_at()) == {"u2"}


def test_an_unconfirmed_digest_is_not_resent_to_a_customer_who_opted_out_since(
    tmp_path: Path, smtp_server: Any
) -> None:
    from recommender.alerts import Alert, deliver

    store = ActivityStore(tmp_path / "activity.sqlite3")
    store.create_schema()
    inbox = Inbox()
    settings = AlertsConfig(smtp_host="127.0.0.1", smtp_port=smtp_server(inbox))
    emails = {"c1": "c1@example.com", "c2": "c2@example.com"}
    for user in emails:  # recorded as "sending" by a run that then died
        message = compose(
            user,
            emails[user],
            [Alert(user, "C", "back_in_stock", "Cherry", 3.5, None, T2, "x")],
            settings,
            now=T2,
        )
        store.open_digest(
            user,
            "smtp",
            str(message["Message-ID"]),
            message.as_string(),
            [("C", "back_in_stock", T2)],
        )
    counts = deliver({}, store, settings, emails, excluded=frozenset({"c1"}))
    assert inbox.recipients() == {"c2@example.com": 1} and counts["resent"] == 1
    assert store.pending_digests() == []
    deliver({}, store, settings, emails)  # nothing left to resend, to anyone
    assert inbox.recipients() == {"c2@example.com": 1}


# ------------------------------------------------------------------ a standards-conforming server
class StockMailbox:
    """aiosmtpd with its stock ``Mailbox`` handler and its default SMTP line limit (1,001
    bytes, CRLF-terminated lines, as RFC 5321 says): what the server stored, parsed back."""

    def __init__(self, directory: Path) -> None:
        from aiosmtpd.handlers import Mailbox

        self.directory = directory
        self.port = free_port()
        self.controller = Controller(Mailbox(str(directory)), hostname="127.0.0.1", port=self.port)

    def messages(self) -> list[email.message.EmailMessage]:
        files = (
            sorted((self.directory / "new").glob("*")) if (self.directory / "new").exists() else []
        )
        return [
            email.message_from_bytes(path.read_bytes(), policy=email.policy.default)  # type: ignore[misc]
            for path in files
        ]


@pytest.fixture
def stock_mailbox(tmp_path: Path) -> Any:
    mailbox = StockMailbox(tmp_path / "maildir")
    mailbox.controller.start()
    yield mailbox
    mailbox.controller.stop()


def _dot_led_name() -> str:
    """An item name whose digest, as encoded for the wire, has a line starting with a dot
    (which SMTP must double, and the server undo)."""
    from recommender.alerts import Alert

    for padding in range(1, 200):
        name = (
            "Lantern "
            + "o" * padding
            + ". Polished brass, with a glass shade and a long description"
        )
        message = compose(
            "d1",
            "d1@example.com",
            [Alert("d1", "L", "back_in_stock", name, 9.5, None, T2, "x")],
            AlertsConfig(),
        )
        if any(line.startswith(b".") for line in message.as_bytes().split(b"\r\n")):
            return name
    raise AssertionError("no padding puts a dot at the start of a line")


@pytest.mark.parametrize("case", ["long", "non_ascii", "dot"])
def test_digests_reach_a_standard_mail_server_intact(
    tmp_path: Path, stock_mailbox: StockMailbox, case: str
) -> None:
    from recommender.alerts import Alert, deliver

    names = {
        "long": [
            f"Set of {n} enamel storage tins, assorted vintage designs, " + "extra long name " * 6
            for n in range(8)
        ],
        "non_ascii": ["Crème brûlée dish — ½ litre, 日本製"],
        "dot": [_dot_led_name()],
    }[case]
    alerts = {
        "c1": [
            Alert("c1", f"I{n}", "price_drop", name, 5.0, 10.0, T2, "on your wish list")
            for n, name in enumerate(names)
        ]
    }
    store = ActivityStore(tmp_path / "activity.sqlite3")
    store.create_schema()
    settings = AlertsConfig(
        smtp_host="127.0.0.1",
        smtp_port=stock_mailbox.port,
        sender="shop@example.test",
        shop_name="Tiny shop",
    )
    counts = deliver(alerts, store, settings, {"c1": "c1@example.com"})
    assert counts["digests"] == 1 and counts["refused"] == 0
    [received] = stock_mailbox.messages()
    wire = (stock_mailbox.directory / "new").iterdir().__next__().read_bytes()
    if case == "long":
        assert len(wire) > 2048
    text = received.get_body(("plain",)).get_content()
    page = received.get_body(("html",)).get_content()
    for name in names:
        assert f"{name} now 5.00, was 10.00 (on your wish list)" in text
        assert html.escape(name) in page
    assert received["List-Unsubscribe"] == "<https://shop.example/unsubscribe?customer=c1>"
    assert "Unsubscribe: https://shop.example/unsubscribe?customer=c1" in text
    assert str(received["Subject"]).startswith(names[0]) and str(received["To"]) == "c1@example.com"
    assert (
        received["Message-ID"]
        and str(received["Message-ID"]) == str(received["Message-ID"]).strip()
    )
    assert store.pending_digests() == []


def test_an_alerts_run_delivers_one_digest_once_to_a_stock_mail_server(
    shared_models: Path, tmp_path: Path, stock_mailbox: StockMailbox, store_location: str
) -> None:
    """The scenario of the issue: prices and availability recorded through the admin API, two
    items on a wish list, a price drop and a restock; one digest naming both, once. On both
    stores: the server and the alerts run share it."""
    db = store_location
    client = make_app(shared_models, db, admin_token=TOKEN).test_client()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    client.put("/v1/admin/catalog/A", json={"price": 10.0, "available": True}, headers=auth)
    client.put("/v1/admin/catalog/C", json={"price": 10.0, "available": False}, headers=auth)
    for user in ("w1", "w2"):
        for item in ("A", "C"):
            assert client.put(f"/v1/users/{user}/wishlist/{item}").status_code == 201
    time.sleep(0.01)  # the changes come after the wishes
    client.put("/v1/admin/catalog/A", json={"price": 5.0}, headers=auth)
    client.put("/v1/admin/catalog/C", json={"available": True}, headers=auth)
    customers = _customers_file(tmp_path, ["w1", "w2"], opted_out=("w2",))
    command = _alerts_command(
        shared_models,
        db,
        customers,
        stock_mailbox.port,
        "--sender",
        "shop@example.test",
        "--unsubscribe-url",
        "https://shop.example/stop?c={user_id}",
    )
    first = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    [digest] = stock_mailbox.messages()
    assert str(digest["To"]) == "w1@example.com"
    assert digest["List-Unsubscribe"] == "<https://shop.example/stop?c=w1>"
    text = digest.get_body(("plain",)).get_content()
    assert "Cherry is back in stock at 10.00 (on your wish list)" in text
    assert "Apple now 5.00, was 10.00 (on your wish list)" in text
    assert "https://shop.example/stop?c=w1" in text
    second = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert len(stock_mailbox.messages()) == 1
