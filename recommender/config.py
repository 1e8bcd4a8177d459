"""Configuration: the one place that reads configuration files and the environment.

Values are resolved in this order, later ones winning: the dataclass defaults, an optional
TOML file (``[train]`` / ``[serve]`` / ``[alerts]`` tables), ``RECO_*`` environment variables (for example
``RECO_MODELS_DIR``), then explicit overrides (command-line options, a test's mapping).
Every value is validated once, here, and a bad one raises ``ConfigError`` naming it.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from .errors import ConfigError

ENV_PREFIX = "RECO_"
SIMILARITIES = ("cosine", "bm25", "tfidf")
WEIGHTINGS = ("binary", "count", "log")
CONFIDENCES = ("binary", "log", "bm25")
FORMATS = ("auto", "csv", "parquet", "baskets")
ENGINES = ("local", "spark")
PRESETS = ("auto", "generic", "online_retail")
ALERT_RULES = ("back_in_stock", "price_drop", "new_for_you", "time_to_reorder")
FIELDS = ("user_id", "item_id", "timestamp", "quantity", "order_id", "price", "name")

# Codes that are not products in common shop exports (postage, fees, charity, adjustments).
# Short codes that a real catalog may use as product ids ("M", "D") are only excluded by the
# preset of the export that uses them (``data.loading.PRESET_EXCLUDED_ITEMS``).
DEFAULT_EXCLUDED_ITEMS = (
    "POST",
    "DOT",
    "C2",
    "CRUK",
    "PADS",
    "BANK CHARGES",
    "AMAZONFEE",
    "ADJUST",
    "ADJUST2",
)


@dataclass(frozen=True)
class AlsSettings:
    """What ALS is built from (``model_selection.build_als``): the same for evaluation and the
    model that ships."""

    factors: int
    regularization: float
    alpha: float
    iterations: int
    confidence: str
    random_state: int
    num_threads: int
    use_gpu: bool


@dataclass(frozen=True)
class NeighbourSettings:
    """The "customers who bought this also bought" kNN: implicit's similarity and its thresholds."""

    similarity: str
    neighbours: int
    min_support: int
    min_pair_support: int
    max_history: int
    num_threads: int


@dataclass(frozen=True)
class EvaluationSettings:
    """What choosing and measuring a model needs (``model_selection``), and nothing else."""

    eval_k: int
    random_state: int
    jobs: int
    test_days: float
    validation_periods: int
    max_eval_users: int
    ease_max_items: int
    trending_half_life_days: float
    als: AlsSettings
    neighbours: NeighbourSettings


@dataclass(frozen=True)
class GateSettings:
    """The promotion gate (``run_steps.gate_decision``): how much worse than the current model
    a new one may measure, at which cut-off, and whether ``--force`` overrides a refusal."""

    gate_tolerance: float
    eval_k: int
    force: bool


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs; see ``train.py --help`` for each option."""

    # A local path, or for the Spark engine any URI Spark reads (hdfs://..., s3a://...), kept as text.
    data: Path | str = Path("data/online_retail.parquet")
    models_dir: Path = Path("models")
    format: str = "auto"
    preset: str = "auto"
    columns: Mapping[str, str] = field(default_factory=dict)
    catalog: Path | None = None
    encoding: str = "utf-8"
    similarity: str = "cosine"
    neighbours: int = 50
    # Item-to-item counts only a customer's most recent items (0 = all): one heavy buyer
    # cannot make the pair count quadratic. Both engines apply it.
    max_history: int = 1000
    min_support: int = 3
    min_pair_support: int = 2
    weighting: str = "binary"
    excluded_items: tuple[str, ...] = DEFAULT_EXCLUDED_ITEMS
    item_pattern: str | None = None
    cancel_prefix: str = "C"
    drop_zero_price: bool = True
    future_tolerance_days: float = 1.0
    max_quantity: float = 100_000.0
    keep_versions: int = 5
    num_threads: int = 0
    als_factors: int = 64
    als_regularization: float = 0.05
    als_alpha: float = 1.0
    als_iterations: int = 15
    als_confidence: str = "binary"
    use_gpu: bool = False
    random_state: int = 42
    trending_half_life_days: float = 14.0
    # A SQLite file or a postgresql:// URL (``activity.ActivityStore``); the password may come apart.
    activity_db: Path | str = Path("var/activity.sqlite3")
    include_activity: Path | str | None = None
    activity_db_password: str | None = None
    evaluate: bool = True
    test_days: float = 30.0
    # Rolling validation periods of ``test_days`` before the test period (see ``protocols``).
    validation_periods: int = 3
    eval_k: int = 10
    max_eval_users: int = 5000
    ease_max_items: int = 8000
    # Each known customer's best candidates precomputed at training (0: none); see serving.service.
    personal_list_depth: int = 200
    # Only customers who bought within this many days of the log's last purchase get a list
    # (0: every customer); the others are scored per request (see cli's help).
    personal_list_days: int = 90
    jobs: int = 2
    gate_tolerance: float = 0.05
    force: bool = False
    promote: bool = True
    event_retention_days: float = 90.0
    server_url: str | None = None
    engine: str = "local"
    spark_master: str | None = None
    spark_driver_memory: str = "4g"
    spark_partitions: int = 0

    @property
    def als(self) -> AlsSettings:
        return AlsSettings(
            self.als_factors,
            self.als_regularization,
            self.als_alpha,
            self.als_iterations,
            self.als_confidence,
            self.random_state,
            self.num_threads,
            self.use_gpu,
        )

    @property
    def neighbour_settings(self) -> NeighbourSettings:
        return NeighbourSettings(
            self.similarity,
            self.neighbours,
            self.min_support,
            self.min_pair_support,
            self.max_history,
            self.num_threads,
        )

    @property
    def gate(self) -> GateSettings:
        return GateSettings(self.gate_tolerance, self.eval_k, self.force)

    @property
    def evaluation_settings(self) -> EvaluationSettings:
        return EvaluationSettings(
            self.eval_k,
            self.random_state,
            self.jobs,
            self.test_days,
            self.validation_periods,
            self.max_eval_users,
            self.ease_max_items,
            self.trending_half_life_days,
            self.als,
            self.neighbour_settings,
        )

    def validate(self) -> TrainConfig:
        _choice("engine", self.engine, ENGINES)
        _choice("format", self.format, FORMATS)
        _choice("preset", self.preset, PRESETS)
        _choice("similarity", self.similarity, SIMILARITIES)
        _choice("weighting", self.weighting, WEIGHTINGS)
        _choice("als_confidence", self.als_confidence, CONFIDENCES)
        for name in ("als_regularization", "als_alpha", "trending_half_life_days", "test_days"):
            _positive(name, getattr(self, name))
        if not 0 <= self.gate_tolerance < 1:
            raise ConfigError(f"gate_tolerance: must be in [0, 1), got {self.gate_tolerance}")
        for name in (
            "neighbours",
            "min_support",
            "min_pair_support",
            "keep_versions",
            "als_factors",
            "als_iterations",
            "eval_k",
            "validation_periods",
            "max_eval_users",
            "ease_max_items",
            "jobs",
        ):
            _at_least(name, getattr(self, name), 1)
        for name in (
            "num_threads",
            "max_history",
            "spark_partitions",
            "personal_list_depth",
            "personal_list_days",
        ):
            _at_least(name, getattr(self, name), 0)
        if self.neighbours > 1000:
            raise ConfigError(f"neighbours: at most 1000, got {self.neighbours}")
        if self.future_tolerance_days < 0:
            raise ConfigError("future_tolerance_days: must not be negative")
        for key, column in self.columns.items():
            if key not in FIELDS:
                raise ConfigError(f"columns: unknown field {key!r} (known: {', '.join(FIELDS)})")
            if not isinstance(column, str) or not column:
                raise ConfigError(f"columns.{key}: must be a column name")
        return self


@dataclass(frozen=True)
class ServeConfig:
    """Settings of the HTTP server."""

    models_dir: Path = Path("models")
    host: str = "127.0.0.1"
    port: int = 8000
    default_k: int = 10
    max_k: int = 100
    max_id_length: int = 128
    max_items: int = 100
    max_events: int = 1000
    max_body_bytes: int = 1 << 20
    reload_interval: float = 2.0
    workers: int = field(default_factory=lambda: max(2, os.cpu_count() or 1))
    # Sync workers (1 thread each): measured against 4 gthread threads, p99 at 32 connections
    # is half or less at about the same throughput (docs/performance.md). Behind a buffering proxy.
    threads: int = 1
    # A SQLite file or a postgresql:// URL (``activity.ActivityStore``); the password may come apart.
    activity_db: Path | str = Path("var/activity.sqlite3")
    activity_db_password: str | None = None
    history_limit: int = 200
    history_days: float = 90.0
    activity_half_life_hours: float = 72.0
    customers_file: Path | None = None
    request_log: str | None = "-"
    admin_token: str | None = None
    # Every recommendation response carries a signed recommendation_id, and impressions are
    # counted (docs/performance-tracking.md); false turns both off.
    tracing: bool = True
    # The key that signs recommendation ids; the same on every server. Unset: one is chosen
    # once and kept in the activity store, which the servers that share it then all use.
    trace_secret: str | None = None
    # An event citing a recommendation_id older than this is stored but not attributed.
    attribution_days: float = 7.0
    # Each worker writes its impression counts this often (and at exit): a killed worker
    # loses at most this many seconds of them.
    impressions_flush_seconds: float = 5.0
    # How often a worker rereads the experiments from the store (a PUT or stop through any
    # server holds on every one within this).
    experiments_refresh_seconds: float = 2.0

    def validate(self) -> ServeConfig:
        _at_least("port", self.port, 1)
        if self.port > 65535:
            raise ConfigError(f"port: at most 65535, got {self.port}")
        for name in (
            "default_k",
            "max_k",
            "max_id_length",
            "workers",
            "threads",
            "max_items",
            "max_events",
            "max_body_bytes",
            "history_limit",
        ):
            _at_least(name, getattr(self, name), 1)
        if self.admin_token is not None and len(self.admin_token) < 16:
            raise ConfigError("admin_token: must be at least 16 characters (use a random string)")
        for name in (
            "history_days",
            "activity_half_life_hours",
            "attribution_days",
            "impressions_flush_seconds",
            "experiments_refresh_seconds",
        ):
            _positive(name, getattr(self, name))
        if self.trace_secret is not None and len(self.trace_secret) < 16:
            raise ConfigError("trace_secret: must be at least 16 characters (use a random string)")

        if self.default_k > self.max_k:
            raise ConfigError("default_k: must not exceed max_k")
        if self.reload_interval < 0:
            raise ConfigError("reload_interval: must not be negative")
        return self


@dataclass(frozen=True)
class AlertsConfig:
    """E-mail alerts (``python -m recommender alerts``; ``[alerts]`` in the config file): the
    rules, which ``GET /v1/users/<id>/alerts`` applies too, and the delivery."""

    SECTION: ClassVar[str] = "alerts"

    # Which alerts to find: any of back_in_stock, price_drop, new_for_you, time_to_reorder
    # (opt-in: a reminder when a customer's usual interval for an item they rebuy has passed).
    rules: tuple[str, ...] = ("back_in_stock", "price_drop", "new_for_you")
    # Rules: price dropped by at least this fraction since the customer wished for or viewed it.
    price_drop: float = 0.10
    # Viewed or carted items count as interest for this many days (wish-list items always do).
    interest_days: float = 30.0
    # "New for you": items first sold within this many days of the newest item's first sale ...
    new_days: float = 30.0
    # ... that are among the customer's personal top this many.
    new_top: int = 20
    # "Time to reorder": at most this many reminders per customer (the most bought first) ...
    reorder_top: int = 3
    # ... for items not rebought although their usual interval passed, by at most this many
    # intervals (longer, and they probably buy it elsewhere now).
    reorder_max_overdue: float = 2.0
    # Delivery: at most one digest per customer per this many days.
    cap_days: float = 7.0
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_user: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    sender: str = "shop@localhost"
    shop_name: str = "Our shop"
    # {user_id} is replaced by the customer's id (URL-quoted).
    unsubscribe_url: str = "https://shop.example/unsubscribe?customer={user_id}"

    def validate(self) -> AlertsConfig:
        for rule in self.rules:
            _choice("rules", rule, ALERT_RULES)
        if not 0 < self.price_drop < 1:
            raise ConfigError(
                f"price_drop: must be a fraction between 0 and 1, got {self.price_drop}"
            )
        for name in ("interest_days", "new_days"):
            _positive(name, getattr(self, name))
        if self.cap_days < 0:
            raise ConfigError(f"cap_days: must not be negative, got {self.cap_days}")
        _at_least("new_top", self.new_top, 1)
        _at_least("reorder_top", self.reorder_top, 1)
        _positive("reorder_max_overdue", self.reorder_max_overdue)
        _at_least("smtp_port", self.smtp_port, 1)
        if "{user_id}" not in self.unsubscribe_url:
            raise ConfigError("unsubscribe_url: must contain {user_id}")
        if "@" not in self.sender:
            raise ConfigError(f"sender: not an e-mail address: {self.sender!r}")
        return self


ConfigT = TypeVar("ConfigT", TrainConfig, ServeConfig, AlertsConfig)


def load_config(
    cls: type[ConfigT],
    config_file: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> ConfigT:
    """Build a validated config: defaults, then file, then ``RECO_*`` environment, then overrides.

    Parameters
    ----------
    cls : TrainConfig, ServeConfig or AlertsConfig
    config_file : path of a TOML file, optional; ``RECO_CONFIG`` names one when this is None.
    overrides : values that win over everything (command-line options); None values are ignored.
    environ : the environment to read (``os.environ`` by default; tests pass their own).

    Raises
    ------
    ConfigError
        A file that cannot be read, an unknown key, or a value of the wrong type or range.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    config_file = config_file or environ.get(ENV_PREFIX + "CONFIG")
    section = getattr(cls, "SECTION", None) or ("train" if cls is TrainConfig else "serve")
    if config_file:
        values.update(_read_toml(Path(config_file), section))
    names = {f.name for f in dataclasses.fields(cls)}
    for name in names:
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is not None and raw != "":
            values[name] = raw
    for name, value in (overrides or {}).items():
        if value is not None:
            values[name] = value
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"unknown setting {sorted(unknown)[0]!r}")
    kwargs = {
        f.name: _coerce(f, values[f.name]) for f in dataclasses.fields(cls) if f.name in values
    }
    return cls(**kwargs).validate()


def load_experiments(
    config_file: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, dict[str, Any]]:
    """The ``[experiments.<name>]`` tables of the config file (``RECO_CONFIG`` when None):
    experiments a server starts with unless the store already has one of that name
    (``experiments.parse`` checks each)."""
    environ = os.environ if environ is None else environ
    config_file = config_file or environ.get(ENV_PREFIX + "CONFIG")
    if not config_file:
        return {}
    table = _read_toml(Path(config_file), "experiments")
    for name, definition in table.items():
        if not isinstance(definition, dict):
            raise ConfigError(f"{config_file}: [experiments.{name}] must be a table")
    return table


def parse_columns(spec: str | Mapping[str, str] | None) -> dict[str, str]:
    """Parse ``user_id=CustomerID,item_id=StockCode`` into a field-to-column mapping."""
    if spec is None or spec == "":
        return {}
    if isinstance(spec, Mapping):
        return dict(spec)
    mapping = {}
    for part in str(spec).split(","):
        key, sep, column = part.partition("=")
        if not sep or not key.strip() or not column.strip():
            raise ConfigError(f"columns: expected FIELD=COLUMN, got {part!r}")
        mapping[key.strip()] = column.strip()
    return mapping


def _read_toml(path: Path, section: str) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from None
    table = document.get(section, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [{section}] must be a table")
    return table


def _coerce(spec: dataclasses.Field[Any], value: Any) -> Any:
    name, kind = spec.name, str(spec.type)
    if name == "columns":
        return parse_columns(value)
    try:
        if kind.startswith("tuple"):
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(str(item).strip() for item in items if str(item).strip())
        if kind.startswith("Path"):
            if isinstance(value, str) and "://" in value:
                return value  # a URI (Spark's data, a database URL): Path would fold its "//"
            return None if value in ("", None) else Path(value)
        if kind == "bool":
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(value)
                return lowered in ("1", "true", "yes", "on")
            return bool(value)
        if kind == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if kind == "float":
            return float(value)
        if kind.startswith("str | None"):
            return None if value in ("", None) else str(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: invalid value {value!r} (expected {kind})") from None


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}: must be one of {', '.join(allowed)}, got {value!r}")


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{name}: must be positive, got {value}")


def _at_least(name: str, value: int, minimum: int) -> None:
    if value < minimum:
        raise ConfigError(f"{name}: must be at least {minimum}, got {value}")
