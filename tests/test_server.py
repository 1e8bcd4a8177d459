"""The HTTP API through Flask's test client, on a model trained on the tiny hand-made log."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from recommender import artifacts, training

from helpers import make_app, tiny_config

COS_AB, COS_AC = 3 / math.sqrt(12), 1 / math.sqrt(6)


def test_also_bought_by_hand(client) -> None:
    response = client.get("/v1/items/A/also-bought?k=2")
    assert response.status_code == 200
    body = response.get_json()
    assert body["item"] == {"item_id": "A", "name": "Apple", "price": 2.0, "known": True}
    assert body["strategy"] == "item-knn" and body["basis"] == "customers"
    assert body["model_version"] == client.get("/v1/model").get_json()["version"]
    first, second = body["recommendations"]
    assert (first["item_id"], first["name"], first["price"], first["bought_both"]) == (
        "B",
        "Banana",
        1.25,
        3,
    )
    assert first["score"] == pytest.approx(COS_AB, abs=1e-6)
    assert (second["item_id"], second["bought_both"]) == ("C", 1)
    assert second["score"] == pytest.approx(COS_AC, abs=1e-6)
    assert {first["source"], second["source"]} == {"item-knn"}


def test_short_lists_are_topped_up_with_popular_items_and_say_so(client) -> None:
    body = client.get("/v1/items/A/also-bought?k=10").get_json()
    assert [(r["item_id"], r["source"]) for r in body["recommendations"]] == [
        ("B", "item-knn"),
        ("C", "item-knn"),
        ("D", "popular"),
    ]
    assert body["recommendations"][2]["score"] is None


def test_default_k_is_ten(client) -> None:
    # Only three other items exist: the answer without k is the answer with k=10, all three.
    default = client.get("/v1/items/A/also-bought").get_json()
    assert default == client.get("/v1/items/A/also-bought?k=10").get_json()
    assert [(r["item_id"], r["source"], r["score"]) for r in default["recommendations"]] == [
        ("B", "item-knn", pytest.approx(COS_AB, abs=1e-6)),
        ("C", "item-knn", pytest.approx(COS_AC, abs=1e-6)),
        ("D", "popular", None),
    ]
    assert (
        client.get("/v1/users/u5/recommendations").get_json()
        == client.get("/v1/users/u5/recommendations?k=10").get_json()
    )


def write_hub_log(path: Path, spokes: int = 12) -> None:
    """Customer c{j} bought the hub H and spoke S{j}; S{j} has j more buyers who bought it alone.
    H has ``spokes`` buyers, S{j} 1 + j, one shared: cos(H, S{j}) = 1 / sqrt(spokes * (1 + j))."""
    lines = ["user_id,item_id,timestamp,quantity,order_id,price"]
    for j in range(1, spokes + 1):
        lines += [
            f"c{j},H,2024-01-01T10:00:00,1,c{j}-o,1.00",
            f"c{j},S{j:02d},2024-01-01T10:00:00,1,c{j}-o,1.00",
        ]
        lines += [f"s{j}-{n},S{j:02d},2024-01-02T10:00:00,1,s{j}-{n}-o,1.00" for n in range(j)]
    path.write_text("\n".join(lines) + "\n")


def test_default_k_is_ten_when_more_candidates_exist(tmp_path: Path) -> None:
    write_hub_log(tmp_path / "hub.csv")
    training.run(tiny_config(tmp_path / "hub.csv", tmp_path / "models"))
    client = make_app(tmp_path / "models", tmp_path / "activity.sqlite3").test_client()
    default = client.get("/v1/items/H/also-bought").get_json()
    assert default == client.get("/v1/items/H/also-bought?k=10").get_json()
    assert [r["item_id"] for r in default["recommendations"]] == [f"S{j:02d}" for j in range(1, 11)]
    assert [r["score"] for r in default["recommendations"]] == [
        pytest.approx(1 / math.sqrt(12 * (1 + j)), abs=1e-6) for j in range(1, 11)
    ]
    assert {r["source"] for r in default["recommendations"]} == {"item-knn"}
    longer = client.get("/v1/items/H/also-bought?k=11").get_json()["recommendations"]
    assert [r["item_id"] for r in longer] == [f"S{j:02d}" for j in range(1, 12)]
    assert len(client.get("/v1/users/s1-0/recommendations").get_json()["recommendations"]) == 10


def test_bought_together_uses_orders(client) -> None:
    body = client.get("/v1/items/A/bought-together?k=2").get_json()
    assert body["basis"] == "orders" and body["strategy"] == "item-knn"
    # Orders: A in 3 (o1, o2, o4), B in 4, both in 2 -> 2 / sqrt(12).
    assert [(r["item_id"], r["bought_both"]) for r in body["recommendations"]] == [
        ("B", 2),
        ("C", 1),
    ]
    assert body["recommendations"][0]["score"] == pytest.approx(2 / math.sqrt(12), abs=1e-6)


def test_items_with_too_few_buyers_fall_back_to_popular(client) -> None:
    body = client.get("/v1/items/D/also-bought?k=3").get_json()
    assert body["strategy"] == "popular" and body["fallback_reason"] == "too_few_buyers"
    assert [r["item_id"] for r in body["recommendations"]] == ["B", "A", "C"]


def test_unknown_items_fall_back_to_popular(client) -> None:
    response = client.get("/v1/items/NOPE/also-bought?k=2")
    assert response.status_code == 200
    body = response.get_json()
    assert body["item"] == {"item_id": "NOPE", "known": False}
    assert body["fallback_reason"] == "unknown_item"
    assert [r["item_id"] for r in body["recommendations"]] == ["B", "A"]


@pytest.mark.parametrize(
    "url, status, message",
    [
        ("/v1/items/A/also-bought?k=0", 400, "k: must be between 1 and 100"),
        ("/v1/items/A/also-bought?k=101", 400, "k: must be between 1 and 100"),
        ("/v1/items/A/also-bought?k=ten", 400, "k: must be an integer"),
        ("/v1/items/A/also-bought?k=1.5", 400, "k: must be an integer"),
        ("/v1/items/A/also-bought?k=", 400, "k: must be an integer"),
        ("/v1/items/A/also-bought?k=99999999999999999999", 400, "k: must be an integer"),
        ("/v1/items/A/bought-together?k=1&k=2", 400, "k: given 2 times"),
        ("/v1/items/" + "x" * 129 + "/also-bought", 400, "item_id: must be 1 to 128 characters"),
        ("/v1/items/A%01B/also-bought", 400, "item_id: contains control characters"),
        ("/v1/items/%FF%FE/also-bought", 400, "item_id: is not valid UTF-8"),
        ("/v1/items/caf%C3%A9/also-bought", 200, ""),
        ("/v1/items/A/nothing", 404, "not found"),
        ("/nowhere", 404, "not found"),
    ],
)
def test_bad_requests_get_json_errors(client, url: str, status: int, message: str) -> None:
    response = client.get(url)
    assert response.status_code == status
    assert response.is_json
    if status == 200:  # valid UTF-8 ids are fine (an unknown one falls back)
        body = response.get_json()
        assert body["item"] == {"item_id": "caf\u00e9", "known": False}
        assert body["strategy"] == "popular" and body["fallback_reason"] == "unknown_item"
        assert [r["item_id"] for r in body["recommendations"]] == [
            "B",
            "A",
            "C",
            "D",
        ]  # 4, 3, 2, 1 buyers
        return
    error = response.get_json()["error"]
    assert message in error["message"] and error["code"]


def test_wrong_method_is_a_json_405(client) -> None:
    response = client.post("/v1/items/A/also-bought")
    assert (
        response.status_code == 405 and response.get_json()["error"]["code"] == "method_not_allowed"
    )


def test_model_info_and_health(client) -> None:
    info = client.get("/v1/model").get_json()
    assert info["counts"]["customers"] == 5 and info["counts"]["items"] == 4
    assert info["counts"]["orders"] == 6
    assert len(info["data_fingerprint"]) == 64
    assert info["cleaning"]["rows_read"] == 10 and info["cleaning"]["rows_kept"] == 10
    assert set(info["components"]) == {
        "also_bought",
        "bought_together",
        "als",
        "personal",
        "personal_lists",
        "repeat",
        "trending",
    }
    assert client.get("/health").get_json() == {"status": "ok"}
    assert client.get("/ready").get_json()["model_version"] == info["version"]


def test_no_model_yet_is_503_but_alive(tmp_path: Path) -> None:
    client = make_app(tmp_path / "empty", tmp_path / "activity.sqlite3").test_client()
    health = client.get("/health")
    assert health.status_code == 200 and health.get_json() == {"status": "ok"}
    for url in ("/ready", "/v1/model", "/v1/items/A/also-bought"):
        response = client.get(url)
        assert response.status_code == 503
        assert response.get_json()["error"]["code"] == "no_model"


def test_a_new_version_is_picked_up_and_a_broken_one_refused(
    trained_models: Path, tiny_log: Path, activity_db: Path
) -> None:
    client = make_app(trained_models, activity_db).test_client()

    def also_bought_a() -> list[tuple[str, str]]:
        body = client.get("/v1/items/A/also-bought?k=3").get_json()
        return [(r["item_id"], r["source"]) for r in body["recommendations"]]

    first = client.get("/v1/model").get_json()["version"]
    assert also_bought_a() == [("B", "item-knn"), ("C", "item-knn"), ("D", "popular")]
    second = training.run(tiny_config(tiny_log, trained_models, neighbours=1)).name
    assert client.get("/v1/model").get_json()["version"] == second
    # One neighbour each now: A keeps B; C and D are topped up by popularity.
    assert also_bought_a() == [("B", "item-knn"), ("C", "popular"), ("D", "popular")]
    # A third version corrupted after promotion: refused, the second keeps serving.
    third = training.run(tiny_config(tiny_log, trained_models)).name
    scores = trained_models / third / "also_bought.neighbour_scores.npy"
    scores.write_bytes(scores.read_bytes()[:-4] + b"\x00\x00\x80\x7f")
    assert artifacts.current_version(trained_models) == third
    assert client.get("/v1/model").get_json()["version"] == second
    assert also_bought_a() == [("B", "item-knn"), ("C", "popular"), ("D", "popular")]
    # A process starting now finds nothing valid to serve: 503 with a reason, not a crash.
    fresh = make_app(trained_models, trained_models.parent / "fresh.sqlite3").test_client()
    assert fresh.get("/ready").status_code == 503
    assert fresh.get("/health").get_json() == {"status": "ok"}
    # Rolling back by pointing current at a good version is picked up again.
    artifacts.promote(trained_models, first)
    assert client.get("/v1/model").get_json()["version"] == first
    assert also_bought_a() == [("B", "item-knn"), ("C", "item-knn"), ("D", "popular")]
    assert first < second < third


def test_unexpected_errors_are_json_without_details(client, monkeypatch) -> None:
    service = client.application.extensions["recommender"].get()

    def broken(*args, **kwargs):
        raise RuntimeError("secret internals at /srv/app.py")

    monkeypatch.setattr(service, "item_neighbours", broken)
    response = client.get("/v1/items/A/also-bought")
    assert response.status_code == 500
    assert response.get_json() == {
        "error": {"code": "internal_error", "message": "internal error; see the server log"}
    }


def test_catalog_file_overrides_names_and_prices(tiny_log: Path, tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.csv"
    catalog.write_text("item_id,name,price\nB,Organic banana,0.99\nZZ,Not sold,1\n")
    models = tmp_path / "catalogued"
    training.run(tiny_config(tiny_log, models, catalog=catalog))
    client = make_app(models, tmp_path / "activity.sqlite3").test_client()
    first = client.get("/v1/items/A/also-bought?k=1").get_json()["recommendations"][0]
    assert (first["item_id"], first["name"], first["price"]) == ("B", "Organic banana", 0.99)
    assert client.get("/v1/items/ZZ/also-bought").get_json()["item"]["known"] is False


def test_basket_only_log_serves_both_endpoints_from_orders(tmp_path: Path) -> None:
    baskets = tmp_path / "baskets.csv"
    baskets.write_text("milk,bread\nmilk,bread,eggs\nbread,eggs\nmilk\nbeer\n")
    models = tmp_path / "baskets"
    training.run(tiny_config(baskets, models, format="baskets"))
    client = make_app(models, tmp_path / "activity.sqlite3").test_client()
    for endpoint in ("also-bought", "bought-together"):
        body = client.get(f"/v1/items/milk/{endpoint}?k=2").get_json()
        assert body["basis"] == "orders" and body["strategy"] == "item-knn"
        # milk in 3 baskets, bread in 3, both in 2: 2/3; eggs in 2, with milk in 1: 1/sqrt(6).
        assert [(r["item_id"], r["bought_both"]) for r in body["recommendations"]] == [
            ("bread", 2),
            ("eggs", 1),
        ]
        assert body["recommendations"][0]["score"] == pytest.approx(2 / 3, abs=1e-6)
    assert client.get("/v1/model").get_json()["counts"]["customers"] == 0


def test_metrics_count_requests_strategies_and_latency(client) -> None:
    client.get("/v1/items/A/also-bought?k=2")
    client.get("/v1/items/NOPE/also-bought?k=2")
    client.get("/v1/items/A/also-bought?k=0")
    response = client.get("/metrics")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    text = response.get_data(as_text=True)

    def sample(line_start: str) -> float:
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(line_start)
        )

    also = 'endpoint="/v1/items/<item_id>/also-bought"'
    assert sample(f'recommender_requests_total{{{also},method="GET",status="200"}}') >= 2
    assert sample(f'recommender_requests_total{{{also},method="GET",status="400"}}') >= 1
    assert sample(f'recommender_responses_total{{{also},strategy="popular"}}') >= 1
    assert sample(f'recommender_responses_total{{{also},strategy="item-knn"}}') >= 1
    assert sample(f"recommender_request_duration_seconds_count{{{also}}}") >= 3
    assert "recommender_model_created_timestamp_seconds" in text


def test_each_request_writes_one_json_line(client, tmp_path: Path) -> None:
    from recommender.server import observability, wsgi

    log = tmp_path / "requests.log"
    wsgi.configure_request_log(str(log))
    try:
        client.get("/v1/items/A/also-bought?k=2")
        client.get("/v1/items/A/also-bought?k=0")
        client.get("/health")
    finally:
        writer, observability.request_log = observability.request_log, None
        writer.close()
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(line["endpoint"], line["status"], line["strategy"]) for line in lines] == [
        ("/v1/items/<item_id>/also-bought", 200, "item-knn"),
        ("/v1/items/<item_id>/also-bought", 400, None),
        ("/health", 200, None),
    ]
    assert all(line["method"] == "GET" and line["ms"] >= 0 for line in lines)


def test_id_maps_look_up_sorted_and_unsorted_ids() -> None:
    from recommender.data.idmap import IdMap
    from recommender.errors import UnknownItemError

    for ids in (["a", "b", "c"], ["c", "a", "b"]):
        lookup = IdMap(ids)
        assert [lookup.index(i) for i in ids] == [0, 1, 2]
        assert lookup.indices(["b", "zz", "a"]).tolist() == [ids.index("b"), -1, ids.index("a")]
        assert lookup.index("zz", missing="none") is None and "zz" not in lookup and "a" in lookup
        with pytest.raises(UnknownItemError):
            lookup.index("zz")
    with pytest.raises(ValueError, match="unique"):
        IdMap(["b", "a", "b"])
    # Ids of other lengths than the map's widest: a longer one that starts like a known id is
    # unknown (not truncated to it); shorter ones and prefixes are found or not, exactly.
    lookup = IdMap(["ab", "abc", "b"])
    assert (
        lookup.index("abcd", missing="none") is None and lookup.index("a", missing="none") is None
    )
    assert [lookup.index(i) for i in ("ab", "abc", "b")] == [0, 1, 2]
    assert lookup.indices(["abcd", "abc", "b", "", "bb"]).tolist() == [-1, 1, 2, -1, -1]


def test_id_map_with_its_list_kept_answers_as_numpy_search() -> None:
    """``as_list`` switches a sorted map to ``bisect`` over the list: every lookup, one id or
    many (a short list, a long one, a frozenset, an array), must give the same indices."""
    import numpy as np

    from recommender.data.idmap import SHORT_LOOKUP, IdMap

    ids = sorted({f"{n:05d}" for n in range(0, 400, 3)} | {"85123A", "POST", "a", "ab", "é"})
    needles = [*ids[::7], "abcd", "", "zz", "8512", "85123A ", "00003", "é"]
    searched, kept = IdMap(ids), IdMap(ids)
    assert kept.as_list() == ids and kept.as_list() is kept.as_list()
    for needle in needles:
        assert kept.index(needle, missing="none") == searched.index(needle, missing="none")
        assert (needle in kept) == (needle in searched)
    for many in (needles[:3], needles, needles * (SHORT_LOOKUP // len(needles) + 1)):
        assert kept.indices(many).tolist() == searched.indices(many).tolist()
        assert kept.indices(tuple(many)).tolist() == searched.indices(many).tolist()
    assert (
        kept.indices(frozenset(needles)).tolist() == searched.indices(frozenset(needles)).tolist()
    )
    assert kept.indices([]).dtype == searched.indices([]).dtype == np.int64
    assert kept.indices(np.array(needles)).tolist() == searched.indices(needles).tolist()
    # numpy drops a string's trailing NULs, so its many-id search took "ab\x00" for "ab";
    # the kept list answers as a one-id lookup always did (the API refuses such ids anyway).
    assert kept.indices(["ab\x00"]).tolist() == [-1] and searched.index("ab\x00", "none") is None


TOKEN = "s3cret-admin-token-0123456789"


def test_admin_reload_needs_the_token(trained_models: Path, tiny_log: Path, tmp_path: Path) -> None:
    client = make_app(
        trained_models, tmp_path / "a.sqlite3", admin_token=TOKEN, reload_interval=3600
    ).test_client()
    first = client.get("/v1/model").get_json()["version"]
    second = training.run(tiny_config(tiny_log, trained_models)).name
    assert (
        client.get("/v1/model").get_json()["version"] == first
    )  # not polled again within the hour
    assert client.post("/v1/admin/reload").status_code == 401
    wrong = client.post("/v1/admin/reload", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"].startswith("Bearer")
    answer = client.post("/v1/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200 and answer.get_json()["model_version"] == second
    assert client.get("/v1/model").get_json()["version"] == second


def test_admin_endpoints_are_disabled_without_a_token(client) -> None:
    response = client.post("/v1/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 403 and response.get_json()["error"]["code"] == "admin_disabled"


def test_openapi_document_matches_the_routes(app, client) -> None:
    import re

    document = client.get("/openapi.json").get_json()
    assert document["openapi"].startswith("3.")
    documented = {
        (re.sub(r"\{(\w+)\}", r"<\1>", path), method.upper())
        for path, operations in document["paths"].items()
        for method in operations
    }
    routed = {
        (rule.rule, method)
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert documented == routed
