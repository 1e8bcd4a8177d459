"""The customer's rights, end to end through the API, the SQLite store and the next training run."""

from __future__ import annotations

from pathlib import Path

import pytest

from recommender import artifacts, training

from helpers import make_app, private_copy, tiny_config, unchanged, write_log

TOKEN = "privacy-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def models_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("privacy-shared")
    write_log(root / "tribes.csv")
    training.run(tiny_config(root / "tribes.csv", root / "models", als_factors=2))
    return root / "models"


def make_world(models: Path, tmp_path: Path):
    """(client, log, models): the client on ``models`` with this test's own activity database in
    ``tmp_path / "var"``, where training looks for it when ``models`` is ``tmp_path / "models"``."""
    log = tmp_path / "tribes.csv"
    write_log(log)
    customers = tmp_path / "customers.csv"
    customers.write_text("id,name,opted_out\ng1,Ana,false\ng2,Ben,true\n")
    app = make_app(
        models, tmp_path / "var" / "activity.sqlite3", admin_token=TOKEN, customers_file=customers
    )
    return app.test_client(), log, models


@pytest.fixture
def world(models_once: Path, tmp_path: Path):
    """The shared model, read only; requests write to this test's own SQLite file."""
    with unchanged(models_once) as models:
        yield make_world(models, tmp_path)


@pytest.fixture
def own_world(models_once: Path, tmp_path: Path):
    """As ``world`` on a copy of the model in ``tmp_path / "models"``, for a test that retrains."""
    return make_world(private_copy(models_once, tmp_path / "models"), tmp_path)


def ids(body: dict) -> list[str]:
    return [entry["item_id"] for entry in body["recommendations"]]


def test_forgetting_erases_suppresses_and_leaves_the_next_model(own_world) -> None:
    client, log, models = own_world
    client.post("/v1/events", json=[{"user_id": "g1", "item_id": "K1", "type": "view"}])
    client.put("/v1/users/g1/wishlist/K2")
    assert client.get("/v1/users/g1/recommendations?k=3").get_json()["strategy"] == "blend"

    assert client.delete("/v1/users/g1").status_code == 401  # admin only
    answer = client.delete("/v1/users/g1", headers=ADMIN).get_json()
    assert (
        answer["forgotten"] is True
        and answer["events_erased"] == 2
        and answer["wishlist_items_erased"] == 1
    )

    # From this moment: nothing personal, flagged; nothing stored for the id again.
    for path in ("recommendations", "page-you-made", "wishlist/recommendations"):
        body = client.get(f"/v1/users/g1/{path}?k=3").get_json()
        assert body["strategy"] == "popular" and body["fallback_reason"] == "forgotten", path
    assert client.get("/v1/users/g1/wishlist").get_json()["items"] == []
    assert client.post(
        "/v1/events", json=[{"user_id": "g1", "item_id": "K3", "type": "view"}]
    ).get_json() == {"stored": 0, "attributed": 0, "not_attributed": 0}
    assert client.put("/v1/users/g1/wishlist/K3").status_code == 409
    data = client.get("/v1/users/g1/data", headers=ADMIN).get_json()
    assert data["events"] == [] and data["wishlist"] == [] and data["suppression"] == "forgotten"
    assert data["current_model"]["trained_on_their_purchases"] is True  # until the next training

    # The next training run drops their purchases: the id is in no file of the new version.
    version = training.run(tiny_config(log, models, als_factors=2))
    manifest = artifacts.load(version).manifest
    assert manifest["cleaning"]["dropped"]["forgotten_customer"] == 3
    for path in version.iterdir():
        payload = path.read_bytes()
        assert b"g1" not in payload and "g1".encode("utf-32-le") not in payload, path.name
    client.post("/v1/admin/reload", headers=ADMIN)
    data = client.get("/v1/users/g1/data", headers=ADMIN).get_json()
    assert data["current_model"] == {
        "version": version.name,
        "trained_on_their_purchases": False,
        "purchased_items_in_model": [],
    }


def test_opting_out_keeps_data_but_stops_personalisation(world) -> None:
    client, _, _ = world
    assert client.get("/v1/users/k1/recommendations?k=2").get_json()["strategy"] == "blend"
    assert client.put("/v1/users/k1/opt-out", headers=ADMIN).get_json() == {
        "user_id": "k1",
        "opted_out": True,
    }
    body = client.get("/v1/users/k1/recommendations?k=2").get_json()
    assert body["strategy"] == "popular" and body["fallback_reason"] == "opted_out"
    assert client.get("/v1/users/k1/data", headers=ADMIN).get_json()["suppression"] == "opted_out"
    client.delete("/v1/users/k1/opt-out", headers=ADMIN)
    assert client.get("/v1/users/k1/recommendations?k=2").get_json()["strategy"] == "blend"
    # Opted out in the customers file: the same.
    assert (
        client.get("/v1/users/g2/recommendations?k=2").get_json()["fallback_reason"] == "opted_out"
    )


def test_subject_access_lists_everything(world) -> None:
    client, _, _ = world
    client.post("/v1/events", json=[{"user_id": "g1", "item_id": "K1", "type": "view"}])
    client.put("/v1/users/g1/wishlist/K2")
    data = client.get("/v1/users/g1/data", headers=ADMIN).get_json()
    assert [e["item_id"] for e in data["events"]] == ["K1", "K2"]
    assert data["wishlist"][0]["item_id"] == "K2"
    assert data["customers_file"] == {"name": "Ana", "opted_out": False}
    assert data["current_model"]["trained_on_their_purchases"] is True
    assert sorted(data["current_model"]["purchased_items_in_model"]) == ["G1", "G2", "G3"]
    assert client.get("/v1/users/g1/data").status_code == 401
