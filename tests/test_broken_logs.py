"""A corpus of broken purchase logs (tests/data/broken): each gets a clear error or the documented
cleaning, and the model being served stays when the log is unusable."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from recommender import artifacts, training
from recommender.data.cleaning import CleaningRules, clean
from recommender.data.loading import read_log

from helpers import PYTHON, ROOT, tiny_config

BROKEN = ROOT / "tests" / "data" / "broken"


@pytest.mark.parametrize(
    "name, message",
    [
        ("empty.csv", "file is empty"),
        ("header_only.csv", "no rows"),
        ("wrong_delimiter.csv", "no purchases left after cleaning (2 rows read; missing_item=2)"),
        ("missing_columns.csv", "missing required column 'item_id'"),
        ("bad_encoding.csv", "not valid utf-8 text at byte"),
    ],
)
def test_unusable_logs_exit_2_and_keep_the_model(
    name: str, message: str, trained_models: Path
) -> None:
    before = artifacts.current_version(trained_models)
    result = subprocess.run(
        [
            PYTHON,
            "train.py",
            "--data",
            str(BROKEN / name),
            "--models-dir",
            str(trained_models),
            "--no-evaluate",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0] and name in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert artifacts.current_version(trained_models) == before


@pytest.mark.parametrize(
    "name, kept, rejected, dropped",
    [
        ("mixed_types.csv", 4, {"unparseable_quantity": 1}, {}),
        ("future_dates.csv", 4, {"future_timestamp": 1}, {}),
        ("unparseable_dates.csv", 3, {"unparseable_timestamp": 2}, {}),
        ("giant_quantities.csv", 4, {}, {"implausible_quantity": 1}),
        ("nan_ids.csv", 3, {"missing_item": 1, "missing_user_and_order": 3}, {}),
        ("duplicate_header.csv", 4, {"repeated_header": 1}, {}),
        ("wrong_types.parquet", 3, {"unparseable_timestamp": 1}, {}),
    ],
)
def test_dirty_logs_are_cleaned_as_documented(
    name: str, kept: int, rejected: dict, dropped: dict, tmp_path: Path
) -> None:
    purchases, report = clean(read_log(BROKEN / name), CleaningRules())
    assert (report.rows_kept, report.rejected, report.dropped) == (kept, rejected, dropped)
    version = training.run(tiny_config(BROKEN / name, tmp_path / "models", min_support=1))
    assert artifacts.load(version).manifest["cleaning"]["rows_kept"] == kept
    if name == "wrong_types.parquet":
        assert sorted(purchases["user_id"].unique().tolist()) == ["1", "2", "3"]
        assert sorted(purchases["item_id"].unique().tolist()) == ["10", "11"]
