"""Read a purchase log (CSV, gzip CSV, Parquet, or one basket per line) into canonical columns.

Whatever the shop calls its columns, the result has the canonical names of
``recommender.config.FIELDS``; ids are strings, so "85123A" and "00123" survive intact.
Column names are matched by an explicit mapping, else by a preset: the generic names
(``user_id,item_id,...``) or the UCI Online Retail export (``CustomerID,StockCode,...``).
"""

from __future__ import annotations

import codecs
import csv
import gzip
import hashlib
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

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
    ``timestamp, quantity, price, name`` the file has. Ids and names are categoricals of
    strings (missing = NaN; order ids' categories are Arrow-backed strings, as compact as the
    file's); the other columns are as read and are typed by ``clean``. ``attrs["preset"]`` names the
    preset that matched (its own non-product codes are in ``PRESET_EXCLUDED_ITEMS``).

    Raises
    ------
    DataError
        Missing, unreadable or empty file; a required column missing. The message names the file.

    Long because it is the one place that maps every supported format to the canonical
    columns, with one message per way a file can be unusable.
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
    header = None if format == "parquet" else _csv_header(path, head, encoding)
    available = _parquet_columns(path) if header is None else header[0]
    preset, mapping = resolve_columns(available, preset, columns or {}, path)
    # Only the mapped columns are read, each straight to integer codes over its distinct values.
    wanted = list(dict.fromkeys(mapping.values()))
    repeated = 0
    if header is None:
        if _parquet_rows(path) == 0:
            raise DataError(f"{path}: no rows (header only?)")

        def take(column: str) -> Any:
            # One column at a time: the file is never in memory whole beside the frame.
            return _read_parquet_table(path, [column]).column(0)

    else:
        table = _read_csv_table(path, head, encoding, wanted, header)
        if table.num_rows == 0:
            raise DataError(f"{path}: no rows (header only?)")
        # A header line repeated inside the file (logs concatenated with their headers) is a
        # row whose values are the column names: not a purchase. Counted, then rejected by
        # cleaning. (Typed Parquet columns cannot hold a header line.)
        header_again = np.ones(table.num_rows, dtype=bool)
        for column in mapping.values():
            header_again &= _equals_text(table.column(column), column)
        repeated = int(header_again.sum())
        if repeated:
            import pyarrow as pa

            table = table.filter(pa.array(~header_again))
        columns = {name: table.column(name) for name in wanted}
        del table
        uses = Counter(mapping.values())

        def take(column: str) -> Any:
            uses[column] -= 1
            return columns[column] if uses[column] else columns.pop(column)

    try:
        frame = _canonical_frame(take, mapping, drop_unused=bool(repeated))
    except DataError:
        raise
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise DataError(f"{path}: cannot read: {_first_line(exc)}") from None
    frame.attrs.update(preset=preset, repeated_header_rows=repeated)
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
            return sum(
                1
                for f, column in PRESETS[name].items()
                if f not in overrides and column in available
            )

        preset = max(PRESETS, key=matched)
    mapping = {**PRESETS[preset], **overrides}
    for field, column in overrides.items():
        if column not in available:
            raise DataError(
                f"{path}: column {column!r} (for {field}) not found; columns are {available}"
            )
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
    if (
        len(present)
        and present.iloc[:100].str.fullmatch(float_shaped).all()
        and present.str.fullmatch(float_shaped).all()
    ):
        text = text.str.removesuffix(".0")
    category_codes, uniques = pd.factorize(text)
    codes = values.cat.codes.to_numpy()
    recoded = (
        np.where(codes >= 0, category_codes[np.maximum(codes, 0)], -1)
        if len(category_codes)
        else np.full(len(codes), -1)
    )
    categories = pd.Index(np.asarray(uniques, dtype=object), dtype=object)
    return pd.Series(
        pd.Categorical.from_codes(recoded, categories=categories, validate=False),
        index=values.index,
    )


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
        raise DataError(
            f"{path}: catalog needs an 'item_id' column; columns are {list(raw.columns)}"
        )
    catalog = pd.DataFrame({"item_id": to_id_strings(raw["item_id"])})
    if "name" in raw:
        catalog["name"] = raw["name"].astype("string").str.strip()
    if "price" in raw:
        catalog["price"] = pd.to_numeric(raw["price"], errors="coerce")
    if "category" in raw:
        catalog["category"] = raw["category"].astype("string").str.strip()
    if "available" in raw:
        text = raw["available"].astype("string").str.strip().str.lower()
        truth = {
            "true": True,
            "1": True,
            "yes": True,
            "y": True,
            "false": False,
            "0": False,
            "no": False,
            "n": False,
        }
        available = text.map(truth)
        bad = available.isna() & text.notna()
        if bad.any():
            raise DataError(
                f"{path}: column 'available' has {int(bad.sum())} values that are not true/false"
            )
        catalog["available"] = available.fillna(True).astype(bool)
    return catalog.dropna(subset=["item_id"]).drop_duplicates("item_id", keep="last")


def _parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    try:
        return int(pq.read_metadata(path).num_rows)
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise DataError(f"{path}: cannot read as Parquet: {_first_line(exc)}") from None


def _parquet_columns(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    try:
        return list(pq.read_schema(path).names)
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise DataError(f"{path}: cannot read as Parquet: {_first_line(exc)}") from None


def _read_parquet(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """Parquet as a DataFrame, text columns as categoricals (see ``_read_parquet_table``)."""
    table = _read_parquet_table(path, columns)
    try:
        return _to_pandas(table)
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise DataError(f"{path}: cannot read as Parquet: {_first_line(exc)}") from None


def _read_parquet_table(path: Path, columns: list[str] | None = None) -> Any:
    """Read Parquet into an Arrow table with text columns read as dictionaries: a line holds
    an integer code, and each distinct id is decoded once, so millions of lines never become
    millions of Python strings."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
        columns = list(schema.names) if columns is None else columns
        text = [
            name
            for name in columns
            if pa.types.is_string(schema.field(name).type)
            or pa.types.is_large_string(schema.field(name).type)
        ]
        return pq.read_table(path, columns=columns, read_dictionary=text)
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise DataError(f"{path}: cannot read as Parquet: {_first_line(exc)}") from None


def _to_pandas(table: Any) -> pd.DataFrame:
    """Hand each column's buffers to pandas as it is converted, and give Arrow's allocator's
    freed memory back, so the file is not held twice (Arrow's and pandas' copies)."""
    import pyarrow as pa

    frame = table.to_pandas(split_blocks=True, self_destruct=True)
    del table
    pa.default_memory_pool().release_unused()
    return frame


def _canonical_frame(
    take: Callable[[str], Any], mapping: Mapping[str, str], drop_unused: bool
) -> pd.DataFrame:
    """The canonical columns from the Arrow columns of the file, each got from ``take`` when
    it is converted and released once converted (the file is never held whole twice).

    Ids and names held as Arrow dictionaries are normalised there (``_arrow_ids``), once per
    distinct value; the other columns become pandas columns as they are (typed by ``clean``).
    ``drop_unused``: forget dictionary values no line uses any more (the repeated header's).
    """
    import pyarrow as pa

    converted: dict[str, pd.Series] = {}
    # The costliest conversion (order ids: a hash table of millions of values) first, while
    # nothing else is held; the frame's columns keep the mapping's order.
    costliest_first = sorted(mapping, key=lambda field: field != "order_id")
    for field in costliest_first:
        column = mapping[field]
        values = take(column)
        if field in (*ID_FIELDS, "name") and _is_text_dictionary(values):
            converted[field] = _arrow_ids(values, drop_unused, compact=field == "order_id")
        else:
            series = values.to_pandas()
            if drop_unused and isinstance(series.dtype, pd.CategoricalDtype):
                # The header's own words are no longer values of any line.
                series = series.cat.remove_unused_categories()
            if field in (*ID_FIELDS, "name"):
                series = to_id_strings(series)
            converted[field] = series
        del values
        pa.default_memory_pool().release_unused()
    return pd.DataFrame({field: converted[field] for field in mapping}, copy=False)


def _is_text_dictionary(values: Any) -> bool:
    import pyarrow as pa

    return bool(
        pa.types.is_dictionary(values.type)
        and (
            pa.types.is_string(values.type.value_type)
            or pa.types.is_large_string(values.type.value_type)
        )
    )


def _dictionary_codes(values: Any) -> tuple[NDArray[np.int32], Any]:
    """One dictionary for all chunks of an Arrow dictionary column (unified as ``to_pandas``
    unifies them: the first chunk's values, then each later chunk's new ones) and each
    line's code in it (int32, -1 = missing)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = values.unify_dictionaries()
    dictionary = values.chunk(0).dictionary if values.num_chunks else pa.array([], pa.string())
    codes = np.empty(len(values), dtype=np.int32)
    start = 0
    for chunk in values.chunks:
        codes[start : start + len(chunk)] = pc.fill_null(chunk.indices, -1).to_numpy()
        start += len(chunk)
    return codes, dictionary


def _stripped(text: Any) -> Any:
    """An Arrow string array with each value stripped exactly as Python's ``str.strip`` does:
    only the values that begin or end with something other than printable ASCII go through
    Python (usually none), the rest are already stripped."""
    import pyarrow as pa
    import pyarrow.compute as pc

    edged = np.asarray(
        pc.fill_null(pc.match_substring_regex(text, r"^[^!-~]|[^!-~]$"), False), dtype=bool
    )
    if not edged.any():
        return text
    positions = np.flatnonzero(edged)
    replaced = [value.strip() for value in text.take(pa.array(positions)).to_pylist()]
    return pc.replace_with_mask(text, pa.array(edged), pa.array(replaced, text.type))


def _without_missing(text: Any) -> Any:
    """An Arrow string array with "" and the missing words (any case) made null."""
    import pyarrow as pa
    import pyarrow.compute as pc

    missing = pc.or_(pc.equal(text, ""), pc.is_in(pc.ascii_lower(text), pa.array(MISSING_WORDS)))
    if not pc.any(missing).as_py():
        return text
    return pc.if_else(missing, pa.scalar(None, pa.string()), text)


def _arrow_ids(values: Any, drop_unused: bool = False, compact: bool = False) -> pd.Series:
    """``to_id_strings`` of an Arrow dictionary column, computed on its dictionary (each
    distinct value once, in Arrow's buffers): stripped, the missing words and "" missing,
    float-shaped ids without their ".0", equal values merged in the order they first appear.
    A line is an integer code throughout; the distinct ids become Python strings, or with
    ``compact`` stay in one Arrow buffer (pandas' Arrow-backed strings, NaN for missing).

    ``compact`` is for order ids: a log has almost as many orders as lines / 3 (six million
    in a 20M-line log, 400 MB as Python strings against 70 MB in Arrow), and they are only
    compared, never looked up.

    Long because the dictionary's normalisation, the merge of equal values and the codes are
    one pass over the same Arrow buffers; split, each part would take and return all of them.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if drop_unused:
        # One dictionary for the whole column, without the values only the dropped header
        # lines used, before anything is merged: the order ``to_id_strings`` gives.
        codes, dictionary = _dictionary_codes(values)
        used = np.bincount(codes[codes >= 0], minlength=len(dictionary)) > 0
        renumber = np.append(np.cumsum(used, dtype=np.int32) - 1, np.int32(-1))
        codes = renumber[codes]
        parts = [dictionary.filter(pa.array(used))]
        starts = np.zeros(len(codes), dtype=np.int32)
    else:
        # Each chunk's dictionary (chunks of one Parquet row group share theirs: taken once),
        # normalised on its own, then all of them encoded in one pass: values first seen in
        # the same order as in the dictionary ``to_pandas`` unifies, without building that
        # unified dictionary (a second hash table of every id).
        codes = np.empty(len(values), dtype=np.int32)
        starts = np.empty(len(values), dtype=np.int32)
        parts, offset, line = [], 0, 0
        where: dict[tuple[int, ...], int] = {}
        for chunk in values.chunks:
            dictionary = chunk.dictionary
            identity = (
                dictionary.offset,
                len(dictionary),
                *(buffer.address if buffer is not None else 0 for buffer in dictionary.buffers()),
            )
            if identity not in where:
                where[identity] = offset
                parts.append(dictionary)
                offset += len(dictionary)
            codes[line : line + len(chunk)] = pc.fill_null(chunk.indices, -1).to_numpy()
            starts[line : line + len(chunk)] = where[identity]
            line += len(chunk)
    del values
    parts = [_without_missing(_stripped(part.cast(pa.string()))) for part in parts]
    float_shaped = r"^\p{Nd}+\.0$"
    present = [part.drop_null() for part in parts]
    if sum(map(len, present)) and all(
        pc.all(pc.match_substring_regex(part, float_shaped)).as_py()
        for part in present
        if len(part)
    ):
        parts = [pc.utf8_slice_codeunits(part, 0, -2) for part in parts]
    del present
    text = pa.concat_arrays(parts) if parts else pa.array([], pa.string())
    del parts
    distinct = pc.dictionary_encode(text)
    del text
    pa.default_memory_pool().release_unused()  # the encoder's hash table, freed
    renumber = np.append(
        pc.fill_null(distinct.indices, -1).to_numpy().astype(np.int32), np.int32(-1)
    )
    # A line's code in its chunk's dictionary, moved to where that dictionary starts in the
    # concatenation (missing stays -1), then to its distinct value.
    missing = codes < 0
    codes += starts
    del starts
    codes[missing] = -1
    del missing
    codes = renumber[codes]
    categories = pd.Index(
        pd.array(distinct.dictionary, dtype=pd.StringDtype("pyarrow", na_value=np.nan))
        if compact
        else distinct.dictionary.to_numpy(zero_copy_only=False),
        dtype=None if compact else object,
    )
    # The categories are distinct by construction; pandas checks it anyway, through a hash
    # table of every category that it then keeps with them (about 3 s and 530 MB for the six
    # million order ids of a 20M-line log). ``is_unique`` is a cached property of the index:
    # given beforehand, it is what the check reads.
    cache = getattr(categories, "_cache", None)
    if isinstance(cache, dict):
        cache["is_unique"] = True
    values = pd.Categorical.from_codes(codes, categories=categories, validate=False)
    getattr(categories, "_cache", {}).pop("_engine", None)  # should one have been built
    return pd.Series(values)


def _csv_header(path: Path, head: bytes, encoding: str) -> tuple[list[str], str]:
    """The column names of a CSV file, as pandas would name them (duplicates get ``.1``, ...),
    and its separator: whichever of ``, ; tab |`` the header line has most of."""
    try:
        first = _first_line(path, "gzip" if head[:2] == _GZIP_MAGIC else None, encoding)
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: not valid {encoding} text at byte {exc.start}; pass --encoding (e.g. latin-1)"
        ) from None
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: cannot read: {_first_line(exc)}") from None
    first = first.removeprefix("\ufeff").rstrip("\r\n")
    if not first.strip():
        raise DataError(f"{path}: file has no columns")
    separator = max([",", ";", "\t", "|"], key=first.count)
    names = next(csv.reader([first], delimiter=separator))
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        if name in seen:
            seen[name] += 1
            while f"{name}.{seen[name]}" in seen:
                seen[name] += 1
            name = f"{name}.{seen[name]}"
        seen.setdefault(name, 0)
        unique.append(name)
    return unique, separator


def _read_csv(
    path: Path,
    head: bytes,
    encoding: str,
    columns: list[str] | None = None,
    header: tuple[list[str], str] | None = None,
) -> pd.DataFrame:
    """CSV as a DataFrame, every column a categorical of its text (see ``_read_csv_table``)."""
    return _to_pandas(_read_csv_table(path, head, encoding, columns, header))


def _read_csv_table(
    path: Path,
    head: bytes,
    encoding: str,
    columns: list[str] | None = None,
    header: tuple[list[str], str] | None = None,
) -> pd.DataFrame:
    """Read CSV into an Arrow table, every column as a dictionary of its text values.

    As pandas' ``read_csv(dtype=str, keep_default_na=False, na_values=[""])`` reads it (short
    lines padded with empty fields, a line with too many fields an error), values typed
    later by ``clean`` from each column's distinct values, without a Python string per field.
    ``header`` is ``_csv_header``'s answer when the caller has it already.

    Long because Arrow's reader options, the padding of short lines and each parse error's
    one-line message belong together.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    compression = "gzip" if head[:2] == _GZIP_MAGIC else None
    names, separator = header or _csv_header(path, head, encoding)
    columns = names if columns is None else columns
    short_lines: list[str] = []
    long_lines = [0]

    def set_aside(row: Any) -> str:
        # A line with fewer fields than the header is read as pandas reads it (the missing
        # trailing fields empty): kept aside here and parsed below. One with more is skipped.
        if row.actual_columns < row.expected_columns:
            short_lines.append(row.text)
        else:
            long_lines[0] += 1
        return "skip"

    text_type = pa.dictionary(pa.int32(), pa.string())
    try:
        with pa.input_stream(str(path), compression=compression) as stream:
            table = pacsv.read_csv(
                stream,
                read_options=pacsv.ReadOptions(
                    column_names=names,
                    skip_rows=1,
                    encoding=_arrow_encoding(encoding),
                    block_size=1 << 24,
                ),
                parse_options=pacsv.ParseOptions(
                    delimiter=separator, invalid_row_handler=set_aside, newlines_in_values=True
                ),
                convert_options=pacsv.ConvertOptions(
                    include_columns=columns,
                    column_types={name: text_type for name in columns},
                    null_values=[""],
                    strings_can_be_null=True,
                    quoted_strings_can_be_null=True,
                ),
            )
    except pa.ArrowInvalid as exc:
        if "UTF8" in str(exc) or "UTF-8" in str(exc):
            raise DataError(
                f"{path}: not valid {encoding} text at byte {_first_bad_byte(path, compression, encoding)}; "
                "pass --encoding (e.g. latin-1)"
            ) from None
        raise DataError(
            f"{path}: cannot parse as CSV: {_first_line(exc)} (one basket per line? use --format baskets)"
        ) from None
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: cannot read: {_first_line(exc)}") from None
    if long_lines[0]:
        raise DataError(
            f"{path}: cannot parse as CSV: {long_lines[0]} lines have more than the {len(names)} fields "
            "of the header (one basket per line? use --format baskets)"
        )
    if short_lines:
        position = {name: names.index(name) for name in columns}
        padded = [
            row + [""] * (len(names) - len(row))
            for row in csv.reader(short_lines, delimiter=separator)
        ]
        extra = pa.table(
            {
                name: pa.array(
                    [row[position[name]] or None for row in padded], pa.string()
                ).dictionary_encode()
                for name in columns
            }
        )
        table = pa.concat_tables([table, extra.cast(table.schema)], promote_options="permissive")
    return table


def _arrow_encoding(encoding: str) -> str:
    """Arrow's name for an encoding: it only knows utf8 natively and transcodes the rest."""
    return "utf8" if codecs.lookup(encoding).name == "utf-8" else encoding


def _first_bad_byte(path: Path, compression: str | None, encoding: str) -> int:
    """Where a file stops being valid text (error path only: reads the file again)."""
    opener = gzip.open if compression == "gzip" else open
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    offset = 0
    with opener(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                return offset + exc.start
            offset += len(block)
    return offset


def _equals_text(values: Any, text: str) -> NDArray[np.bool_]:
    """Rows of an Arrow column whose value, stripped, is ``text``: compared once per distinct
    value of a dictionary column."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_dictionary(values.type):
        codes, dictionary = _dictionary_codes(values)
        matches = np.asarray(pc.fill_null(pc.equal(_stripped(dictionary), text), False), dtype=bool)
        return np.append(matches, False)[codes]
    return np.asarray(
        [value is not None and str(value).strip() == text for value in values.to_pylist()],
        dtype=bool,
    )


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


def recorded_lines(events: Sequence[Any]) -> pd.DataFrame | None:
    """Purchases recorded through the API (``activity.Event``) as log lines, one order per
    purchase event; None when there are none. Both engines append these to their log."""
    if not events:
        return None
    return pd.DataFrame(
        {
            "user_id": pd.array([e.user_id for e in events], dtype="string"),
            "item_id": pd.array([e.item_id for e in events], dtype="string"),
            "timestamp": pd.to_datetime([e.timestamp for e in events], unit="s"),
            "quantity": 1.0,
            "order_id": pd.array(
                [f"api:{e.user_id}:{int(e.timestamp)}" for e in events], dtype="string"
            ),
        }
    )


def with_recorded_purchases(log: pd.DataFrame, events: Sequence[Any]) -> pd.DataFrame:
    """``log`` with the purchases recorded through the API (``POST /v1/events``) appended."""
    recorded = recorded_lines(events)
    if recorded is None:
        return log
    orders = log["order_id"] if "order_id" in log else None
    if orders is not None and isinstance(orders.dtype, pd.CategoricalDtype):
        if orders.cat.categories.dtype != object:
            # Arrow-backed order ids (``_arrow_ids``) as Python strings, so that the combined
            # column is what it is for every other log (concat makes it object).
            log["order_id"] = orders.cat.rename_categories(orders.cat.categories.astype(object))
    keep = [
        column
        for column in recorded.columns
        if column in log.columns or column in ("user_id", "item_id")
    ]
    combined = pd.concat([log, recorded[keep]], ignore_index=True)
    combined.attrs.update(log.attrs)
    return combined
