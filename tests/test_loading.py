from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest

from recommender.data.loading import read_catalog, read_log
from recommender.errors import DataError

from helpers import TINY_LOG


def test_generic_column_names_are_recognised(tiny_log: Path) -> None:
    log = read_log(tiny_log)
    assert list(log.columns) == [
        "user_id",
        "item_id",
        "timestamp",
        "quantity",
        "order_id",
        "price",
        "name",
    ]
    assert len(log) == 10
    assert log["item_id"].tolist()[:3] == ["A", "B", "A"]


def test_online_retail_names_are_recognised_and_ids_stay_strings(tmp_path: Path) -> None:
    path = tmp_path / "retail.parquet"
    pd.DataFrame(
        {
            "InvoiceNo": ["536365", "536365"],
            "StockCode": ["85123A", "00123"],
            "Description": ["WHITE HANGING HEART", "THING"],
            "Quantity": [6, 2],
            "InvoiceDate": pd.to_datetime(["2010-12-01 08:26", "2010-12-01 08:26"]),
            "UnitPrice": [2.55, 1.0],
            "CustomerID": [17850.0, None],
            "Country": ["UK", "UK"],
        }
    ).to_parquet(path)
    log = read_log(path)
    assert log["user_id"].tolist()[0] == "17850"  # the float id loses its ".0"
    assert pd.isna(log["user_id"].tolist()[1])
    assert log["item_id"].tolist() == ["85123A", "00123"]
    assert log["order_id"].tolist() == ["536365", "536365"]
    assert "Country" not in log


def test_gzip_csv_semicolons_and_a_column_mapping(tmp_path: Path) -> None:
    path = tmp_path / "shop.csv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("cust;sku;when\n7;X-1;2024-01-01\n8;00042;2024-01-02\n")
    log = read_log(path, columns={"user_id": "cust", "item_id": "sku", "timestamp": "when"})
    assert log["user_id"].tolist() == ["7", "8"]
    assert log["item_id"].tolist() == ["X-1", "00042"]


def test_integer_ids_written_as_floats_lose_the_suffix(tmp_path: Path) -> None:
    path = tmp_path / "exported.csv"
    path.write_text("CustomerID,StockCode\n17850.0,85123A\n,71053\n13047.0,1.0\n")
    log = read_log(path)
    assert log["user_id"].tolist()[::2] == ["17850", "13047"]
    assert log["item_id"].tolist() == ["85123A", "71053", "1.0"]  # not every item id has that shape


def test_baskets_format(tmp_path: Path) -> None:
    path = tmp_path / "baskets.csv"
    path.write_text("milk,bread\nbeer\n\nmilk, eggs ,bread\n")
    log = read_log(path, format="baskets")
    assert log["order_id"].tolist() == ["1", "1", "2", "3", "4", "4", "4"]
    assert log["item_id"].tolist()[:3] == ["milk", "bread", "beer"]
    assert pd.isna(
        log["item_id"].tolist()[3]
    )  # the empty line: a missing item, rejected by cleaning
    assert log["item_id"].tolist()[5] == "eggs"


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "file is empty"),
        (b"user_id,item_id\n", "no rows"),
        (b"customer,product\n1,2\n", "missing required column 'item_id'"),
        (b"item_id,colour\nA,red\n", "missing required column 'user_id'"),
        (b"user_id,item_id\n1,caf\xe9\n", "not valid utf-8 text at byte"),
        (b"PAR1 this is not parquet", "cannot read as Parquet"),
    ],
)
def test_unusable_files_name_the_file_and_the_problem(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "log.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as raised:
        read_log(path)
    assert str(raised.value).startswith(str(path))
    assert "\n" not in str(raised.value)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        read_log(tmp_path / "absent.csv")
    with pytest.raises(DataError, match="is a directory"):
        read_log(tmp_path)


def test_mapping_to_an_absent_column_is_named(tiny_log: Path) -> None:
    with pytest.raises(DataError, match="column 'cust' \\(for user_id\\) not found"):
        read_log(tiny_log, columns={"user_id": "cust"})


def test_latin1_with_explicit_encoding(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes("user_id,item_id,name\n1,A,caf\xe9\n".encode("latin-1"))
    assert read_log(path, encoding="latin-1")["name"].tolist() == ["caf\xe9"]


def test_catalog_file(tmp_path: Path) -> None:
    path = tmp_path / "catalog.csv"
    path.write_text("item_id,name,price\nA,Green apple,2.2\nA,Red apple,2.4\nZ,Zucchini,oops\n")
    catalog = read_catalog(path)
    assert catalog.set_index("item_id")["name"].to_dict() == {"A": "Red apple", "Z": "Zucchini"}
    assert pd.isna(catalog.set_index("item_id")["price"]["Z"])
    assert TINY_LOG  # the shared tiny log is importable for other modules
