"""train.py as an operator runs it: a real subprocess, exit codes, one-line errors, model untouched."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from recommender import artifacts

from helpers import PYTHON, ROOT


def train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, str(ROOT / "train.py"), "--num-threads", "1", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


@pytest.fixture
def models_dir(tiny_log: Path, tmp_path: Path) -> Path:
    models = tmp_path / "models"
    result = train("--data", str(tiny_log), "--models-dir", str(models), "--min-support", "2")
    assert result.returncode == 0, result.stderr
    assert "trained model version" in result.stdout
    return models


BAD_LOGS = {
    "absent.csv": None,
    "empty.csv": b"",
    "header.csv": b"user_id,item_id\n",
    "columns.csv": b"customer,sku\n1,A\n",
    "postage.csv": b"user_id,item_id\nu1,POST\nu2,POST\n",
}


@pytest.mark.parametrize(
    "name, expected",
    [
        ("absent.csv", "file not found"),
        ("empty.csv", "file is empty"),
        ("header.csv", "no rows"),
        ("columns.csv", "missing required column 'item_id'"),
        ("postage.csv", "no purchases left after cleaning"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_keeps_the_model(
    models_dir: Path, tmp_path: Path, name: str, expected: str
) -> None:
    before = artifacts.current_version(models_dir)
    path = tmp_path / name
    if BAD_LOGS[name] is not None:
        path.write_bytes(BAD_LOGS[name])
    result = train("--data", str(path), "--models-dir", str(models_dir))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert error_lines == [f"error: {path}: {expected}"] or (
        len(error_lines) == 1 and str(path) in error_lines[0] and expected in error_lines[0]
    )
    assert artifacts.current_version(models_dir) == before
    assert artifacts.versions(models_dir) == [before]


def test_bad_options_exit_2(models_dir: Path, tiny_log: Path) -> None:
    result = train("--data", str(tiny_log), "--models-dir", str(models_dir), "--neighbours", "0")
    assert result.returncode == 2 and result.stderr.strip().endswith(
        "error: neighbours: must be at least 1, got 0"
    )
    result = train("--similarity", "jaccard")
    assert (
        result.returncode == 2
        and "error: similarity: must be one of cosine, bm25, tfidf" in result.stderr
    )


def test_a_shops_own_column_names_by_mapping(tmp_path: Path) -> None:
    log = tmp_path / "shop.csv"
    log.write_text("cust,sku,qty\n1,X,1\n1,Y,1\n2,X,1\n2,Y,1\n3,X,1\n")
    models = tmp_path / "models"
    result = train(
        "--data",
        str(log),
        "--models-dir",
        str(models),
        "--columns",
        "user_id=cust,item_id=sku,quantity=qty",
        "--min-support",
        "1",
        "--min-pair-support",
        "1",
    )
    assert result.returncode == 0, result.stderr
    loaded = artifacts.load_current(models)
    assert loaded.arrays["item_ids"].tolist() == ["X", "Y"]
    assert loaded.manifest["counts"]["customers"] == 3
