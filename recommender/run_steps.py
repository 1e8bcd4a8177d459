"""The steps every training run shares, whichever engine (local or Spark) runs it: the
cleaning rules of a run, the customers to leave out (forgotten), the purchases recorded
through the API, the catalog's price history, the data signature the nightly job compares,
the promotion gate, and saving (and promoting) the version with its report.

Both engines import this module; it imports neither engine, and no pandas.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from . import artifacts, report
from .activity import ActivityStore, Event, describe
from .algorithms.repeat import RepeatBuyer
from .bundle import ModelBundle, RepeatArrays
from .config import GateSettings, TrainConfig
from .data.cleaning import CleaningRules
from .data.loading import PRESET_EXCLUDED_ITEMS, PRESET_ITEM_PATTERNS, fingerprint
from .errors import DataError, GateRefusedError, StoreError
from .model_selection import RepeatChoice

logger = logging.getLogger(__name__)


def repeat_parts(
    model: RepeatBuyer, repeat: RepeatChoice, facts: dict[str, Any], as_of: float
) -> tuple[RepeatArrays, dict[str, Any]]:
    """The repeat model as a version holds it, whichever engine fitted it: each cell's
    ``facts`` by ``bundle.REPEAT_CELL_FIELDS`` name (decayed frequency, orders, first and last
    age, in the order of ``user_items``; arrays, or streamed ones) and the model's per-item
    state, with the manifest entry the server reads (``as_of``: the log's last purchase, the
    moment the ages count back from)."""
    arrays = RepeatArrays(
        **facts,
        cycle_days=model.cycle_days_,
        rate=model.rate_,
        shop_rate=np.array([model.shop_rate_]),
    )
    entry = {
        "model": "repeat",
        **model.get_params(),
        "mix": repeat.mix,
        "exclude_purchased": repeat.exclude_purchased,
        "as_of": as_of,
    }
    return arrays, entry


def save_version(
    config: TrainConfig,
    bundle: ModelBundle,
    evaluation: dict[str, Any],
    current_version: str | None,
    started: float,
) -> Path:
    """The end of a training run, whichever engine trained it: write the bundle with its
    report, promote it unless the gate refused it or ``--no-promote`` was given.

    The bundle's manifest (``bundle.build_manifest``) carries the run's ``gate``, ``notes``,
    ``cleaning`` and ``data``; the training time is added here.
    """
    manifest = bundle.manifest
    gate, notes = manifest["gate"], manifest["notes"]
    manifest["training_seconds"] = round(time.perf_counter() - started, 3)
    summary = {
        "created_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "data": manifest["data"]["path"],
        "gate": gate["status"] + (f": {gate['reason']}" if gate.get("reason") else ""),
        "notes": notes,
        "cleaning": manifest["cleaning"],
        "version": "(this run)",
    }
    documents = {
        "evaluation.json": json.dumps(evaluation, indent=2, sort_keys=False).encode(),
        "report.html": report.render(evaluation, summary),
    }
    if not config.promote:
        gate = {**gate, "status": "not promoted", "reason": "--no-promote (evaluation run)"}
    promote_it = gate["status"] not in ("refused", "not promoted")
    path = artifacts.save(
        config.models_dir, bundle.arrays(), manifest, config.keep_versions, documents, promote_it
    )
    logger.info(
        "training finished in %.1fs: %s (%s)", time.perf_counter() - started, path, gate["status"]
    )
    if gate["status"] == "refused":
        raise GateRefusedError(
            f"model {path.name} not promoted: {gate['reason']}; {current_version} keeps serving "
            f"(see {path / 'report.html'}; --force overrides)"
        )
    return path


def cleaning_rules(config: TrainConfig, preset: str) -> CleaningRules:
    """The cleaning rules of a run: the configured ones plus those of the log's preset."""
    return CleaningRules(
        excluded_items=config.excluded_items + PRESET_EXCLUDED_ITEMS.get(preset, ()),
        item_pattern=config.item_pattern or PRESET_ITEM_PATTERNS.get(preset),
        cancel_prefix=config.cancel_prefix,
        drop_zero_price=config.drop_zero_price,
        future_tolerance_days=config.future_tolerance_days,
        max_quantity=config.max_quantity,
    )


def record_catalog(
    database: Path | str,
    states: Iterable[tuple[str, float | None, bool | None]],
    password: str | None = None,
) -> None:
    """A catalog file's prices and availability (``data.catalog.catalog_states``), recorded
    in the activity store where they differ from the last recorded state: the history the
    e-mail alerts compare against."""
    store = ActivityStore(database, password=password)
    try:
        changed = store.record_catalog(states)
    except StoreError as exc:
        raise DataError(f"cannot record the catalog's prices: {exc}") from None
    finally:
        store.close()
    logger.info(
        "catalog: %d price or availability changes recorded in %s", changed, describe(database)
    )


def forgotten_customers(config: TrainConfig) -> set[str]:
    """Customers erased through ``DELETE /v1/users/<id>``: their purchases never reach a model.
    Read from the activity store the server writes (and the one given to --include-activity)."""
    forgotten: set[str] = set()
    for database in {str(config.activity_db), str(config.include_activity or "")} - {""}:
        store = ActivityStore(database, password=config.activity_db_password)
        try:
            if store.exists():
                forgotten.update(store.suppressed("forgotten"))
        except StoreError as exc:
            raise DataError(f"cannot read the suppression list: {exc}") from None
        finally:
            store.close()
    return forgotten


def data_signature(config: TrainConfig) -> dict[str, Any]:
    """What the training input is: the log's SHA-256 and the activity store's purchases, so the
    nightly job can tell that nothing changed."""
    # A log on HDFS or S3, or a directory of parts (Spark engine), has no one file to hash: None,
    # which the nightly job reads as "cannot tell, train".
    local = Path(config.data) if "://" not in str(config.data) else None
    signature: dict[str, Any] = {
        "log_sha256": fingerprint(local) if local and local.is_file() else None
    }
    if config.include_activity:
        store = ActivityStore(config.include_activity, password=config.activity_db_password)
        try:
            count, latest = store.purchase_summary() if store.exists() else (0, None)
        except StoreError as exc:
            raise DataError(f"include_activity: {exc}") from None
        finally:
            store.close()
        signature["activity_purchases"] = count
        signature["activity_latest"] = latest
    return signature


def gate_decision(
    evaluation: dict[str, Any],
    current_version: str | None,
    current_has_blend: bool,
    gate: GateSettings,
) -> dict[str, Any]:
    """Promote only if the headline metric is not worse than the current model's (same test period)."""
    if current_version is None:
        return {"status": "promoted", "reason": "first model"}
    new, old = evaluation.get("headline_value"), evaluation.get("current_headline_value")
    if new is None or old is None:
        reason = "not evaluated" if new is None else "the current model has no comparable blend"
        return {"status": "promoted", "reason": f"gate not applied: {reason}"}
    floor = old * (1 - gate.gate_tolerance)
    detail = {
        "metric": f"ndcg@{gate.eval_k}",
        "new": round(new, 5),
        "current": round(old, 5),
        "current_version": current_version,
        "tolerance": gate.gate_tolerance,
    }
    if new >= floor:
        return {"status": "promoted", **detail}
    reason = (
        f"ndcg@{gate.eval_k} {new:.4f} is more than {gate.gate_tolerance:.0%} below the current "
        f"model's {old:.4f} on the same test period"
    )
    if gate.force:
        logger.warning("promotion forced (--force) although %s", reason)
        return {"status": "forced", "reason": reason, **detail}
    return {"status": "refused", "reason": reason, **detail}


def headline(evaluation: dict[str, Any]) -> dict[str, Any]:
    models = evaluation.get("models", {})
    return {
        "headline": evaluation.get("headline"),
        "value": evaluation.get("headline_value"),
        "k": evaluation.get("k"),
        "ci95": evaluation.get("headline_ci95"),
        "shipped": evaluation.get("shipped"),
        "protocol": {
            key: protocol[key] for key in ("name", "reason", "also_measured") if key in protocol
        }
        if (protocol := evaluation.get("protocol"))
        else None,
        "ndcg_by_model": {name: round(values["ndcg"], 5) for name, values in models.items()},
        "repeats": {
            "question": "everything bought next, rebuys included",
            "default_exclude_purchased": repeats.get("validation", {}).get(
                "default_exclude_purchased"
            ),
            "ndcg_by_list": {
                name: round(values["ndcg"], 5) for name, values in repeats["models"].items()
            },
        }
        if (repeats := evaluation.get("repeats"))
        else None,
    }


def recorded_purchases(database: Path | str, password: str | None = None) -> list[Event]:
    """The purchases recorded through the API (``POST /v1/events``), oldest first, for either
    engine to append to its log (``data.loading.recorded_lines`` gives them as log lines)."""
    store = ActivityStore(database, password=password)
    try:
        if not store.exists():
            raise DataError(f"include_activity: {store.where}: activity database not found")
        events = store.purchases()
    except StoreError as exc:
        raise DataError(f"include_activity: cannot read purchases: {exc}") from None
    finally:
        store.close()
    if events:
        logger.info(
            "adding %d purchases from the activity store %s", len(events), describe(database)
        )
    return events


def jsonable(values: dict[str, Any]) -> dict[str, Any]:
    """Settings as the manifest keeps them: no password, a database URL without its own."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key.endswith("password"):
            continue
        if key in ("activity_db", "include_activity") and value is not None:
            value = describe(value)
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, dict) or hasattr(value, "items"):
            value = dict(value)
        out[key] = value
    return out
