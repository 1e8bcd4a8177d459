"""Module boundaries that must hold: the server never loads the training stack, and evaluation
fits ALS exactly as the shipped model is fitted."""

from __future__ import annotations

import functools
import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from recommender import training
from recommender.model_selection import choice as model_choice

from helpers import free_port, serve_command, tiny_config, wait_until_ready, write_uniform_log

ROOT = Path(__file__).resolve().parents[1]
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
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["loaded"] and report["answers"] == [200, 200, 200]
    assert report["imported"] == []


def test_evaluation_and_the_shipped_model_build_als_with_the_same_parameters(
    tmp_path: Path, monkeypatch
) -> None:
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
    # No precomputed lists: serving rebuilds ALS from saved factors, which is not a fit.
    config = tiny_config(
        log,
        tmp_path / "models",
        evaluate=True,
        use_gpu=True,
        als_factors=3,
        jobs=1,
        personal_list_depth=0,
    )
    training.run(config)
    assert len(built) >= 2  # at least one evaluation fit and the shipped one
    without_threads = [{k: v for k, v in params.items() if k != "num_threads"} for params in built]
    assert all(params == without_threads[-1] for params in without_threads)
    assert without_threads[-1]["use_gpu"] is True and without_threads[-1]["factors"] == 3


@pytest.mark.slow
def test_long_urls_get_the_apps_json_400_up_to_gunicorns_limit(
    shared_models: Path, tmp_path: Path
) -> None:
    port = free_port()
    server = subprocess.Popen(
        serve_command(shared_models, tmp_path / "activity.sqlite3", port, workers=1),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_ready(base, server)
        for length in (
            300,
            6000,
        ):  # 6,000 bytes was past gunicorn's default 4,094-byte request line
            status, body = fetch(f"{base}/v1/items/{'x' * length}/also-bought")
            assert (
                status == 400
                and json.loads(body)["error"]["message"] == "item_id: must be 1 to 128 characters"
            ), length
        status, body = fetch(f"{base}/v1/items/{'x' * 9000}/also-bought")
        assert status == 400  # past MAX_REQUEST_LINE: gunicorn's own answer (docs/api.md)
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=30)


def fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
