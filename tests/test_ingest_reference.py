"""Ingest, cleaning and the tables built from them, pinned: a digest of every cleaning count
and every array (ids, matrices, purchase ages, catalog) on the shipped logs and the test logs,
recorded in ``tests/data/ingest_reference.json``. Work on the cost of ingest must leave them
identical; a deliberate change of behaviour rewrites the file
(``python tests/test_ingest_reference.py --write``) and says why in its commit."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recommender.config import TrainConfig, load_config  # noqa: E402
from recommender.data.catalog import build_catalog  # noqa: E402
from recommender.data.matrix import build_interactions  # noqa: E402
from recommender.errors import DataError  # noqa: E402
from recommender.training import load_purchases  # noqa: E402

REFERENCE = ROOT / "tests" / "data" / "ingest_reference.json"
# Cleaning judges future dates against a fixed moment, so the digests do not age.
NOW = pd.Timestamp("2026-01-01")
LOGS: dict[str, dict[str, Any]] = {
    "online_retail.parquet": {"data": ROOT / "data" / "online_retail.parquet"},
    "groceries.csv (baskets)": {"data": ROOT / "data" / "groceries.csv", "format": "baskets"},
    "messy_retail.csv": {"data": ROOT / "tests" / "data" / "messy_retail.csv"},
    # The shipped log written as CSV by pandas (float customer ids, ISO times): the CSV path at size.
    "online_retail.csv (the parquet as CSV)": {"csv_of": ROOT / "data" / "online_retail.parquet"},
    **{
        f"broken/{path.name}": {"data": path}
        for path in sorted((ROOT / "tests" / "data" / "broken").iterdir())
    },
}


def _digest(array: Any) -> str:
    array = np.asarray(array)
    if array.dtype.kind in "OU":
        payload = "\x1f".join(
            "<NA>" if value is None or value is pd.NA or value != value else str(value)
            for value in array.tolist()
        ).encode()
    else:
        payload = np.ascontiguousarray(array).tobytes()
    return f"{array.dtype.kind}{array.shape}:" + hashlib.sha256(payload).hexdigest()[:16]


def tables(settings: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """Cleaning report and a digest of every table training builds from one log (or its error)."""
    if "csv_of" in settings:
        csv = tmp / "log.csv"
        pd.read_parquet(settings["csv_of"]).to_csv(csv, index=False)
        settings = {"data": csv}
    config = load_config(
        TrainConfig,
        overrides={"models_dir": tmp / "models", "activity_db": tmp / "none.sqlite3", **settings},
        environ={},
    )
    import functools

    import recommender.training as training

    original = training.clean
    try:
        training.clean = functools.partial(original, now=NOW)  # type: ignore[assignment]
        purchases, report = load_purchases(config)
    except DataError as error:
        return {"error": str(error).replace(str(ROOT), "<root>")}
    finally:
        training.clean = original  # type: ignore[assignment]
    interactions = build_interactions(purchases)
    out: dict[str, Any] = {
        "cleaning": report,
        "item_ids": _digest(interactions.item_ids.ids_),
        "user_ids": _digest(interactions.user_ids.ids_),
        "n_orders": interactions.n_orders,
    }
    for name in ("user_items", "order_items", "user_counts", "purchase_age"):
        matrix = getattr(interactions, name).tocsr()
        matrix.sort_indices()
        out[name] = [
            _digest(matrix.indptr.astype(np.int64)),
            _digest(matrix.indices.astype(np.int64)),
            _digest(matrix.data.astype(np.float32)),
        ]
    catalog = build_catalog(purchases, interactions.item_ids)
    out["catalog"] = {name: _digest(values) for name, values in sorted(catalog.items())}
    return json.loads(json.dumps(out, default=str))


@pytest.mark.parametrize("name", sorted(LOGS))
def test_ingest_and_tables_equal_the_recorded_ones(name: str, tmp_path: Path) -> None:
    recorded = json.loads(REFERENCE.read_text())
    assert tables(LOGS[name], tmp_path) == recorded[name]


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        REFERENCE.write_text(
            json.dumps(
                {name: tables(settings, Path(scratch)) for name, settings in LOGS.items()},
                indent=1,
                sort_keys=True,
            )
            + "\n"
        )
    print(f"wrote {REFERENCE}")
