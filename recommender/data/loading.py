"""Read a purchase log (CSV, gzip CSV, Parquet, or one basket per line) into canonical columns.

Whatever the shop calls its columns, the result has the canonical names of
``recommender.config.FIELDS``; ids are strings, so "85123A" and "00123" survive intact.
Column names are matched by an explicit mapping, else by a preset: the generic names
(``user_id,item_id,...``) or the UCI Online Retail export (``CustomerID,StockCode,...``).
"""
from __future__ import annotations

import gzip
import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import FIELDS
from ..errors import DataError

logger = logging.getLogger(__name__)

PRESETS: dict[str, dict[str, str]] = {
    "generic": {name: name for name in FIELDS},
    "online_retail": {
        "user_id": "CustomerID",
        "item_id": "StockCode",
        "timestamp": "InvoiceDate",
        "quantity": "Quantity",
        "order_id": "InvoiceNo",
        "price": "UnitPrice",
        "name": "Description",
    },
}
# Non-product codes particular to one export: Manual, Discount, Samples, Bad-debt adjustment.
PRESET_EXCLUDED_ITEMS: dict[str, tuple[str, ...]] = {"online_retail": ("M", "m", "D", "S", "B")}
# Product codes of the Online Retail export: five digits and up to two letters (drops gift
# vouchers, DCGS specials and the fee codes that the list above misses).
PRESET_ITEM_PATTERNS: dict[str, str] = {"online_retail": r"\d{5}[A-Za-z]{0,2}"}
# Written for a missing value by common exports (pandas' astype(str), SQL dumps): not an id.
MISSING_WORDS = ("nan", "null", "none", "<na>", "n/a")
ID_FIELDS = ("user_id", "item_id", "order_id")
PARQUET_MAGIC = b"PAR1"
_GZIP_MAGIC = b"\x1f\x8b"


def read_log(
    path: str | Path,
    format: str = "auto",
    preset: str = "auto",
    columns: Mapping[str, str] | None = None,
    encoding: str = "utf-8",
) -> pd.DataFrame:
    """Read a purchase log into a DataFrame with canonical column names.

    Parameters
    ----------
    path : the log file.
    format : ``auto`` (by content: Parquet magic bytes, else CSV), ``csv``, ``parquet`` or
        ``baskets`` (one order per line, items separated by commas, no header).
    preset : ``auto`` picks the preset whose columns the file has; ``generic`` or ``online_retail``.
    columns : field-to-column mapping that overrides the preset, e.g. ``{"user_id": "cust"}``.

    Returns
    -------
    DataFrame with ``item_id`` and at least one of ``user_id`` / ``order_id``, plus any of
    ``timestamp, quantity, price, name`` the file has. Ids are pandas strings (missing = NA);
    the other columns are as read and are typed by ``clean``. ``attrs["preset"]`` names the
    preset that matched (its own non-product codes are in ``PRESET_EXCLUDED_ITEMS``).

    Raises
    ------
    DataError
        Missing, unreadable or empty file; a required column missing. The message names the file.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a purchase log file")
    with path.open("rb") as handle:
        head = handle.read(4)
    if not head:
        raise DataError(f"{path}: file is empty")
    if format == "auto":
        format = "parquet" if head == PARQUET_MAGIC else "csv"
    if format == "baskets":
        frame = _read_baskets(path, head, encoding)
        logger.info("read %d basket lines from %s", len(frame), path)
        return frame
    raw = _read_parquet(path) if format == "parquet" else _read_csv(path, head, encoding)
    if raw.empty:
        raise DataError(f"{path}: no rows (header only?)")
    preset, mapping = resolve_columns(list(raw.columns), preset, columns or {}, path)
    frame = pd.DataFrame({field: raw[column] for field, column in mapping.items()})
    # A header line repeated inside the file (logs concatenated with their headers) is a row
    # whose values are the column names: not a purchase. Counted, then rejected by cleaning.
    header_again = np.zeros(len(raw), dtype=bool)
    if format != "parquet":  # typed columns cannot hold a header line
        header_again[:] = True
        for column in mapping.values():
            header_again &= (raw[column].astype(str).str.strip() == column).to_numpy()
    frame.attrs["preset"] = preset
    frame.attrs["repeated_header_rows"] = int(header_again.sum())
    if header_again.any():
        frame = frame[~header_again]
        frame.attrs.update(preset=preset, repeated_header_rows=int(header_again.sum()))
    for field in ID_FIELDS:
        if field in frame:
            frame[field] = to_id_strings(frame[field])
    if "name" in frame:
        frame["name"] = to_id_strings(frame["name"])
    logger.info("read %d rows from %s (columns %s)", len(frame), path, mapping)
    return frame


def resolve_columns(
    available: list[str], preset: str, overrides: Mapping[str, str], path: Path
) -> tuple[str, dict[str, str]]:
    """Decide which file column feeds each canonical field; raise ``DataError`` naming what is missing.

    Returns the preset used and the field-to-column mapping.
    """
    if preset == "auto":
        # The preset whose own column names the file uses most (fields mapped explicitly do not
        # count); a tie, or no match at all, means the generic names.
        def matched(name: str) -> int:
            return sum(1 for f, column in PRESETS[name].items() if f not in overrides and column in available)

        preset = max(PRESETS, key=matched)
    mapping = {**PRESETS[preset], **overrides}
    for field, column in overrides.items():
        if column not in available:
            raise DataError(f"{path}: column {column!r} (for {field}) not found; columns are {available}")
    resolved = {field: column for field, column in mapping.items() if column in available}
    if "item_id" not in resolved:
        raise DataError(
            f"{path}: missing required column {mapping['item_id']!r} (item_id); columns are "
            f"{available[:12]}; map it with --columns item_id=NAME, or use --format baskets "
            "for one basket per line"
        )
    if "user_id" not in resolved and "order_id" not in resolved:
        raise DataError(
            f"{path}: missing required column {mapping['user_id']!r} (user_id) "
            "(or an order id column for basket-only logs); map it with --columns user_id=NAME"
        )
    return preset, resolved


def to_id_strings(values: pd.Series) -> pd.Series:
    """An id column as a categorical of stripped strings (missing = NaN).

    Categorical, because a log has millions of lines but far fewer distinct customers and
    items: the work below is done once per distinct id, and a line holds an integer code
    instead of a Python string. Integer ids stored as floats lose their ``.0``: a column of
    customer ids with gaps becomes float in pandas and is then written to CSV as "17850.0";
    when every id of a column has that shape, the ``.0`` is an artefact, not part of the id.
    """
    if not isinstance(values.dtype, pd.CategoricalDtype):
        if pd.api.types.is_float_dtype(values) and (values.dropna() % 1 == 0).all():
            values = values.astype("Int64")
        values = values.astype("category")
    text = pd.Series(values.cat.categories.astype(str), dtype="string").str.strip()
    text = text.mask((text == "") | text.str.lower().isin(MISSING_WORDS))
    present = text.dropna()
    float_shaped = r"\d+\.0"
    if len(present) and present.iloc[:100].str.fullmatch(float_shaped).all() and present.str.fullmatch(float_shaped).all():
        text = text.str.removesuffix(".0")
    category_codes, uniques = pd.factorize(text)
    codes = values.cat.codes.to_numpy()
    recoded = (np.where(codes >= 0, category_codes[np.maximum(codes, 0)], -1) if len(category_codes)
               else np.full(len(codes), -1))
    categories = pd.Index(np.asarray(uniques, dtype=object), dtype=object)
    return pd.Series(pd.Categorical.from_codes(recoded, categories=categories, validate=False), index=values.index)


def fingerprint(path: str | Path) -> str:
    """SHA-256 of a file's bytes, so a model records exactly which data trained it."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_catalog(path: str | Path, encoding: str = "utf-8") -> pd.DataFrame:
    """Read a catalog file (CSV or Parquet): ``item_id`` and optional ``name``, ``price``,
    ``category`` and ``available`` (true/false, 1/0, yes/no) columns."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: catalog file not found")
    with path.open("rb") as handle:
        head = handle.read(4)
    if not head:
        raise DataError(f"{path}: catalog file is empty")
    raw = _read_parquet(path) if head == PARQUET_MAGIC else _read_csv(path, head, encoding)
    if "item_id" not in raw.columns:
        raise DataError(f"{path}: catalog needs an 'item_id' column; columns are {list(raw.columns)}")
    catalog = pd.DataFrame({"item_id": to_id_strings(raw["item_id"])})
    if "name" in raw:
        catalog["name"] = raw["name"].astype("string").str.strip()
    if "price" in raw:
        catalog["price"] = pd.to_numeric(raw["price"], errors="coerce")
    if "category" in raw:
        catalog["category"] = raw["category"].astype("string").str.strip()
    if "available" in raw:
        text = raw["available"].astype("string").str.strip().str.lower()
        truth = {"true": True, "1": True, "yes": True, "y": True, "false": False, "0": False, "no": False, "n": False}
        available = text.map(truth)
        bad = available.isna() & text.notna()
        if bad.any():
            raise DataError(f"{path}: column 'available' has {int(bad.sum())} values that are not true/false")
        catalog["available"] = available.fillna(True).astype(bool)
    return catalog.dropna(subset=["item_id"]).drop_duplicates("item_id", keep="last")


def _read_parquet(path: Path) -> pd.DataFrame:
    """Read Parquet with text columns dictionary-encoded (pandas categoricals), so millions of
    lines do not become millions of Python strings."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
        columns = {
            name: column.dictionary_encode() if pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
            else column
            for name, column in zip(table.column_names, table.columns)
        }
        table = pa.table(columns)
        del columns
        # Hand each column's buffers to pandas as it is converted, and give Arrow's allocator's
        # freed memory back, so the file is not held twice (Arrow's and pandas' copies).
        frame = table.to_pandas(split_blocks=True, self_destruct=True)
        del table
        pa.default_memory_pool().release_unused()
        return frame
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise DataError(f"{path}: cannot read as Parquet: {_first_line(exc)}") from None


def _read_csv(path: Path, head: bytes, encoding: str) -> pd.DataFrame:
    compression = "gzip" if head[:2] == _GZIP_MAGIC else None
    try:
        sample = _first_line(path, compression, encoding)
        separator = max([",", ";", "\t", "|"], key=sample.count)
        return pd.read_csv(
            path, sep=separator, dtype=str, keep_default_na=False, na_values=[""],
            compression=compression, encoding=encoding, encoding_errors="strict",
        )
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: not valid {encoding} text at byte {exc.start}; pass --encoding (e.g. latin-1)"
        ) from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file has no columns") from None
    except (pd.errors.ParserError, OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(
            f"{path}: cannot parse as CSV: {_first_line(exc)} (one basket per line? use --format baskets)"
        ) from None


def _first_line(source: object, compression: str | None = None, encoding: str = "utf-8") -> str:
    if isinstance(source, Path):
        opener = gzip.open if compression == "gzip" else open
        with opener(source, "rt", encoding=encoding, errors="strict") as handle:
            return handle.readline()
    return str(source).strip().splitlines()[0] if str(source).strip() else type(source).__name__


def _read_baskets(path: Path, head: bytes, encoding: str) -> pd.DataFrame:
    opener = gzip.open if head[:2] == _GZIP_MAGIC else open
    order_ids, item_ids = [], []
    try:
        with opener(path, "rt", encoding=encoding, errors="strict") as handle:
            for line_number, line in enumerate(handle, start=1):
                for item in line.strip().split(","):
                    order_ids.append(str(line_number))
                    item_ids.append(item.strip())
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid {encoding} text at byte {exc.start}") from None
    if not item_ids:
        raise DataError(f"{path}: no baskets")
    frame = pd.DataFrame({"order_id": order_ids, "item_id": item_ids}, dtype="string")
    return frame.apply(to_id_strings)
