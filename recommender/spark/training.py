"""One training run on Spark: read, clean, index, fit, write the same model version as the
local engine (``recommender.training``), which the server loads without knowing the difference.

What is computed where: the log is read, cleaned, indexed and aggregated by Spark; the
item-to-item tables (n_items x K) and the item factors are small and collected; the arrays
that grow with the customers (their ids, their purchases, their factors) are streamed to
the model directory one partition at a time (``session.stream_blocks``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from .. import artifacts
from ..bundle import (
    REPEAT_CELL_FIELDS,
    CsrArrays,
    ModelBundle,
    NeighbourArrays,
    RepeatArrays,
    build_manifest,
)
from ..config import TrainConfig
from ..data.catalog import build_catalog
from ..data.idmap import IdMap
from ..data.loading import read_catalog, recorded_lines
from ..errors import ConfigError, DataError
from ..model_selection import BlendChoice, RepeatChoice
from ..run_steps import (
    cleaning_rules,
    data_signature,
    forgotten_customers,
    gate_decision,
    headline,
    jsonable,
    recorded_purchases,
    repeat_parts,
    save_version,
)
from . import cleaning
from .evaluation import default_choice, knn_params, select_and_evaluate
from .models import (
    SparkCosineNeighbours,
    capped_pairs,
    column_block,
    factor_block,
    fit_als,
    item_totals,
    spark_als_params,
)
from .session import data_uri, spark_session, stream_blocks

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

logger = logging.getLogger(__name__)


def run(config: TrainConfig) -> Path:
    """Train on ``config.data`` with Spark and promote the result; return its directory.

    Raises the same errors as ``recommender.training.run``, plus ``ConfigError`` for settings
    the Spark engine does not support (it says which).
    """
    _check_supported(config)
    started = time.perf_counter()
    uri = data_uri(config.data)
    spark = spark_session(config)
    try:
        return _run(spark, config, uri, started)
    finally:
        spark.catalog.clearCache()


def _run(spark: SparkSession, config: TrainConfig, uri: str, started: float) -> Path:
    """Read, clean, index, choose, fit and save on ``spark``. Long because it is the run's
    sequence, step by step, as the local engine's ``training.run`` is."""
    from pyspark.sql import functions as F

    frame, preset, repeated_headers = cleaning.read_log(spark, uri, config)
    if config.include_activity:
        frame = _with_activity_purchases(
            frame, config.include_activity, config.activity_db_password
        )
    kept, cleaning_report = cleaning.clean(
        frame,
        cleaning_rules(config, preset),
        uri,
        forgotten_customers(config),
        repeated_headers=repeated_headers,
    )
    has_customers = (
        cleaning_report["rows_kept"] > cleaning_report["guest_rows_kept_for_baskets_only"]
    )

    items = _index(spark, kept, "item_id", "item")
    item_ids = IdMap(np.array([row[0] for row in items.orderBy("item").collect()], dtype=np.str_))
    n_items = len(item_ids)
    lines = kept.join(F.broadcast(items) if n_items < 1_000_000 else items, "item_id")
    users = _index(spark, kept, "user_id", "row") if has_customers else None
    lines = (
        lines.join(users, "user_id", "left")
        if users is not None
        else lines.withColumn("row", F.lit(None).cast("int"))
    )
    if "timestamp" not in kept.columns:
        lines = lines.withColumn("timestamp", F.lit(None).cast("timestamp"))
    knn = knn_params(config.evaluation_settings)
    orders = _order_items(lines, kept).persist()
    n_orders = orders.select("row").distinct().count()
    bought_together = SparkCosineNeighbours(**knn).fit(orders, n_items)

    current_version = artifacts.current_version(config.models_dir)
    current_manifest = (
        artifacts.read_manifest(config.models_dir, current_version) if current_version else None
    )
    if has_customers:
        parts = _customer_parts(lines, users, item_ids, config, current_manifest)
    else:
        parts = _basket_parts(spark, orders, item_ids, config, current_manifest)
    choice = parts.pop("choice")
    evaluation, notes, predictions = (
        parts.pop("evaluation"),
        parts.pop("notes"),
        parts.pop("predictions"),
    )
    components, counts = parts.pop("components"), parts.pop("counts")
    components["bought_together"] = {
        "model": "item_knn",
        "basis": "orders",
        "similarity": "cosine",
        **knn,
    }
    parts["tables"]["bought_together"] = NeighbourArrays.of(bought_together.to_arrays())
    signature = data_signature(config)
    gate = gate_decision(
        evaluation, current_version, bool((current_manifest or {}).get("blend")), config.gate
    )
    bundle = ModelBundle(
        item_ids=item_ids.ids_,
        catalog=_catalog(lines, item_ids, config),
        **parts,
        manifest=build_manifest(
            engine={
                "name": "spark",
                "pyspark": metadata.version("pyspark"),
                "master": spark.sparkContext.master,
            },
            components=components,
            blend=asdict(choice) if has_customers else {**asdict(choice), "als_weight": 0.0},
            params=jsonable(vars(config)),
            data={"path": uri, "sha256": signature["log_sha256"], "signature": signature},
            cleaning=cleaning_report,
            counts={
                "items": n_items,
                "orders": n_orders,
                "purchase_lines": cleaning_report["rows_kept"],
                **counts,
            },
            evaluation=headline(evaluation),
            gate=gate,
            notes=notes,
            libraries={name: metadata.version(name) for name in ("pyspark", "numpy", "pandas")},
        ),
    )
    bundle.predictions = predictions
    orders.unpersist()
    return save_version(config, bundle, evaluation, current_version, started)


def _customer_parts(
    lines: DataFrame,
    users: DataFrame,
    item_ids: IdMap,
    config: TrainConfig,
    current_manifest: dict[str, Any] | None,
) -> dict[str, Any]:
    """What a log of customers adds: "also bought" on their histories, ALS, trending, the
    customers' arrays (streamed), and the blend chosen by the evaluation.

    Long because its fits share cached Spark frames, released together when they are done.
    """
    from pyspark.sql import functions as F

    n_items = len(item_ids)
    customer_items = (
        lines.where(F.col("row").isNotNull())
        .groupBy("row", "item")
        .agg(F.count("*").alias("lines"), F.max("timestamp").alias("last"))
        .persist()
    )
    n_users = users.count()
    nnz = customer_items.count()
    logger.info("spark interactions: %d customers x %d items (nnz %d)", n_users, n_items, nnz)
    knn = knn_params(config.evaluation_settings)
    also_bought = SparkCosineNeighbours(**knn).fit(
        capped_pairs(customer_items, config.max_history), n_items
    )

    weight = (
        F.lit(1.0)
        if config.als_confidence == "binary"
        else 1.0 + F.log(F.col("lines").cast("double"))
    )
    als_params = spark_als_params(
        config.als_factors,
        config.als_regularization,
        config.als_alpha,
        config.als_iterations,
        nnz / max(n_users, 1),
    )
    user_factors, item_factors = fit_als(
        customer_items.select("row", "item", weight.alias("rating")),
        als_params,
        config.random_state,
    )
    item_factor_array = np.zeros((n_items, config.als_factors), dtype=np.float32)
    for row in item_factors.collect():
        item_factor_array[row["id"]] = row["features"]

    choice, evaluation, notes, predictions = _choose(
        lines, users, item_ids, config, current_manifest
    )
    newest = customer_items.agg(F.max("last")).first()[0]
    age_days = (
        ((F.unix_timestamp(F.lit(newest)) - F.unix_timestamp("last")) / 86400.0)
        if newest
        else F.lit(0.0)
    )
    trending = item_totals(
        customer_items.withColumn(
            "weight",
            F.pow(F.lit(0.5), F.coalesce(age_days, F.lit(0.0)) / choice.trend_half_life_days),
        ),
        "weight",
        n_items,
    )
    repeat, repeat_entry = (
        _repeat_parts(lines, customer_items, n_items, newest, config.test_days, nnz)
        if newest
        else (None, None)
    )
    components = {
        "also_bought": {
            "model": "item_knn",
            "basis": "customers",
            "similarity": "cosine",
            "max_history": config.max_history,
            **knn,
        },
        # regularization and alpha as the server's fold-in uses them (implicit's convention).
        "als": {
            "model": "als",
            "basis": "customers",
            "factors": config.als_factors,
            "regularization": config.als_regularization,
            "alpha": config.als_alpha,
            "iterations": config.als_iterations,
            "confidence": config.als_confidence,
            "random_state": config.random_state,
            "spark_params": als_params,
        },
        "trending": {
            "model": "popular",
            "basis": "customers",
            "half_life_days": choice.trend_half_life_days,
        },
    }
    if repeat_entry is not None:
        components["repeat"] = repeat_entry
    return {
        "choice": choice,
        "evaluation": evaluation,
        "notes": notes,
        "predictions": predictions,
        "components": components,
        "counts": {"customers": n_users, "customer_item_pairs": nnz},
        "repeat": repeat,
        "user_ids": _user_ids(users, n_users),
        "user_items": CsrArrays(**_user_items(customer_items, n_users, nnz)),
        "tables": {"also_bought": NeighbourArrays.of(also_bought.to_arrays())},
        "trending": trending,
        "als_user_factors": artifacts.StreamedArray(
            (n_users, config.als_factors),
            np.float32,
            stream_blocks(user_factors.orderBy("id"), factor_block),
        ),
        "als_item_factors": item_factor_array,
    }


def _repeat_parts(
    lines: DataFrame,
    customer_items: DataFrame,
    n_items: int,
    newest: Any,
    horizon_days: float,
    nnz: int,
) -> tuple[RepeatArrays, dict[str, Any]]:
    """The repeat model ("buy it again"), as the local engine fits it (``training.fit_repeat``)
    with the untuned default settings (``RepeatChoice()``: this engine's evaluation does not
    search them): each cell's facts aggregated by Spark and streamed in the order of
    ``user_items``; each item's sums collected and turned into its cycle and rate by
    ``RepeatBuyer.set_items``, the same arithmetic."""
    from pyspark.sql import functions as F

    repeat = RepeatChoice()
    now = F.unix_timestamp(F.lit(newest))
    purchases = (
        lines.where(F.col("row").isNotNull() & F.col("timestamp").isNotNull())
        .select("row", "item", ((now - F.unix_timestamp("timestamp")) / 86400.0).alias("age"))
        .distinct()
    )
    weight = F.exp(-F.col("age") / repeat.decay_days) if repeat.decay_days else F.lit(1.0)
    facts = (
        purchases.groupBy("row", "item")
        .agg(
            F.count("*").cast("double").alias("times"),
            F.sum(weight).alias("frequency"),
            F.max("age").alias("first_age"),
            F.min("age").alias("last_age"),
        )
        # Cells without a timestamp (none in a log that has them) count one purchase of age 0.
        .join(customer_items.select("row", "item"), ["row", "item"], "right")
        .fillna({"times": 1.0, "frequency": 1.0, "first_age": 0.0, "last_age": 0.0})
        .persist()
    )
    again = F.col("times") >= 2
    sums = (
        facts.groupBy("item")
        .agg(
            F.count("*").alias("buyers"),
            F.sum(F.when(again, 1.0).otherwise(0.0)).alias("rebuyers"),
            F.sum(F.when(again, F.col("first_age") - F.col("last_age")).otherwise(0.0)).alias(
                "spans"
            ),
            F.sum(F.when(again, F.col("times") - 1).otherwise(0.0)).alias("rebuys"),
        )
        .collect()
    )
    per_item = np.zeros((4, n_items))
    for row in sums:
        per_item[:, row["item"]] = (row["buyers"], row["rebuyers"], row["spans"], row["rebuys"])
    model = repeat.build(horizon_days)
    model.set_items(*per_item)
    ordered = facts.orderBy("row", "item")

    def column(name: str) -> artifacts.StreamedArray:
        return artifacts.StreamedArray(
            (nnz,), np.float32, stream_blocks(ordered.select(name), column_block(name, np.float32))
        )

    cell_facts = {name: column(name) for name in REPEAT_CELL_FIELDS}
    arrays, entry = repeat_parts(model, repeat, cell_facts, float(pd.Timestamp(newest).timestamp()))
    return arrays, {**entry, "tuned": False}


def _basket_parts(
    spark: SparkSession,
    orders: DataFrame,
    item_ids: IdMap,
    config: TrainConfig,
    current_manifest: dict[str, Any] | None,
) -> dict[str, Any]:
    """A log of guest baskets only (no customer ids), as the local engine trains one: the
    personal part scores a basket's items with the "bought together" neighbours, popularity
    (orders per item) ranks the rest, and no customer arrays or ALS exist. The evaluation holds
    out baskets (``spark.evaluation``, ``baskets=True``)."""
    from pyspark.sql import functions as F

    n_items = len(item_ids)
    numbered = _index(
        spark, orders.select(F.col("row").cast("string").alias("order_key")), "order_key", "basket"
    )
    baskets = orders.join(numbered, orders["row"].cast("string") == numbered["order_key"]).select(
        F.col("basket").alias("row"),
        "item",
        F.col("order_key").alias("order_id"),
        F.lit(None).cast("timestamp").alias("timestamp"),
    )
    choice, evaluation, notes, predictions = _choose(
        baskets, None, item_ids, config, current_manifest
    )
    popularity = item_totals(orders.withColumn("one", F.lit(1.0)), "one", n_items)
    numbered.unpersist()
    return {
        "choice": choice,
        "evaluation": evaluation,
        "notes": notes,
        "predictions": predictions,
        "components": {
            "trending": {
                "model": "popular",
                "basis": "orders",
                "half_life_days": choice.trend_half_life_days,
            }
        },
        "counts": {"customers": 0, "customer_item_pairs": 0},
        "user_ids": np.zeros(0, dtype="<U1"),
        "user_items": CsrArrays(
            np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32)
        ),
        "tables": {},
        "trending": popularity,
    }


def _choose(
    lines: DataFrame,
    users: DataFrame | None,
    item_ids: IdMap,
    config: TrainConfig,
    current_manifest: dict[str, Any] | None,
) -> tuple[BlendChoice, dict[str, Any], list[str], dict[str, NDArray[Any]]]:
    """The blend to ship, with the evaluation behind it (``spark.evaluation``), as the local
    engine's ``training.run`` chooses it; the untuned default with ``--no-evaluate`` or when
    the log is too small to hold anything out."""
    if not config.evaluate:
        return (
            default_choice(config.evaluation_settings),
            {},
            ["not evaluated (--no-evaluate); using the default blend"],
            {},
        )
    try:
        selection = select_and_evaluate(
            lines, users, item_ids.ids_, config.evaluation_settings, current_manifest
        )
    except DataError as exc:
        logger.warning("not evaluated (%s); using the default blend", exc)
        return default_choice(config.evaluation_settings), {}, [f"not evaluated: {exc}"], {}
    logger.info(
        "spark evaluation: %s, ndcg@%d %.4f",
        selection.choice.label(),
        config.eval_k,
        selection.evaluation["headline_value"],
    )
    return selection.choice, selection.evaluation, selection.notes, selection.predictions


def _check_supported(config: TrainConfig) -> None:
    if config.similarity != "cosine" or config.weighting != "binary":
        raise ConfigError(
            "similarity/weighting: the spark engine computes cosine on binary purchases "
            f"(got similarity={config.similarity}, weighting={config.weighting})"
        )
    if config.als_confidence == "bm25":
        raise ConfigError(
            "als_confidence: bm25 is not available on the spark engine (binary or log)"
        )
    if config.use_gpu:
        raise ConfigError("use_gpu: the spark engine trains on the cluster's CPUs")


def _with_activity_purchases(
    frame: DataFrame, database: Path | str, password: str | None
) -> DataFrame:
    """The log with the purchases recorded through the API appended, as the local engine
    appends them (``run_steps.recorded_purchases``, ``data.loading.recorded_lines``): each
    value cast to the log's own column type, so the cleaning that follows treats both alike."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import NumericType, StringType

    recorded = recorded_lines(recorded_purchases(database, password))
    if recorded is None:
        return frame
    table = pd.DataFrame(
        {
            "user_id": recorded["user_id"].astype(str),
            "item_id": recorded["item_id"].astype(str),
            "order_id": recorded["order_id"].astype(str),
            "seconds": recorded["timestamp"].astype("datetime64[s]").astype(np.int64),
        }
    )
    lines = frame.sparkSession.createDataFrame(table)
    columns = []
    for column in frame.schema.fields:
        kind = column.dataType
        if column.name in ("user_id", "item_id", "order_id"):
            value = F.col(column.name)
        elif column.name == "timestamp":
            value = (
                F.col("seconds")
                if isinstance(kind, NumericType)
                else F.date_format(F.timestamp_seconds("seconds"), "yyyy-MM-dd HH:mm:ss")
                if isinstance(kind, StringType)
                else F.timestamp_seconds("seconds")
            )
        elif column.name == "quantity":
            value = F.lit(1.0)
        else:
            value = F.lit(None)
        columns.append(value.cast(kind).alias(column.name))
    return frame.unionByName(lines.select(*columns))


def _index(spark: SparkSession, frame: DataFrame, column: str, index: str) -> DataFrame:
    """Distinct non-null values of ``column`` with ``index`` = their rank in string order
    (the order of the id arrays the server searches), numbered by ``zipWithIndex``."""
    from pyspark.sql.types import IntegerType, StringType, StructField, StructType

    distinct = frame.select(column).where(frame[column].isNotNull()).distinct().orderBy(column)
    numbered = distinct.rdd.zipWithIndex().map(lambda pair: (pair[0][0], int(pair[1])))
    schema = StructType(
        [StructField(column, StringType(), False), StructField(index, IntegerType(), False)]
    )
    return spark.createDataFrame(numbered, schema).persist()


def _order_items(lines: DataFrame, kept: DataFrame) -> DataFrame:
    """Distinct (order, item) pairs; a log without order ids groups a customer's lines by time,
    as ``data.matrix`` does."""
    from pyspark.sql import functions as F

    has_orders = kept.where(F.col("order_id").isNotNull()).limit(1).count() > 0
    if has_orders or "timestamp" not in kept.columns:
        key = F.col("order_id")
    else:
        key = F.concat_ws("|", F.col("user_id"), F.col("timestamp").cast("string"))
    return lines.select(key.alias("row"), "item").where(F.col("row").isNotNull()).distinct()


def _user_ids(users: DataFrame, n_users: int) -> artifacts.StreamedArray:
    from pyspark.sql import functions as F

    width = users.agg(F.max(F.length("user_id"))).first()[0] or 1
    return artifacts.StreamedArray(
        (n_users,),
        f"<U{width}",
        stream_blocks(users.orderBy("row").select("user_id"), column_block("user_id", np.str_)),
    )


def _user_items(
    customer_items: DataFrame, n_users: int, nnz: int
) -> dict[str, artifacts.StreamedArray]:
    """The customers x items purchase matrix as CSR arrays, streamed in customer order."""
    counts = stream_blocks(
        customer_items.groupBy("row").count().orderBy("row"), column_block("count", np.int64)
    )

    def indptr() -> Iterator[NDArray[np.int64]]:
        offset = 0
        yield np.zeros(1, dtype=np.int64)
        for block in counts:
            ends = offset + np.cumsum(block)
            offset = int(ends[-1])
            yield ends

    def ones() -> Iterator[NDArray[np.float32]]:
        for start in range(0, nnz, 1 << 22):
            yield np.ones(min(1 << 22, nnz - start), dtype=np.float32)

    indices = stream_blocks(
        customer_items.select("row", "item").orderBy("row", "item"), column_block("item", np.int32)
    )
    return {
        "indptr": artifacts.StreamedArray((n_users + 1,), np.int64, indptr()),
        "indices": artifacts.StreamedArray((nnz,), np.int32, indices),
        "data": artifacts.StreamedArray((nnz,), np.float32, ones()),
    }


def _catalog(lines: DataFrame, item_ids: IdMap, config: TrainConfig) -> dict[str, NDArray[Any]]:
    """Each item's most used name (ties: the latest seen) and latest price, computed by Spark;
    the override file is applied by the local engine's ``build_catalog``."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    columns = set(lines.columns)
    per_item = pd.DataFrame({"item_id": item_ids.ids_})
    if "name" in columns:
        named = (
            lines.where(F.col("name").isNotNull())
            .groupBy("item", "name")
            .agg(F.count("*").alias("n"), F.max("timestamp").alias("seen"))
        )
        best = Window.partitionBy("item").orderBy(
            F.col("n").desc(), F.col("seen").desc_nulls_last(), F.col("name").desc()
        )
        names = (
            named.withColumn("rank", F.row_number().over(best))
            .where("rank = 1")
            .select("item", "name")
            .collect()
        )
        column = np.full(len(item_ids), None, dtype=object)
        for row in names:
            column[row["item"]] = row["name"]
        per_item["name"] = column
    if "price" in columns:
        latest = Window.partitionBy("item").orderBy(F.col("timestamp").desc_nulls_last())
        prices = (
            lines.where(F.col("price").isNotNull())
            .withColumn("rank", F.row_number().over(latest))
            .where("rank = 1")
            .select("item", "price")
            .collect()
        )
        column = np.full(len(item_ids), np.nan)
        for row in prices:
            column[row["item"]] = row["price"]
        per_item["price"] = column
    override = read_catalog(config.catalog, config.encoding) if config.catalog else None
    return build_catalog(per_item, item_ids, override)
