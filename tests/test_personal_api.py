"""Customer pages through Flask's test client, on a log of two tribes whose answers are obvious.

Garden customers buy from G1-G4, kitchen customers from K1-K4; one customer bought G1 and K1.
Customer g1 bought G1, G2, G3, so G4 is what they lack; k1 bought K1, K2, K3.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from recommender import artifacts, training
from recommender.activity import ActivityStore

from helpers import (
    BASKETS,
    GARDEN,
    KITCHEN,
    PRICES,
    count_events,
    make_app,
    private_copy,
    tiny_config,
    unchanged,
    write_log,
)


@pytest.fixture(scope="module")
def tribes_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tribes-shared")
    log, catalog, models = root / "tribes.csv", root / "catalog.csv", root / "models"
    write_log(log)
    catalog.write_text(
        "item_id,name,category,available\n"
        + "\n".join(
            f"{item},{'Garden' if item[0] == 'G' else 'Kitchen'} {item},"
            f"{'garden' if item[0] == 'G' else 'kitchen'},"
            f"{'false' if item == 'K4' else 'true'}"
            for item in PRICES
        )
        + "\n"
    )
    training.run(tiny_config(log, models, catalog=catalog, als_factors=2, als_iterations=20))
    return models


@pytest.fixture
def tribes(tribes_once: Path) -> Iterator[Path]:
    """The tribes model, trained once for this module: tests only read it."""
    with unchanged(tribes_once) as models:
        yield models


@pytest.fixture
def own_tribes(tribes_once: Path, tmp_path: Path) -> Path:
    """A copy of the tribes model a test may train into."""
    return private_copy(tribes_once, tmp_path / "models")


def make_client(models: Path, activity_db: Path, tmp_path: Path):
    customers = tmp_path / "customers.csv"
    customers.write_text("id,name\ng1,Ana\n")
    return make_app(models, activity_db, customers_file=customers).test_client()


@pytest.fixture
def client(tribes: Path, activity_db: Path, tmp_path: Path):
    """A client on the shared tribes model with this test's own activity database."""
    return make_client(tribes, activity_db, tmp_path)


def ids(body: dict) -> list[str]:
    return [entry["item_id"] for entry in body["recommendations"]]


def post_events(client, *events: dict) -> None:
    response = client.post("/v1/events", json={"events": list(events)})
    assert response.status_code == 201, response.get_json()


def test_personal_picks_exclude_what_was_bought(client) -> None:
    body = client.get("/v1/users/g1/recommendations?k=3").get_json()
    assert body["strategy"] == "blend" and body["known_customer"] is True
    assert body["model_version"] == client.get("/v1/model").get_json()["version"]
    assert ids(body)[0] == "G4"
    assert not {"G1", "G2", "G3"} & set(ids(body))
    assert body["recommendations"][0]["because"]["item_id"] in {"G1", "G2", "G3"}
    kept = client.get("/v1/users/g1/recommendations?k=4&exclude_purchased=false").get_json()
    assert set(ids(kept)) == set(GARDEN)


def test_a_purchase_through_the_api_is_excluded_at_once(client) -> None:
    post_events(client, {"user_id": "g1", "item_id": "G4", "type": "purchase"})
    body = client.get("/v1/users/g1/recommendations?k=3").get_json()
    assert "G4" not in ids(body)


def test_new_customers_get_trending_items_and_are_told_so(client) -> None:
    body = client.get("/v1/users/stranger/recommendations?k=3").get_json()
    assert body["strategy"] == "popular" and body["fallback_reason"] == "new_customer"
    assert body["known_customer"] is False
    # Time-decayed: kitchen sold in the second week, garden in the first. K1 and G1 have 7
    # buyers each, K2 and G2 6 each: in each pair the more recent sales trend higher.
    ranking = ids(client.get("/v1/users/stranger/recommendations?k=8").get_json())
    assert ranking[0] == "K1"
    assert ranking.index("K1") < ranking.index("G1") and ranking.index("K2") < ranking.index("G2")
    assert {entry["source"] for entry in body["recommendations"]} == {"popular"}


def test_an_unseen_shopper_is_folded_in_from_recent_activity(client) -> None:
    post_events(
        client,
        {"user_id": "visitor", "item_id": "K2", "type": "view"},
        {"user_id": "visitor", "item_id": "K3", "type": "cart"},
    )
    body = client.get("/v1/users/visitor/recommendations?k=2").get_json()
    assert body["strategy"] == "blend" and body["known_customer"] is False
    assert set(ids(body)) <= set(KITCHEN)


def test_page_you_made_groups_by_the_item_that_led_there_most_recent_first(client) -> None:
    now = time.time()
    post_events(
        client,
        {"user_id": "g1", "item_id": "G2", "type": "view", "timestamp": now - 48 * 3600},
        {"user_id": "g1", "item_id": "K2", "type": "view", "timestamp": now - 3600},
    )
    body = client.get("/v1/users/g1/page-you-made?k=4").get_json()
    assert body["greeting"] == "Hello, Ana"
    assert body["strategy"] == "blend"
    groups = body["groups"]
    assert [group["because"]["item_id"] for group in groups] == ["K2", "G2"]
    assert groups[0]["because"]["text"] == "because you viewed Kitchen K2"
    assert set(i["item_id"] for i in groups[0]["recommendations"]) <= {"K1", "K3", "K4"}
    assert all(
        i["item_id"] == "G4" for i in groups[1]["recommendations"]
    )  # G1, G3 bought, G2 viewed
    flat = ids(body)
    assert "K2" not in flat and "G2" not in flat and not {"G1", "G3"} & set(flat)
    assert flat.index("G4") > min(flat.index(i) for i in flat if i.startswith("K"))


def test_page_you_made_without_activity_falls_back(client) -> None:
    body = client.get("/v1/users/k1/page-you-made?k=2").get_json()
    assert body["fallback_reason"] == "no_recent_activity" and body["groups"] == []
    assert ids(body) == ["K4"] + ids(body)[1:] and "greeting" not in body


def test_wishlist_round_trip_through_sqlite(client, activity_db: Path) -> None:
    assert client.put("/v1/users/k1/wishlist/K4").status_code == 201
    assert client.put("/v1/users/k1/wishlist/K4").status_code == 200
    assert client.put("/v1/users/k1/wishlist/NEW-ITEM").status_code == 201
    listed = client.get("/v1/users/k1/wishlist").get_json()["items"]
    assert [entry["item_id"] for entry in listed] == ["NEW-ITEM", "K4"]
    assert listed[1]["name"] == "Kitchen K4" and "name" not in listed[0]
    with sqlite3.connect(activity_db) as connection:
        assert (
            connection.execute("SELECT COUNT(*) FROM wishlist WHERE user_id = 'k1'").fetchone()[0]
            == 2
        )
    assert client.delete("/v1/users/k1/wishlist/NEW-ITEM").status_code == 204
    assert client.delete("/v1/users/k1/wishlist/NEW-ITEM").status_code == 204
    assert [e["item_id"] for e in client.get("/v1/users/k1/wishlist").get_json()["items"]] == ["K4"]


def test_wishlist_recommendations_name_the_wished_item(client) -> None:
    client.put("/v1/users/g1/wishlist/K2")
    body = client.get("/v1/users/g1/wishlist/recommendations?k=3").get_json()
    assert body["wishlist"] == ["K2"]
    assert "K2" not in ids(body) and not {"G1", "G2", "G3"} & set(ids(body))
    assert set(ids(body)) == {"K1", "K3", "K4"}
    assert {entry["because"]["item_id"] for entry in body["recommendations"]} == {"K2"}
    empty = client.get("/v1/users/nobody/wishlist/recommendations?k=2").get_json()
    assert empty["fallback_reason"] == "empty_wishlist" and empty["strategy"] == "popular"


def test_recommendations_from_a_list_the_shop_holds(client) -> None:
    body = client.post(
        "/v1/recommendations", json={"items": ["G1", "G2", "GONE"], "k": 2, "exclude": ["G3"]}
    ).get_json()
    assert ids(body) == ["G4", ids(body)[1]] and "G3" not in ids(body)
    assert body["unknown_items"] == ["GONE"]
    assert body["recommendations"][0]["because"]["item_id"] in {"G1", "G2"}
    nothing = client.post("/v1/recommendations", json={"items": ["GONE"]}).get_json()
    assert nothing["strategy"] == "popular" and nothing["fallback_reason"] == "no_known_items"


@pytest.mark.parametrize(
    "query, expected",
    [
        ("category=kitchen&k=4", {"K1", "K2", "K3", "K4"}),
        ("available=true&category=kitchen&k=3", {"K1", "K2", "K3"}),
        ("max_price=12&k=2", {"G1", "K1"}),
        ("min_price=21&max_price=36&k=4", {"G3", "K3", "K4"}),  # only three qualify
        # g2's own G1 and G2 would come first (kept, ranked by habit): excluded here.
        ("exclude=G1,G2,G4,K1&category=garden&k=1", {"G3"}),
    ],
)
def test_filters_apply_before_the_cut_and_keep_k(client, query: str, expected: set[str]) -> None:
    body = client.get(f"/v1/users/g2/recommendations?exclude_purchased=false&{query}").get_json()
    assert set(ids(body)) == expected


def test_at_most_n_per_category(client) -> None:
    body = client.get("/v1/users/g1/recommendations?k=2&max_per_category=1").get_json()
    assert sorted(i[0] for i in ids(body)) == ["G", "K"]
    item = client.get("/v1/items/G1/also-bought?k=3&max_per_category=1").get_json()
    assert sorted(i[0] for i in ids(item)) == ["G", "K"]  # only two categories exist


def test_item_pages_take_the_same_filters(client) -> None:
    body = client.get("/v1/items/G1/also-bought?k=3&category=kitchen").get_json()
    assert ids(body)[0] == "K1" and body["recommendations"][0]["source"] == "item-knn"
    assert all(i.startswith("K") for i in ids(body))


@pytest.mark.parametrize(
    "payload, status, fragment",
    [
        (
            {"events": [{"user_id": "a", "item_id": "b", "type": "smell"}]},
            400,
            "type: must be one of",
        ),
        (
            {"events": [{"user_id": 7, "item_id": "b", "type": "view"}]},
            400,
            "user_id: must be a string",
        ),
        (
            {
                "events": [
                    {"user_id": "a", "item_id": "b", "type": "view", "timestamp": "yesterday"}
                ]
            },
            400,
            "timestamp",
        ),
        (
            {"events": [{"user_id": "a", "item_id": "b", "type": "view", "timestamp": 4e10}]},
            400,
            "future",
        ),
        (
            {"events": [{"user_id": "a", "item_id": "b", "type": "view", "colour": "red"}]},
            400,
            "colour: unknown field",
        ),
        ({"events": []}, 400, "non-empty list"),
        ({"events": "many"}, 400, "non-empty list"),
    ],
)
def test_bad_events_are_refused_whole(
    client, activity_db: Path, payload, status: int, fragment: str
) -> None:
    good = {"user_id": "a", "item_id": "b", "type": "view"}
    if isinstance(payload["events"], list) and payload["events"]:
        payload = {"events": [good, *payload["events"], good]}
    response = client.post("/v1/events", json=payload)
    assert response.status_code == status
    error = response.get_json()["error"]
    assert fragment in (error["message"] + str(error.get("details")))
    if "details" in error:
        assert [d["index"] for d in error["details"]] == [1]
    assert count_events(ActivityStore(activity_db)) == 0


def test_event_batches_have_limits(client) -> None:
    event = {"user_id": "a", "item_id": "b", "type": "view"}
    assert client.post("/v1/events", json={"events": [event] * 1001}).status_code == 400
    assert (
        client.post("/v1/events", data=b"{not json", content_type="application/json").status_code
        == 400
    )
    huge = client.post(
        "/v1/events", data=b"[" + b" " * (1 << 20) + b"]", content_type="application/json"
    )
    assert (
        huge.status_code == 413 and huge.get_json()["error"]["code"] == "request_entity_too_large"
    )
    when = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    accepted = client.post(
        "/v1/events",
        json=[{**event, "timestamp": when.isoformat()}, {**event, "timestamp": 1714521600}],
    )
    assert accepted.status_code == 201 and accepted.get_json() == {
        "stored": 2,
        "attributed": 0,
        "not_attributed": 0,
    }


def test_a_string_where_a_list_is_documented_is_a_bad_request(client) -> None:
    for body in ({"items": "G1"}, {"items": "G1,K1"}, {"items": ["G1"], "exclude": "G2"}):
        response = client.post("/v1/recommendations", json=body)
        assert response.status_code == 400, body
        field = "exclude" if "exclude" in body else "items"
        assert response.get_json()["error"]["message"] == f"{field}: must be a list of ids"
    # The list itself answers: G2, G3 and G4 each share 5 of G1's 7 buyers.
    listed = client.post("/v1/recommendations", json={"items": ["G1"]}).get_json()
    assert set(ids(listed)[:3]) == {"G2", "G3", "G4"} and "G1" not in ids(listed)
    assert {entry["because"]["item_id"] for entry in listed["recommendations"]} == {"G1"}
    # In a query string, a list is comma-separated.
    query = client.get("/v1/items/G1/also-bought?k=5&exclude=G2,G3").get_json()
    assert not {"G2", "G3"} & set(ids(query))


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"items": ["G1"] * 101}, "items: at most 100"),
        ({"items": [1]}, "items[0]: must be a string"),
        ({"items": ["G1", ""]}, "items[1]: must be 1 to"),
        ({"items": ["G1", "G2", "x" * 1000]}, "items[2]: must be 1 to"),
        ({"items": ["G1", "G\x07"]}, "items[1]: contains control characters"),
        ({"items": ["G1", "G\ufffd"]}, "items[1]: is not valid UTF-8"),
        ({"items": ["G1"], "exclude": ["G2", None]}, "exclude[1]: must be a string"),
        ({"items": ["G1"], "k": "many"}, "k: must be an integer"),
        ({"items": ["G1"], "k": 0}, "k: must be between"),
        ({"items": ["G1"], "max_price": "cheap"}, "max_price: must be a number"),
        ({"items": ["G1"], "available": "perhaps"}, "available: must be true or false"),
        ({"items": ["G1"], "surprise": 1}, "surprise: unknown field"),
        ({}, "items: required"),
        ([1, 2], "body: must be a JSON object"),
    ],
)
def test_bad_list_requests(client, body, fragment) -> None:
    response = client.post("/v1/recommendations", json=body)
    assert response.status_code == 400 and fragment in response.get_json()["error"]["message"]


@pytest.mark.parametrize(
    "url",
    [
        "/v1/users/g1/recommendations?exclude_purchased=maybe",
        "/v1/users/g1/recommendations?max_per_category=0",
        "/v1/users/g1/recommendations?min_price=abc",
        "/v1/users/" + "u" * 200 + "/recommendations",
        "/v1/users/g%0A1/page-you-made",
        "/v1/users/g1/wishlist/recommendations?k=1000",
    ],
)
def test_bad_user_requests_are_400(client, url: str) -> None:
    response = client.get(url)
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "bad_parameter"


def test_training_includes_purchases_recorded_through_the_api(
    own_tribes: Path, activity_db: Path, tmp_path: Path
) -> None:
    client = make_client(own_tribes, activity_db, tmp_path)
    post_events(
        client,
        {"user_id": "newbie", "item_id": "K1", "type": "purchase"},
        {"user_id": "newbie", "item_id": "K2", "type": "purchase"},
        {"user_id": "newbie", "item_id": "K3", "type": "view"},
    )
    log = tmp_path / "tribes.csv"
    write_log(log)
    training.run(tiny_config(log, own_tribes, include_activity=activity_db, als_factors=2))
    model = artifacts.load_current(own_tribes)
    assert "newbie" in model.arrays["user_ids"].tolist()
    assert model.manifest["counts"]["customers"] == len(BASKETS) + 1
    body = client.get("/v1/users/newbie/recommendations?k=2").get_json()
    assert body["known_customer"] is True and not {"K1", "K2"} & set(ids(body))
