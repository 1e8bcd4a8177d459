"""The Spark engine against the local one: same cleaning counts, same neighbours, ALS as good,
and model files the unchanged server loads. Spark runs in local mode (it needs Java 17)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recommender import artifacts
from recommender.algorithms import ItemKNN
from recommender.config import TrainConfig
from recommender.data.matrix import build_interactions, cap_history
from recommender.errors import GateRefusedError
from recommender.protocols import NEXT_PURCHASE, RANDOM_HOLDOUT, ROLLING
from recommender.training import load_purchases

from helpers import PYTHON, ROOT, SHIPPED_LOG, TINY_LOG, make_app

_JAVA = shutil.which("java") or (
    os.environ.get("JAVA_HOME") and Path(os.environ["JAVA_HOME"], "bin", "java").exists()
)
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not _JAVA, reason="Spark needs Java 17: no java on PATH and no JAVA_HOME"),
    # pyspark's own imports and its socket to the JVM warn; they are not ours to fix.
    pytest.mark.filterwarnings(
        "ignore::DeprecationWarning", "ignore::ResourceWarning", "ignore::FutureWarning"
    ),
]


@pytest.fixture(scope="module")
def spark() -> Iterator[object]:
    from recommender.spark.session import spark_session

    session = spark_session(TrainConfig(spark_master="local[2]", spark_driver_memory="2g"))
    yield session
    session.stop()


def train_on_spark(
    data: Path, models: Path, activity_db: Path, *options: str
) -> subprocess.CompletedProcess[str]:
    """``train.py --engine spark`` in a subprocess, on two local cores, as an operator runs it."""
    return subprocess.run(
        [
            PYTHON,
            "train.py",
            "--engine",
            "spark",
            "--spark-master",
            "local[2]",
            "--spark-driver-memory",
            "2g",
            "--data",
            str(data),
            "--models-dir",
            str(models),
            "--activity-db",
            str(activity_db),
            *options,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture(scope="module")
def shipped_spark_model(tmp_path_factory: pytest.TempPathFactory) -> artifacts.Artifact:
    """``train.py --engine spark`` on the shipped log, in a subprocess as an operator runs it."""
    models = tmp_path_factory.mktemp("spark-models")
    result = train_on_spark(SHIPPED_LOG, models, models / "none.sqlite3")
    assert result.returncode == 0, result.stderr[-3000:]
    return artifacts.load_current(models)


@pytest.fixture(scope="module")
def shipped_local() -> tuple[pd.DataFrame, dict[str, object]]:
    return load_purchases(
        TrainConfig(data=SHIPPED_LOG, activity_db=Path("/nonexistent/activity.sqlite3"))
    )


def test_cleaning_counts_equal_on_the_shipped_log(
    shipped_spark_model: artifacts.Artifact, shipped_local: tuple[pd.DataFrame, dict[str, object]]
) -> None:
    _, local_report = shipped_local
    spark_report = shipped_spark_model.manifest["cleaning"]
    assert spark_report == local_report
    # The messy parts of the log are really exercised, not both engines keeping everything.
    assert spark_report["rows_read"] == 541_909
    assert set(spark_report["dropped"]) >= {
        "duplicate",
        "excluded_item",
        "netted_out_by_return",
        "return_or_cancellation",
        "zero_or_negative_price",
    }
    assert spark_report["guest_rows_kept_for_baskets_only"] > 100_000


@pytest.mark.parametrize(
    "log",
    [
        "messy_retail.csv",
        "broken/duplicate_header.csv",
        "broken/future_dates.csv",
        "broken/giant_quantities.csv",
        "broken/mixed_types.csv",
        "broken/nan_ids.csv",
        "broken/unparseable_dates.csv",
    ],
)
def test_cleaning_counts_equal_on_messy_csv_logs(spark: object, log: str) -> None:
    """Every rule fires in messy_retail.csv (a duplicate, a non-product code, a cancellation that
    nets a purchase out, a partial return that does not, guest lines, a zero price, a zero and
    an implausible quantity, a missing item, a bad time, a bad quantity, no customer and no
    order, a repeated header, ids written as floats); the broken corpus adds its own."""
    from recommender.spark import cleaning as spark_cleaning
    from recommender.spark.session import data_uri
    from recommender.training import cleaning_rules

    path = ROOT / "tests" / "data" / log
    config = TrainConfig(data=path, activity_db=Path("/nonexistent/activity.sqlite3"))
    _, local_report = load_purchases(config)
    frame, preset, repeated = spark_cleaning.read_log(spark, data_uri(path), config)  # type: ignore[arg-type]
    _, spark_report = spark_cleaning.clean(
        frame, cleaning_rules(config, preset), str(path), repeated_headers=repeated
    )
    assert spark_report == local_report
    if log == "messy_retail.csv":
        assert len(spark_report["rejected"]) + len(spark_report["dropped"]) == 12
        assert (
            spark_report["rows_kept"] == 6 and spark_report["guest_rows_kept_for_baskets_only"] == 2
        )


def test_neighbours_equal_the_local_engine_up_to_ties(
    shipped_spark_model: artifacts.Artifact, shipped_local: tuple[pd.DataFrame, dict[str, object]]
) -> None:
    purchases, _ = shipped_local
    config = TrainConfig()
    interactions = build_interactions(purchases, "binary")
    arrays = shipped_spark_model.arrays
    assert np.array_equal(arrays["item_ids"], interactions.item_ids.ids_)
    assert np.array_equal(arrays["user_ids"], interactions.user_ids.ids_)
    assert np.array_equal(arrays["user_items.indptr"], interactions.user_items.indptr)
    assert np.array_equal(arrays["user_items.indices"], interactions.user_items.indices)
    knn = dict(
        neighbours=config.neighbours,
        min_support=config.min_support,
        min_pair_support=config.min_pair_support,
    )
    local_tables = {
        "also_bought": ItemKNN(**knn).fit(
            cap_history(interactions.user_items, interactions.purchase_age, config.max_history)
        ),
        "bought_together": ItemKNN(**knn).fit(interactions.order_items),
    }
    for name, local in local_tables.items():
        ids, scores = (
            arrays[f"{name}.neighbour_ids"][:, :10],
            arrays[f"{name}.neighbour_scores"][:, :10],
        )
        differing = [
            item
            for item in range(len(ids))
            if not _same_up_to_ties(
                ids[item],
                scores[item],
                local.neighbour_ids_[item, :10],
                local.neighbour_scores_[item, :10],
            )
        ]
        assert differing == [], f"{name}: {len(differing)} items differ, e.g. {differing[:5]}"
        assert (
            ids[:, 0] >= 0
        ).sum() > 3000  # most items have neighbours: the comparison has substance
        assert np.array_equal(arrays[f"{name}.item_support"], local.item_support_)
        valid = ids >= 0
        assert np.array_equal(
            arrays[f"{name}.neighbour_support"][:, :10][valid],
            local.neighbour_support_[:, :10][valid],
        )


def test_neighbours_counted_in_many_blocks_equal_one_count_and_the_local_engine(
    spark: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Co-purchases are counted per block of rows and added up per pair: cut into a block
    of about fifteen rows (string order ids as rows), the neighbours are those of the default blocks,
    and those of the local engine (up to ties)."""
    from recommender.spark import models as spark_models

    rng = np.random.default_rng(17)
    rows = [
        (f"o{row}", int(item))
        for row in range(120)
        for item in np.unique(rng.zipf(1.6, size=int(rng.integers(1, 9))) % 40)
    ]
    frame = spark.createDataFrame(rows, "row string, item int")
    knn = dict(neighbours=5, min_support=2, min_pair_support=1)
    default = spark_models.SparkCosineNeighbours(**knn).fit(frame, 40)
    monkeypatch.setattr(spark_models, "PAIRS_PER_BLOCK", 60)  # about 8 blocks
    blocked = spark_models.SparkCosineNeighbours(**knn).fit(frame, 40)
    for name in ("neighbour_ids_", "neighbour_scores_", "neighbour_support_", "item_support_"):
        assert np.array_equal(getattr(default, name), getattr(blocked, name)), name
    order = {order: position for position, order in enumerate(sorted({r for r, _ in rows}))}
    matrix = sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), ([order[r] for r, _ in rows], [i for _, i in rows])),
        shape=(len(order), 40),
    )
    local = ItemKNN(**knn).fit(matrix)
    assert np.array_equal(blocked.item_support_, local.item_support_)
    assert (blocked.neighbour_ids_[:, 0] >= 0).sum() >= 10
    for item in range(40):
        assert _same_up_to_ties(
            blocked.neighbour_ids_[item],
            blocked.neighbour_scores_[item],
            local.neighbour_ids_[item],
            local.neighbour_scores_[item],
        ), item


def test_the_repeat_model_equals_the_local_engines(
    shipped_spark_model: artifacts.Artifact, shipped_local: tuple[pd.DataFrame, dict[str, object]]
) -> None:
    from recommender.model_selection import RepeatChoice
    from recommender.training import fit_repeat

    purchases, _ = shipped_local
    interactions = build_interactions(purchases, "binary")
    local, entry = fit_repeat(interactions, RepeatChoice(), TrainConfig().test_days, 0.0)
    arrays = shipped_spark_model.arrays
    for name in ("times", "frequency", "first_age", "last_age"):
        assert np.allclose(arrays[f"repeat.{name}"], getattr(local, name), atol=1e-3), name
    assert np.allclose(arrays["repeat.rate"], local.rate)
    assert np.allclose(arrays["repeat.cycle_days"], local.cycle_days, equal_nan=True, rtol=1e-4)
    assert float(arrays["repeat.shop_rate"][0]) == pytest.approx(float(local.shop_rate[0]))
    manifest = shipped_spark_model.manifest["components"]["repeat"]
    assert manifest["mix"] == entry["mix"] and manifest["tuned"] is False


def test_spark_als_ndcg_within_ten_percent_of_local_als(
    spark: object, shipped_local: tuple[pd.DataFrame, dict[str, object]]
) -> None:
    from recommender.model_selection import build_als, evaluation_fold, factor_metrics
    from recommender.spark.models import fit_als, spark_als_params

    purchases, _ = shipped_local
    config = TrainConfig()
    fold = evaluation_fold(purchases, config.evaluation_settings)
    local = build_als(config.als).fit(fold.interactions.user_counts)
    local_ndcg = factor_metrics(
        fold, local.user_factors_, local.item_factors_, config.evaluation_settings
    )["ndcg"]

    counts = fold.interactions.user_counts.tocoo()
    n_users, n_items = fold.interactions.user_counts.shape
    ratings = spark.createDataFrame(
        pd.DataFrame(  # type: ignore[attr-defined]
            {"row": counts.row.astype(np.int32), "item": counts.col.astype(np.int32), "rating": 1.0}
        )
    )
    params = spark_als_params(
        config.als_factors,
        config.als_regularization,
        config.als_alpha,
        config.als_iterations,
        counts.nnz / n_users,
    )
    user_rows, item_rows = fit_als(ratings, params, config.random_state)
    user_factors = _dense_factors(user_rows.collect(), n_users, config.als_factors)
    item_factors = _dense_factors(item_rows.collect(), n_items, config.als_factors)
    spark_ndcg = factor_metrics(fold, user_factors, item_factors, config)["ndcg"]
    assert local_ndcg > 0.08  # the local ALS itself is a working model on this split
    assert spark_ndcg >= 0.9 * local_ndcg, (spark_ndcg, local_ndcg)


def _spark_lines(spark: object, log: pd.DataFrame) -> object:
    """A cleaned log as the Spark evaluation reads it: integer customer and item indices."""
    frame = pd.DataFrame(
        {
            "row": pd.factorize(log["user_id"], sort=True)[0].astype(np.int32),
            "item": pd.factorize(log["item_id"], sort=True)[0].astype(np.int32),
            "order_id": log["order_id"].astype(str),
            "timestamp": log["timestamp"].astype("datetime64[us]"),
        }
    )
    return spark.createDataFrame(frame)  # type: ignore[attr-defined]


def _orders_log(
    customers: int, days: Callable[[int], Iterable[float]], seed: int = 0
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [
        (
            f"c{c}",
            f"i{item}",
            pd.Timestamp("2023-01-01") + pd.Timedelta(days=float(day)),
            f"c{c}-{n}",
        )
        for c in range(customers)
        for n, day in enumerate(days(c))
        for item in rng.choice(300, 2, replace=False)
    ]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "order_id"])


@pytest.mark.parametrize(
    "days, expected",
    [
        (lambda c: range(c % 10, 365, 10), ROLLING),  # every period holds every customer
        (
            lambda c: [c * 1.5, c * 1.5 + 4, c * 1.5 + 9],
            NEXT_PURCHASE,
        ),  # bursts spread over the year
        (lambda c: [0.0, 0.0], RANDOM_HOLDOUT),  # one timestamp for every line
    ],
)
def test_spark_protocol_applies_the_local_rule_to_the_same_figures(
    spark: object, days: Any, expected: str
) -> None:
    from recommender.protocols import choose_protocol
    from recommender.spark.evaluation import spark_protocol

    log = _orders_log(240, days)
    config = TrainConfig()
    settings = config.evaluation_settings
    local = choose_protocol(log, settings.test_days, settings.validation_periods)
    from pyspark.sql import functions as F

    lines = _spark_lines(spark, log).select(
        "row", "item", "order_id", F.col("timestamp").cast("long").alias("t")
    )
    on_spark = spark_protocol(lines, settings)
    assert local.name == on_spark.name == expected
    assert on_spark.stats == local.stats
    assert on_spark.also == ()  # Spark measures the primary protocol only


def test_spark_next_purchase_split_holds_out_the_lines_the_local_one_does(spark: object) -> None:
    """Each customer's last order by time (then order id); c2's two orders share a time, so
    c2 has no earlier side and nothing is held out."""
    from pyspark.sql import functions as F

    from recommender.data.split import next_purchase_split
    from recommender.spark.evaluation import _next_purchase_split

    day = pd.Timestamp("2024-01-01")
    log = pd.DataFrame(
        [
            ("c0", "A", day, "o1"),
            ("c0", "B", day + pd.Timedelta(days=3), "o2"),
            ("c0", "C", day + pd.Timedelta(days=3), "o3"),
            ("c1", "A", day, "o4"),
            ("c1", "D", day + pd.Timedelta(days=1), "o5"),
            ("c2", "B", day, "o6"),
            ("c2", "C", day, "o7"),
            ("c3", "A", day, "o8"),
        ],
        columns=["user_id", "item_id", "timestamp", "order_id"],
    )
    lines = _spark_lines(spark, log).select(
        "row", "item", "order_id", F.col("timestamp").cast("long").alias("t")
    )
    _, held = _next_purchase_split(lines, 1.0, 0)
    spark_held = sorted(held.select("order_id").distinct().toPandas()["order_id"])
    local_held = sorted(next_purchase_split(log).test["order_id"].unique())
    assert spark_held == local_held == ["o3", "o5"]


def test_spark_evaluation_equals_the_local_engine_within_ten_percent(
    shipped_spark_model: artifacts.Artifact, shipped_local: tuple[pd.DataFrame, dict[str, object]]
) -> None:
    """The shipped log, one protocol: the Spark engine's reported NDCG@10 for the model it
    ships against the local engine's measure of the same blend on the same test fold."""
    from recommender.model_selection import BlendChoice, evaluation_fold
    from recommender.model_selection.scoring import FoldState, choice_scores, metrics
    from recommender.protocols import choose_protocol

    evaluation = json.loads((shipped_spark_model.path / "evaluation.json").read_text())
    purchases, _ = shipped_local
    settings = TrainConfig().evaluation_settings
    local_protocol = choose_protocol(purchases, settings.test_days, settings.validation_periods)
    assert evaluation["engine"] == "spark"
    assert evaluation["protocol"]["name"] == local_protocol.name == ROLLING
    assert evaluation["protocol"]["stats"] == local_protocol.stats
    fold = evaluation_fold(purchases, settings)
    assert evaluation["protocol"]["customers_evaluated"] == fold.description["customers_evaluated"]
    assert evaluation["validation"]["configurations_measured"] >= 10
    choice = BlendChoice(**shipped_spark_model.manifest["blend"])
    assert evaluation["shipped"] == "shipped: " + choice.label()
    local = metrics(fold, choice_scores(FoldState(fold), choice, settings), settings)["ndcg"]
    reported = evaluation["headline_value"]
    assert local > 0.05
    assert abs(reported - local) <= 0.10 * local, (reported, local)
    assert shipped_spark_model.manifest["evaluation"]["value"] == reported
    assert evaluation["models"]["baseline: popularity"]["ndcg"] < reported
    # As on the local engine, the figure is recomputed from the rankings saved in the version.
    arrays = shipped_spark_model.arrays
    indptr, items = arrays["evaluation.targets.indptr"], arrays["evaluation.targets.items"]
    values = []
    for row, ranked in enumerate(arrays["evaluation.recommended"]):
        targets = set(items[indptr[row] : indptr[row + 1]].tolist())
        gains = sum(
            1 / np.log2(rank + 2) for rank, item in enumerate(ranked[:10]) if item in targets
        )
        values.append(
            gains
            / sum(
                1 / np.log2(rank + 2)
                for rank in range(min(int(arrays["evaluation.n_targets"][row]), 10))
            )
        )
    assert np.mean(values) == pytest.approx(reported, abs=1e-9)


def test_a_worse_spark_model_is_refused_by_the_gate(
    spark: object, shipped_spark_model: artifacts.Artifact, tmp_path: Path
) -> None:
    """2 factors, 1 iteration, 1 neighbour, histories cut to 100 items, retrained on the log's
    last six weeks: measured against the serving model's recipe (its own settings) refitted
    on the same test fold, it is refused and the serving model stays. One validation period
    for the new run's own search (the gate's test fold is the same whatever the search):
    87 against 127 s for this test alone, on the suite's longest path. In this process, on
    the module's Spark session (a JVM started once); the exit code the refusal gives
    ``train.py`` (3) is the same on both engines (test_quality)."""
    from recommender.spark import training as spark_training

    models = tmp_path / "models"
    shutil.copytree(shipped_spark_model.path.parent, models, symlinks=True)
    recent = tmp_path / "recent.parquet"
    log = pd.read_parquet(SHIPPED_LOG)
    log[log["InvoiceDate"] >= "2011-10-25"].to_parquet(recent, index=False)
    config = TrainConfig(
        data=recent,
        models_dir=models,
        activity_db=models / "none.sqlite3",
        engine="spark",
        spark_master="local[2]",
        als_factors=2,
        als_iterations=1,
        neighbours=1,
        max_history=100,
        validation_periods=1,
    )
    with pytest.raises(GateRefusedError, match="not promoted: ndcg@10 .* more than 5% below"):
        spark_training.run(config)
    assert artifacts.current_version(models) == shipped_spark_model.version
    refused = [
        version for version in artifacts.versions(models) if version != shipped_spark_model.version
    ]
    gate = artifacts.read_manifest(models, refused[0])["gate"]
    assert gate["status"] == "refused"
    assert gate["new"] < 0.95 * gate["current"]
    assert gate["current_version"] == shipped_spark_model.version


def test_tiny_log_trains_on_spark_and_the_server_answers(spark: object, tmp_path: Path) -> None:
    """Cosine worked out by hand: buyers A {u1,u2,u4}, B {u1..u4}, C {u2,u3}; the app is the real one."""
    from recommender.spark import training as spark_training

    log = tmp_path / "tiny.csv"
    log.write_text(TINY_LOG)
    config = TrainConfig(
        data=log,
        models_dir=tmp_path / "models",
        activity_db=tmp_path / "a.sqlite3",
        engine="spark",
        spark_master="local[2]",
        min_support=1,
        min_pair_support=1,
        als_factors=4,
        als_iterations=3,
    )
    path = spark_training.run(config)
    model = artifacts.load(path)
    assert model.manifest["engine"]["name"] == "spark"
    assert model.arrays["item_ids"].tolist() == ["A", "B", "C", "D"]
    assert model.arrays["user_ids"].tolist() == ["u1", "u2", "u3", "u4", "u5"]
    ids, scores = (
        model.arrays["also_bought.neighbour_ids"],
        model.arrays["also_bought.neighbour_scores"],
    )
    assert ids[0, :2].tolist() == [1, 2] and np.allclose(
        scores[0, :2], [3 / np.sqrt(12), 1 / np.sqrt(6)]
    )
    assert ids[1, :2].tolist() == [0, 2] and np.allclose(
        scores[1, :2], [3 / np.sqrt(12), 2 / np.sqrt(8)]
    )
    assert ids[2, :2].tolist() == [1, 0] and np.allclose(
        scores[2, :2], [2 / np.sqrt(8), 1 / np.sqrt(6)]
    )
    assert ids[3, 0] == -1
    assert model.arrays["also_bought.neighbour_support"][1, :2].tolist() == [3, 2]
    assert model.arrays["also_bought.item_support"].tolist() == [3, 4, 2, 1]  # customers per item
    assert model.arrays["catalog.names"].tolist() == ["Apple", "Banana", "Cherry", "Durian"]
    assert model.arrays["catalog.prices"][1] == pytest.approx(1.25)  # the latest price
    assert model.arrays["als.user_factors"].shape == (5, 4)
    assert model.manifest["cleaning"]["rows_kept"] == 10

    client = make_app(config.models_dir, tmp_path / "a.sqlite3").test_client()
    answer = client.get("/v1/items/A/also-bought?k=2").get_json()
    assert [(r["item_id"], r["bought_both"]) for r in answer["recommendations"]] == [
        ("B", 3),
        ("C", 1),
    ]
    personal = client.get("/v1/users/u3/recommendations?k=2")
    assert personal.status_code == 200
    picks = {r["item_id"] for r in personal.get_json()["recommendations"]}
    assert picks and picks.isdisjoint({"B", "C"})  # u3 owns B and C


def test_purchases_recorded_through_the_api_are_trained_on_spark(
    spark: object, tmp_path: Path
) -> None:
    """``--include-activity``: u5 bought D in the log and A through the API; both engines
    then know u5 as a buyer of A and D, and clean the same lines."""
    from recommender.activity import ActivityStore, Event
    from recommender.spark import training as spark_training

    log = tmp_path / "tiny.csv"
    log.write_text(TINY_LOG)
    database = tmp_path / "a.sqlite3"
    store = ActivityStore(database)
    store.create_schema()
    now = time.time()
    store.add_events(
        [Event("u5", "A", "purchase", now - 3600), Event("u5", "B", "view", now - 1800)]
    )
    store.close()
    config = TrainConfig(
        data=log,
        models_dir=tmp_path / "models",
        activity_db=database,
        include_activity=database,
        engine="spark",
        spark_master="local[2]",
        min_support=1,
        min_pair_support=1,
        als_factors=4,
        als_iterations=3,
        evaluate=False,
    )
    model = artifacts.load(spark_training.run(config))
    users, items = model.arrays["user_ids"].tolist(), model.arrays["item_ids"].tolist()
    indptr, indices = model.arrays["user_items.indptr"], model.arrays["user_items.indices"]
    row = users.index("u5")
    assert sorted(items[i] for i in indices[indptr[row] : indptr[row + 1]]) == ["A", "D"]
    _, local_report = load_purchases(config)
    assert model.manifest["cleaning"] == local_report
    assert model.manifest["cleaning"]["rows_kept"] == 11


def test_a_log_of_guest_baskets_trains_and_is_evaluated_on_spark(
    spark: object, tmp_path: Path
) -> None:
    """Groceries baskets as a log without customer ids: baskets are held out (one hidden item
    each), no ALS and no customers exist, and the server answers a basket from the
    "bought together" neighbours. Trained in this process, on the module's Spark session."""
    from recommender.spark import training as spark_training

    baskets = [
        line.split(",")
        for line in (ROOT / "data" / "groceries.csv").read_text().splitlines()[:3000]
    ]
    log = tmp_path / "baskets.csv"
    pd.DataFrame(
        [(f"b{number}", item) for number, basket in enumerate(baskets) for item in basket],
        columns=["order_id", "item_id"],
    ).to_csv(log, index=False)
    models = tmp_path / "models"
    spark_training.run(
        TrainConfig(
            data=log,
            models_dir=models,
            activity_db=tmp_path / "none.sqlite3",
            engine="spark",
            spark_master="local[2]",
        )
    )
    model = artifacts.load_current(models)
    evaluation = json.loads((model.path / "evaluation.json").read_text())
    assert (
        evaluation["protocol"]["name"] == RANDOM_HOLDOUT
        and "no customer ids" in evaluation["protocol"]["reason"]
    )
    assert evaluation["protocol"]["held_out"].endswith(" baskets")
    assert not any("ALS" in name for name in evaluation["models"])
    # Popularity is a candidate: what ships is never worse than it.
    assert (
        evaluation["models"]["baseline: popularity"]["hit_rate"]
        <= evaluation["models"][evaluation["shipped"]]["hit_rate"]
    )
    assert (
        model.manifest["counts"]["customers"] == 0 and model.manifest["blend"]["als_weight"] == 0.0
    )
    assert model.manifest["counts"]["orders"] == len(baskets)
    client = make_app(models, tmp_path / "a.sqlite3").test_client()
    answer = client.post("/v1/recommendations", json={"items": ["whole milk", "yogurt"], "k": 5})
    assert answer.status_code == 200, answer.get_json()
    picks = [r["item_id"] for r in answer.get_json()["recommendations"]]
    assert len(picks) == 5 and not {"whole milk", "yogurt"} & set(picks)


def test_history_cap_keeps_the_same_items_on_both_engines(spark: object) -> None:
    """u1 bought A (day 1), B (day 3), C (day 2), D (day 3); a cap of 2 keeps B and D (the
    most recent; B before D on the equal day by index), u2's two items stay."""
    from recommender.spark.models import capped_pairs

    day = pd.Timestamp("2024-01-01")
    rows = [
        (0, 0, day),
        (0, 1, day + pd.Timedelta(days=2)),
        (0, 2, day + pd.Timedelta(days=1)),
        (0, 3, day + pd.Timedelta(days=2)),
        (1, 0, day),
        (1, 2, day),
    ]
    frame = spark.createDataFrame(pd.DataFrame(rows, columns=["row", "item", "last"]))  # type: ignore[attr-defined]
    spark_kept = sorted((r["row"], r["item"]) for r in capped_pairs(frame, 2).collect())
    newest = max(r[2] for r in rows)
    ages = [1.0 + (newest - r[2]).days for r in rows]
    shape = (2, 4)
    user_items = sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), ([r[0] for r in rows], [r[1] for r in rows])),
        shape=shape,
    )
    purchase_age = sp.csr_matrix(
        (np.array(ages, dtype=np.float32), ([r[0] for r in rows], [r[1] for r in rows])),
        shape=shape,
    )
    local = cap_history(user_items, purchase_age, 2).tocoo()
    local_kept = sorted(zip(local.row.tolist(), local.col.tolist()))
    assert spark_kept == local_kept == [(0, 1), (0, 3), (1, 0), (1, 2)]


def test_unsupported_settings_and_missing_files_are_one_line_errors(tmp_path: Path) -> None:
    for args, expected in (
        (["--similarity", "bm25"], "similarity/weighting: the spark engine computes cosine"),
        (["--data", str(tmp_path / "missing.csv")], "missing.csv: file not found"),
    ):
        result = subprocess.run(
            [PYTHON, "train.py", "--engine", "spark", "--models-dir", str(tmp_path), *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 2, result.stderr
        assert expected in result.stderr and "Traceback" not in result.stderr
        assert not list(tmp_path.glob("2*"))


def test_the_local_engine_and_the_server_never_import_pyspark() -> None:
    code = (
        "import sys, recommender.cli, recommender.training, recommender.server, recommender.model_selection;"
        "assert not [m for m in sys.modules if m.startswith('pyspark')], 'pyspark imported'"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def _same_up_to_ties(
    ids_a: np.ndarray,
    scores_a: np.ndarray,
    ids_b: np.ndarray,
    scores_b: np.ndarray,
    tolerance: float = 1e-5,
) -> bool:
    """Two top-K lists agree when their scores agree position by position and each group of
    equal scores holds the same items; the last group may be cut differently by K."""
    valid_a, valid_b = ids_a >= 0, ids_b >= 0
    if valid_a.sum() != valid_b.sum() or not np.allclose(
        scores_a[valid_a], scores_b[valid_b], atol=tolerance
    ):
        return False
    ids_a, ids_b, scores = ids_a[valid_a], ids_b[valid_b], scores_a[valid_a]
    start = 0
    while start < len(ids_a):
        stop = start
        while stop < len(ids_a) and abs(scores[stop] - scores[start]) <= tolerance:
            stop += 1
        if stop < len(ids_a) and set(ids_a[start:stop]) != set(ids_b[start:stop]):
            return False
        start = stop
    return True


def _dense_factors(rows: list[object], length: int, rank: int) -> np.ndarray:
    factors = np.zeros((length, rank), dtype=np.float32)
    for row in rows:
        factors[row["id"]] = row["features"]  # type: ignore[index]
    return factors
