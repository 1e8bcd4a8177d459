from __future__ import annotations

from pathlib import Path

import pytest

from recommender.config import ServeConfig, TrainConfig, load_config, parse_columns
from recommender.errors import ConfigError


def test_defaults_then_file_then_environment_then_overrides(tmp_path: Path) -> None:
    config_file = tmp_path / "reco.toml"
    config_file.write_text('[train]\nneighbours = 20\nsimilarity = "bm25"\nmin_support = 4\n')
    config = load_config(
        TrainConfig,
        config_file,
        overrides={"min_support": 7},
        environ={"RECO_SIMILARITY": "tfidf", "RECO_MIN_SUPPORT": "5"},
    )
    assert config.neighbours == 20  # file over default
    assert config.similarity == "tfidf"  # environment over file
    assert config.min_support == 7  # override over environment
    assert config.weighting == "binary"  # untouched default


def test_environment_names_a_config_file(tmp_path: Path) -> None:
    config_file = tmp_path / "serve.toml"
    config_file.write_text("[serve]\nport = 9001\nmax_k = 50\n")
    config = load_config(ServeConfig, environ={"RECO_CONFIG": str(config_file)})
    assert (config.port, config.max_k) == (9001, 50)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"neighbours": 0}, "neighbours: must be at least 1"),
        ({"neighbours": "ten"}, "neighbours: invalid value"),
        ({"similarity": "jaccard"}, "similarity: must be one of"),
        ({"columns": "user_id"}, "columns: expected FIELD=COLUMN"),
        ({"columns": {"shoe_size": "x"}}, "columns: unknown field 'shoe_size'"),
        ({"drop_zero_price": "maybe"}, "drop_zero_price: invalid value"),
        ({"colour": "red"}, "unknown setting 'colour'"),
        ({"engine": "dask"}, "engine: must be one of local, spark"),
        ({"max_history": -1}, "max_history: must be at least 0"),
    ],
)
def test_bad_values_name_the_setting(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(TrainConfig, overrides=overrides, environ={})


def test_missing_and_broken_config_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(TrainConfig, tmp_path / "absent.toml", environ={})
    broken = tmp_path / "broken.toml"
    broken.write_text("[train\n")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(TrainConfig, broken, environ={})


def test_serve_config_limits() -> None:
    with pytest.raises(ConfigError, match="default_k: must not exceed max_k"):
        load_config(ServeConfig, overrides={"default_k": 20, "max_k": 10}, environ={})
    with pytest.raises(ConfigError, match="port: at most 65535"):
        load_config(ServeConfig, environ={"RECO_PORT": "70000"})


def test_parse_columns() -> None:
    assert parse_columns("user_id=cust, item_id=sku") == {"user_id": "cust", "item_id": "sku"}
    assert parse_columns("") == {}


def test_a_log_uri_for_spark_keeps_its_double_slash() -> None:
    config = load_config(
        TrainConfig, overrides={"data": "s3a://shop-logs/purchases/", "engine": "spark"}, environ={}
    )
    assert config.data == "s3a://shop-logs/purchases/"
    assert load_config(TrainConfig, overrides={"data": "logs/x.csv"}, environ={}).data == Path(
        "logs/x.csv"
    )
