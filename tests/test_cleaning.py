from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from recommender.config import DEFAULT_EXCLUDED_ITEMS
from recommender.data.cleaning import CleaningRules, clean
from recommender.data.loading import read_log
from recommender.errors import DataError

MESSY = """user_id,item_id,timestamp,quantity,order_id,price,name
u1,A,2024-01-01 10:00,1,o1,2.5,Apple
u1,A,2024-01-01 10:00,1,o1,2.5,Apple
,B,2024-01-01,1,o2,1.0,Banana
u2,,2024-01-02,1,o3,1,?
u2,C,not a date,1,o3,1,Cherry
u2,C,2024-01-02,abc,o3,1,Cherry
u2,POST,2024-01-02,1,o3,18,Postage
u3,D,2024-01-03,6,o4,1,Date
u3,D,2024-01-04,-6,C5,1,Date
u3,E,2024-01-03,6,o4,1,Elder
u3,E,2024-01-04,-2,C5,1,Elder
u4,F,2024-01-05,0,o6,1,Fig
u4,G,2024-01-05,1,o6,0,Grape
,,2024-01-05,1,,1,x
u5,H,2099-01-01,1,o7,1,Future
,H,2024-01-06,1,,1,x
"""
NOW = pd.Timestamp("2024-06-01")
RULES = CleaningRules(excluded_items=DEFAULT_EXCLUDED_ITEMS)


@pytest.fixture
def messy(tmp_path: Path) -> pd.DataFrame:
    path = tmp_path / "messy.csv"
    path.write_text(MESSY)
    return read_log(path)


def test_every_rule_with_exact_counts(messy: pd.DataFrame) -> None:
    purchases, report = clean(messy, RULES, now=NOW)
    assert report.rejected == {
        "missing_item": 2,
        "unparseable_timestamp": 1,
        "future_timestamp": 1,
        "unparseable_quantity": 1,
        "missing_user_and_order": 1,
    }
    assert report.dropped == {
        "duplicate": 1,
        "excluded_item": 1,
        "return_or_cancellation": 2,
        "netted_out_by_return": 1,
        "non_positive_quantity": 1,
        "zero_or_negative_price": 1,
    }
    assert report.rows_read == 16 and report.rows_kept == 3
    assert report.rows_read == report.rows_kept + sum(report.rejected.values()) + sum(
        report.dropped.values()
    )
    assert report.guest_rows == 1
    # What is left: u1's apple, the guest's banana, and u3's elder (6 bought, only 2 returned).
    kept = (
        purchases[["user_id", "item_id", "quantity"]].astype(object).where(purchases.notna(), None)
    )
    assert kept.values.tolist() == [["u1", "A", 1.0], [None, "B", 1.0], ["u3", "E", 6.0]]
    assert purchases["timestamp"].dtype.kind == "M"


def test_item_pattern_and_price_rule_are_optional(messy: pd.DataFrame) -> None:
    rules = CleaningRules(excluded_items=(), item_pattern=r"[A-Z]", drop_zero_price=False)
    _, report = clean(messy, rules, now=NOW)
    assert report.dropped["excluded_item"] == 1  # POST fails the one-letter pattern
    assert "zero_or_negative_price" not in report.dropped


def test_a_log_with_nothing_left_is_an_error_naming_the_source() -> None:
    log = pd.DataFrame({"user_id": ["u1", "u2"], "item_id": ["POST", "POST"]}, dtype="string")
    with pytest.raises(
        DataError, match="shop.csv: no purchases left after cleaning .*excluded_item=2"
    ):
        clean(log, RULES, source="shop.csv")


def test_orders_without_customers_are_kept_for_baskets() -> None:
    log = pd.DataFrame(
        {"order_id": ["1", "1", "2"], "item_id": ["milk", "bread", "milk"]}, dtype="string"
    )
    purchases, report = clean(log, RULES)
    assert report.rows_kept == 3 and report.guest_rows == 3
    assert purchases["quantity"].tolist() == [1.0, 1.0, 1.0]


def test_returns_net_out_on_plain_string_columns() -> None:
    # A log with purchases recorded through the API appended has object columns, not categoricals.
    log = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u2"],
            "item_id": ["A", "A", "A"],
            "quantity": ["2", "-2", "1"],
            "order_id": ["1", "C2", "api:u2:1"],
        },
        dtype=object,
    )
    purchases, report = clean(log, RULES)
    assert report.dropped == {"netted_out_by_return": 1, "return_or_cancellation": 1}
    assert purchases["user_id"].tolist() == ["u2"]
