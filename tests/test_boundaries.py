"""Module boundaries that must hold: the server never loads the training stack, and evaluation
fits ALS exactly as the shipped model is fitted."""
from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

from recommender import training
from recommender.model_selection import choice as model_choice

from conftest import tiny_config
from test_protocols import write_uniform_log

TRAINING_STACK = ("pandas", "pyarrow", "implicit", "pyspark", "sklearn", "matplotlib")


def test_serving_a_model_loads_no_training_library(shared_models: Path, tmp_path: Path) -> None:
    script = f"""
import json, sys
from recommender.server import create_app
app = create_app({{"models_dir": {str(shared_models)!r}, "activity_db": {str(tmp_path / "a.sqlite3")!r}}})
client = app.test_client()
answers = [client.get(path).status_code for path in
           ("/v1/items/A/also-bought?k=3", "/v1/users/u1/recommendations?k=3", "/v1/model")]
service = app.extensions["recommender"].get()
print(json.dumps({{"loaded": service is not None, "answers": answers,
                  "imported": [name for name in {TRAINING_STACK!r} if name in sys.modules]}}))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["loaded"] and report["answers"] == [200, 200, 200]
    assert report["imported"] == []


def test_evaluation_and_the_shipped_model_build_als_with_the_same_parameters(tmp_path: Path, monkeypatch) -> None:
    built: list[dict[str, object]] = []
    original = model_choice.ALS.__init__

    @functools.wraps(original)
    def recording(self, **params: object) -> None:
        """Records what ALS is built with; fits on the CPU whatever ``use_gpu`` says."""
        built.append(dict(params))
        original(self, **{**params, "use_gpu": False})

    monkeypatch.setattr(model_choice.ALS, "__init__", recording)
    log = tmp_path / "shop.csv"
    write_uniform_log(log)
    config = tiny_config(log, tmp_path / "models", evaluate=True, use_gpu=True, als_factors=3, jobs=1)
    training.run(config)
    assert len(built) >= 2  # at least one evaluation fit and the shipped one
    without_threads = [{k: v for k, v in params.items() if k != "num_threads"} for params in built]
    assert all(params == without_threads[-1] for params in without_threads)
    assert without_threads[-1]["use_gpu"] is True and without_threads[-1]["factors"] == 3
