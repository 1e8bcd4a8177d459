"""Reading and cleaning a purchase log with Spark SQL, by the rules of ``data.cleaning``.

The rules, their order and their parameters come from ``recommender.data.cleaning``
(``STEPS``, ``CleaningRules``); this module only says how each is expressed in Spark SQL.
Every row gets the reason of the first rule that removes it (or none), in one pass plus one
shuffle per rule that compares rows (duplicates, returns netted against purchases), and
the report counts the reasons: the same report, field for field, as the pandas engine's.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import TrainConfig
from ..data.cleaning import STEPS, CleaningRules
from ..data.loading import MISSING_WORDS, PARQUET_MAGIC, resolve_columns
from ..errors import ConfigError, DataError
from .session import first_line

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

logger = logging.getLogger(__name__)

_ID_FIELDS = ("user_id", "item_id", "order_id", "name")
# Time formats tried after ISO 8601, in order (month first, as pandas reads "12/1/2010 8:26").
_TIME_FORMATS = ("M/d/yyyy H:mm", "M/d/yyyy H:mm:ss", "M/d/yyyy", "yyyy/M/d H:mm:ss", "yyyy/M/d")


def read_log(spark: SparkSession, uri: str, config: TrainConfig) -> tuple[DataFrame, str, int]:
    """The log with canonical column names, ids as trimmed strings (missing = NULL).

    Returns the frame, the preset that matched and the number of repeated header lines
    removed (counted as rejected, as in pandas).
    """
    from pyspark.sql import functions as F

    fmt = config.format
    if fmt == "baskets":
        raise ConfigError("format: the spark engine reads CSV or Parquet logs, not baskets files")
    if "://" not in uri:  # a local path (data_uri has checked that it exists)
        if fmt == "auto":
            fmt = "parquet" if Path(uri).is_dir() or _head(Path(uri)) == PARQUET_MAGIC else "csv"
    elif fmt == "auto":
        fmt = (
            "parquet"
            if uri.rstrip("/").endswith((".parquet", ".pq")) or uri.endswith("/")
            else "csv"
        )
    try:
        if fmt == "parquet":
            raw = spark.read.parquet(uri)
        else:
            first = spark.read.text(uri).first()
            sample = first[0] if first else ""
            separator = max([",", ";", "\t", "|"], key=sample.count)
            raw = spark.read.csv(
                uri,
                header=True,
                sep=separator,
                inferSchema=False,
                encoding=config.encoding,
                mode="PERMISSIVE",
            )
        columns = raw.columns
    except Exception as exc:  # AnalysisException and JVM errors share no base class
        raise DataError(f"{uri}: cannot read as {fmt}: {first_line(exc)}") from None
    preset, mapping = resolve_columns(list(columns), config.preset, config.columns, Path(uri))
    frame = raw.select(*[F.col(f"`{column}`").alias(field) for field, column in mapping.items()])
    repeated = 0
    if fmt == "csv":
        header_again = None
        for field, column in mapping.items():
            same = F.coalesce(F.trim(F.col(field)) == F.lit(column), F.lit(False))
            header_again = same if header_again is None else header_again & same
        flagged = frame.withColumn("_header", header_again)
        repeated = flagged.filter("_header").count()
        if repeated:
            frame = flagged.filter(~F.col("_header")).drop("_header")
    return _normalise_ids(frame), preset, repeated


def clean(
    frame: DataFrame,
    rules: CleaningRules,
    source: str,
    forgotten: Collection[str] = (),
    now: dt.datetime | None = None,
    repeated_headers: int = 0,
) -> tuple[DataFrame, dict[str, Any]]:
    """Apply ``rules`` in the order of ``STEPS``; return the kept rows and the cleaning report.

    ``forgotten`` customers' purchases are dropped last (as the local engine does);
    ``repeated_headers`` are the header lines ``read_log`` removed, reported as rejected.
    The kept rows are persisted (memory, then disk): every model reads them.

    Raises
    ------
    DataError
        Nothing is left; the message names ``source`` and the main reasons.

    Long because each step is a few Spark expressions applied in ``STEPS`` order and counted
    as it goes.
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    columns = set(frame.columns)
    for column in ("user_id", "order_id"):
        if column not in columns:
            frame = frame.withColumn(column, F.lit(None).cast("string"))
    if "timestamp" in columns:
        frame = frame.withColumn("timestamp", _timestamps(frame, "timestamp"))
    frame = frame.withColumn(
        "quantity", F.col("quantity").cast("double") if "quantity" in columns else F.lit(1.0)
    )
    if "price" in columns:
        frame = frame.withColumn("price", F.col("price").cast("double"))
    canonical = frame.columns
    limit = (now or dt.datetime.now(dt.UTC).replace(tzinfo=None)) + dt.timedelta(
        days=rules.future_tolerance_days
    )
    context = _Context(
        rules, F.lit(limit.strftime("%Y-%m-%d %H:%M:%S.%f")).cast("timestamp"), columns
    )

    rules_in_order = [(step.reason, _SPARK_PREDICATES[step.reason](context)) for step in STEPS]
    if forgotten:
        rules_in_order.append(("forgotten_customer", F.col("user_id").isin(list(forgotten))))
    tagged = frame.withColumn("_reason", F.lit(None).cast("string"))
    for reason, condition in rules_in_order:
        if condition is not None:
            tagged = tagged.withColumn(
                "_reason",
                F.when(
                    context.alive() & F.coalesce(condition, F.lit(False)), F.lit(reason)
                ).otherwise(F.col("_reason")),
            )
    tagged = tagged.persist(StorageLevel.MEMORY_AND_DISK)
    counts = {row["_reason"]: row["count"] for row in tagged.groupBy("_reason").count().collect()}
    guests = tagged.filter(F.col("_reason").isNull() & F.col("user_id").isNull()).count()
    buckets = {step.reason: step.bucket for step in STEPS}
    buckets["forgotten_customer"] = "dropped"
    report: dict[str, Any] = {
        "rows_read": sum(counts.values()) + repeated_headers,
        "rows_kept": counts.get(None, 0),
        "rejected": {"repeated_header": repeated_headers} if repeated_headers else {},
        "dropped": {},
        "guest_rows_kept_for_baskets_only": guests,
    }
    for reason in [*buckets]:
        if counts.get(reason):
            report[buckets[reason]][reason] = counts[reason]
    kept = (
        tagged.filter(F.col("_reason").isNull())
        .select(*canonical)
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    kept.count()
    tagged.unpersist()
    logger.info(
        "cleaning %s on spark: %d rows read, %d kept, rejected %s, dropped %s",
        source,
        report["rows_read"],
        report["rows_kept"],
        report["rejected"],
        report["dropped"],
    )
    if not report["rows_kept"]:
        reasons = {**report["rejected"], **report["dropped"]}
        top = ", ".join(f"{k}={v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])[:3])
        raise DataError(
            f"{source}: no purchases left after cleaning ({report['rows_read']} rows read; {top})"
        )
    return kept, report


class _Context:
    """What a rule's Spark expression may refer to."""

    def __init__(self, rules: CleaningRules, limit: Column, columns: set[str]) -> None:
        self.rules, self.limit, self.columns = rules, limit, columns

    def alive(self) -> Column:
        from pyspark.sql import functions as F

        return F.col("_reason").isNull()


def _is_return(ctx: _Context) -> Column:
    from pyspark.sql import functions as F

    condition = F.col("quantity") < 0
    if ctx.rules.cancel_prefix:
        condition = condition | F.coalesce(
            F.col("order_id").startswith(ctx.rules.cancel_prefix), F.lit(False)
        )
    return condition


def _duplicate(ctx: _Context) -> Column:
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    keys = [
        F.col(c)
        for c in ("item_id", "user_id", "order_id", "timestamp", "quantity", "price", "name")
        if c in ctx.columns or c in ("user_id", "order_id", "quantity")
    ]
    window = Window.partitionBy(ctx.alive(), *keys).orderBy(F.lit(1))
    return F.row_number().over(window) > 1


def _excluded(ctx: _Context) -> Column:
    from pyspark.sql import functions as F

    item = F.col("item_id")
    condition = (
        item.isin(list(ctx.rules.excluded_items)) if ctx.rules.excluded_items else F.lit(False)
    )
    if ctx.rules.item_pattern:
        condition = condition | ~F.coalesce(
            item.rlike(f"^(?:{ctx.rules.item_pattern})$"), F.lit(False)
        )
    return condition


def _netted_out(ctx: _Context) -> Column:
    """Purchases whose customer returned at least as many of the item in all (see pandas' rule)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    known = ctx.alive() & F.col("user_id").isNotNull()
    is_return = _is_return(ctx)
    window = Window.partitionBy("user_id", "item_id")
    returned = F.sum(F.when(known & is_return, F.abs(F.col("quantity")))).over(window)
    bought = F.sum(F.when(known & ~is_return, F.col("quantity"))).over(window)
    return known & ~is_return & returned.isNotNull() & (returned >= bought)


Predicate = Callable[[_Context], "Column | None"]
_SPARK_PREDICATES: dict[str, Predicate] = {
    "missing_item": lambda c: _col("item_id").isNull(),
    "unparseable_timestamp": lambda c: (
        _col("timestamp").isNull() if "timestamp" in c.columns else None
    ),
    "future_timestamp": lambda c: _col("timestamp") > c.limit if "timestamp" in c.columns else None,
    "unparseable_quantity": lambda c: _col("quantity").isNull() | _not_finite("quantity"),
    "missing_user_and_order": lambda c: _col("user_id").isNull() & _col("order_id").isNull(),
    "duplicate": _duplicate,
    "excluded_item": _excluded,
    "netted_out_by_return": _netted_out,
    "return_or_cancellation": _is_return,
    "non_positive_quantity": lambda c: _col("quantity") <= 0,
    "implausible_quantity": lambda c: _col("quantity") > c.rules.max_quantity,
    "zero_or_negative_price": lambda c: (
        (_col("price") <= 0) if c.rules.drop_zero_price and "price" in c.columns else None
    ),
}
if set(_SPARK_PREDICATES) != {step.reason for step in STEPS}:
    raise ImportError(
        "recommender.spark.cleaning does not implement every rule of data.cleaning.STEPS"
    )


def _col(name: str) -> Column:
    from pyspark.sql import functions as F

    return F.col(name)


def _not_finite(name: str) -> Column:
    from pyspark.sql import functions as F

    value = F.col(name)
    return F.isnan(value) | (value == float("inf")) | (value == float("-inf"))


def _normalise_ids(frame: DataFrame) -> DataFrame:
    """Ids (and names) as pandas' ``to_id_strings`` makes them: trimmed text, the missing
    words as NULL, and integer ids stored as floats ("17850.0") without their ``.0``."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import DoubleType, FloatType

    present = [field for field in _ID_FIELDS if field in frame.columns]
    floats = [f for f in present if isinstance(frame.schema[f].dataType, (DoubleType, FloatType))]
    if floats:
        fractional = (
            frame.agg(
                *[
                    F.sum(
                        F.when(
                            F.col(f).isNotNull()
                            & ~F.isnan(F.col(f))
                            & (F.col(f) != F.floor(F.col(f))),
                            1,
                        ).otherwise(0)
                    ).alias(f)
                    for f in floats
                ]
            )
            .first()
            .asDict()
        )
        for field in floats:
            value = F.when(F.isnan(F.col(field)), None).otherwise(F.col(field))
            frame = frame.withColumn(field, value.cast("long") if not fractional[field] else value)
    texts = {f: F.regexp_replace(F.col(f).cast("string"), r"^\s+|\s+$", "") for f in present}
    frame = frame.select(*[texts[f].alias(f) if f in texts else F.col(f) for f in frame.columns])
    frame = frame.select(
        *[
            F.when((F.col(f) == "") | F.lower(F.col(f)).isin(list(MISSING_WORDS)), None)
            .otherwise(F.col(f))
            .alias(f)
            if f in texts
            else F.col(f)
            for f in frame.columns
        ]
    )
    checks = []
    for field in present:
        checks.append(
            F.sum(
                F.when(F.col(field).isNotNull() & ~F.col(field).rlike(r"^\d+\.0$"), 1).otherwise(0)
            ).alias(f"{field}__not_float_shaped")
        )
        checks.append(F.count(F.col(field)).alias(f"{field}__present"))
    stats = frame.agg(*checks).first().asDict()
    for field in present:
        if stats[f"{field}__present"] and not stats[f"{field}__not_float_shaped"]:
            frame = frame.withColumn(field, F.regexp_replace(F.col(field), r"\.0$", ""))
    return frame


def _timestamps(frame: DataFrame, name: str) -> Column:
    """Times as UTC timestamps (NULL when unparseable): typed columns as they are, numbers as
    epoch seconds, milliseconds, microseconds or nanoseconds by magnitude (Parquet from pandas
    holds nanoseconds), text as ISO 8601 or one of ``_TIME_FORMATS``."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import DateType, NumericType, StringType, TimestampNTZType, TimestampType

    value = F.col(name)
    kind = frame.schema[name].dataType
    if isinstance(kind, (TimestampType, TimestampNTZType, DateType)):
        return value.cast("timestamp")
    if isinstance(kind, NumericType):
        magnitude = F.abs(value)
        micros = (
            F.when(magnitude >= 1e17, value / 1000)
            .when(magnitude >= 1e14, value)
            .when(magnitude >= 1e11, value * 1000)
            .otherwise(value * 1_000_000)
        )
        return F.timestamp_micros(F.floor(micros).cast("long"))
    if not isinstance(kind, StringType):
        value = value.cast("string")
    parsed = [F.try_to_timestamp(value)] + [
        F.try_to_timestamp(value, F.lit(fmt)) for fmt in _TIME_FORMATS
    ]
    return F.coalesce(*parsed)


def _head(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(4)
