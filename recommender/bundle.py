"""The model bundle: everything a training run hands to serving, whichever engine made it.

``ModelBundle`` is the one place that knows how a model version is laid out: the names of
its arrays (``arrays`` / ``from_arrays``) and the fields of its manifest
(``build_manifest``). The local and the Spark trainer both build one and publish it through
``training.save_version``; ``artifacts`` writes and verifies the files and hands back a
bundle over memory-mapped arrays (``artifacts.load_bundle``); the server reads its fields.
No other module assembles an array name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from .errors import ArtifactError

# The item-to-item tables a bundle may hold: "also bought" (customers), "bought together"
# (orders) and the personal model the run chose.
TABLES = ("also_bought", "bought_together", "personal")
CATALOG_FIELDS = ("names", "prices", "categories", "available")
# Written by versions that know them; older versions (and the Spark engine) go without.
OPTIONAL_CATALOG_FIELDS = ("first_sold",)
NEIGHBOUR_FIELDS = ("neighbour_ids", "neighbour_scores", "neighbour_support", "item_support")
CSR_FIELDS = ("indptr", "indices", "data")
LIST_FIELDS = ("packed", "strategy", "rows")
# The repeat model ("buy it again"): per cell of ``user_items`` (same order), then per item.
REPEAT_CELL_FIELDS = ("frequency", "times", "first_age", "last_age")
REPEAT_ITEM_FIELDS = ("cycle_days", "rate", "shop_rate")


@dataclass(frozen=True)
class NeighbourArrays:
    """One item-to-item model as ``NeighbourModel.to_arrays`` gives it: dense top-K rows."""

    ids: NDArray[np.int32]
    scores: NDArray[np.float32]
    support: NDArray[np.int32]
    item_support: NDArray[np.int32]

    @classmethod
    def of(cls, arrays: dict[str, NDArray[Any]]) -> NeighbourArrays:
        """From a model's ``to_arrays()``."""
        return cls(*(arrays[name] for name in NEIGHBOUR_FIELDS))

    def to_dict(self) -> dict[str, NDArray[Any]]:
        return dict(zip(NEIGHBOUR_FIELDS, (self.ids, self.scores, self.support, self.item_support)))


@dataclass(frozen=True)
class CsrArrays:
    """A CSR matrix as its three arrays, so that it can be written and memory-mapped as is."""

    indptr: NDArray[np.int64]
    indices: NDArray[np.int32]
    data: NDArray[np.float32]

    @classmethod
    def of(cls, matrix: sp.csr_matrix) -> CsrArrays:
        return cls(
            matrix.indptr.astype(np.int64),
            matrix.indices.astype(np.int32),
            matrix.data.astype(np.float32),
        )

    def matrix(self, shape: tuple[int, int]) -> sp.csr_matrix:
        """A CSR matrix over these arrays without copying them (memory-mapped pages stay shared)."""
        if self.indptr[-1] != len(self.indices) or len(self.indptr) != shape[0] + 1:
            raise ValueError("inconsistent sparse arrays")
        matrix = sp.csr_matrix(shape, dtype=np.float32)
        # Plain ndarray views of the same pages: indexing numpy's memmap subclass costs a few
        # microseconds more each time, and a request indexes these arrays dozens of times.
        matrix.data, matrix.indices, matrix.indptr = (
            np.asarray(a) for a in (self.data, self.indices, self.indptr)
        )
        if len(self.indices) < np.iinfo(np.int32).max:
            # One index dtype: scipy converts mixed int32/int64 index arrays to int64 on every
            # product, a copy of the whole matrix's indices per call (the precomputed lists make
            # tens of thousands of products). The row pointers are the small array: copied once.
            matrix.indptr = matrix.indptr.astype(np.int32)
        return matrix

    def to_dict(self) -> dict[str, NDArray[Any]]:
        return {"indptr": self.indptr, "indices": self.indices, "data": self.data}


@dataclass(frozen=True)
class RepeatArrays:
    """The repeat model of a version: for each cell of ``user_items`` (CSR order) the decayed
    number of orders that held the item (``frequency``), their number (``times``) and the
    ages in days of the first and latest (before the manifest's ``as_of``); for each item its
    repurchase cycle in days (NaN unknown) and repeat rate; the shop's repeat rate (one value).
    The scores are computed from them when asked (``RepeatBuyer.cell_scores``), so a purchase
    recorded since training counts at once."""

    frequency: NDArray[np.float32]
    times: NDArray[np.float32]
    first_age: NDArray[np.float32]
    last_age: NDArray[np.float32]
    cycle_days: NDArray[np.float32]
    rate: NDArray[np.float32]
    shop_rate: NDArray[np.float64]

    def to_dict(self) -> dict[str, NDArray[Any]]:
        return {name: getattr(self, name) for name in REPEAT_CELL_FIELDS + REPEAT_ITEM_FIELDS}


@dataclass(frozen=True)
class PersonalLists:
    """The precomputed best candidates of the customers who have a list, computed at training
    with the served blend.

    ``items`` (lists, depth) item indices best first, -1 padded; ``scores`` their blended
    scores; ``strategy`` per customer: 0 no list (nothing personal, or no purchase within the
    run's ``personal_list_days``), 1 item-knn, 2 als, 3 blend; ``rows`` per customer the row of
    their list in ``items`` (-1: none), so that the lists take the room of the customers who
    have one; None in versions written before it: row i is customer i. A row shorter than
    ``depth`` holds every item that could be recommended to that customer.

    On disk (``LIST_FIELDS``): ``packed``, one int32 array (lists, 2, depth) holding the
    items and the bits of the float32 scores, so that training writes it in one pass, block
    by block (``StreamedLists``), ``strategy`` and ``rows``.
    """

    items: NDArray[np.int32]
    scores: NDArray[np.float32]
    strategy: NDArray[np.int8]
    rows: NDArray[np.int32] | None = None

    @property
    def depth(self) -> int:
        return int(self.items.shape[1])

    def row(self, user_idx: int) -> int:
        """The row of a customer's list in ``items`` and ``scores`` (-1: none)."""
        return user_idx if self.rows is None else int(self.rows[user_idx])

    @classmethod
    def from_packed(
        cls,
        packed: NDArray[np.int32],
        strategy: NDArray[np.int8],
        rows: NDArray[np.int32] | None = None,
    ) -> PersonalLists:
        """Views of the saved layout (no copy: a memory-mapped file stays mapped)."""
        return cls(packed[:, 0, :], packed[:, 1, :].view(np.float32), strategy, rows)

    def to_dict(self) -> dict[str, NDArray[Any]]:
        packed = np.empty((len(self.items), 2, self.depth), dtype=np.int32)
        packed[:, 0] = self.items
        packed[:, 1] = np.asarray(self.scores, dtype=np.float32).view(np.int32)
        rows = np.arange(len(self.strategy), dtype=np.int32) if self.rows is None else self.rows
        return dict(zip(LIST_FIELDS, (packed, self.strategy, rows)))


@dataclass(frozen=True)
class StreamedLists:
    """Lists computed while the version is written (``artifacts.StreamedArray`` chunks), so
    that a million customers' lists are never held in memory: ``packed`` first, block by
    block; ``strategy`` is complete once ``packed`` has been written, and written after it;
    ``rows`` is known before (``PersonalLists``)."""

    packed: Any
    strategy: Any
    rows: NDArray[np.int32]
    depth: int

    def to_dict(self) -> dict[str, Any]:
        return dict(zip(LIST_FIELDS, (self.packed, self.strategy, self.rows)))


@dataclass
class ModelBundle:
    """A trained model version: ids, purchases, catalog, the fitted components, the manifest.

    Arrays may be numpy arrays, memory-mapped ones (loaded) or ``artifacts.StreamedArray``
    (``als_user_factors`` from the Spark engine, written block by block).
    """

    item_ids: NDArray[Any]
    user_ids: NDArray[Any]
    user_items: CsrArrays
    catalog: dict[str, NDArray[Any]]
    tables: dict[str, NeighbourArrays]
    trending: NDArray[np.float64]
    manifest: dict[str, Any] = field(default_factory=dict)
    personal_matrix: CsrArrays | None = None
    # Its transpose (row: an item, columns: the items whose rows hold it), for the reasons.
    personal_incoming: CsrArrays | None = None
    als_user_factors: Any = None
    als_item_factors: NDArray[np.float32] | None = None
    predictions: dict[str, NDArray[Any]] = field(default_factory=dict)
    lists: PersonalLists | StreamedLists | None = None
    repeat: RepeatArrays | None = None

    @property
    def version(self) -> str:
        """The version's name (set when it is written; loaded bundles always have one)."""
        return str(self.manifest.get("version", ""))

    @property
    def components(self) -> dict[str, Any]:
        return self.manifest.get("components", {})

    @property
    def blend(self) -> dict[str, Any]:
        return self.manifest.get("blend") or {}

    def arrays(self) -> dict[str, Any]:
        """The flat name -> array layout written to disk (one ``.npy`` file per name)."""
        out: dict[str, Any] = {
            "item_ids": self.item_ids,
            "user_ids": self.user_ids,
            **_prefixed("user_items", self.user_items.to_dict()),
            **_prefixed("catalog", self.catalog),
            "trending.popularity": self.trending,
        }
        for name, table in self.tables.items():
            out.update(_prefixed(name, table.to_dict()))
        if self.personal_matrix is not None:
            out.update(_prefixed("personal.matrix", self.personal_matrix.to_dict()))
        if self.personal_incoming is not None:
            out.update(_prefixed("personal.incoming", self.personal_incoming.to_dict()))
        if self.als_item_factors is not None:
            out["als.user_factors"], out["als.item_factors"] = (
                self.als_user_factors,
                self.als_item_factors,
            )
        out.update(_prefixed("evaluation", self.predictions))
        if self.lists is not None:
            out.update(_prefixed("personal_lists", self.lists.to_dict()))
        if self.repeat is not None:
            out.update(_prefixed("repeat", self.repeat.to_dict()))
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, NDArray[Any]], manifest: dict[str, Any]) -> ModelBundle:
        """The bundle over loaded arrays; ``ArtifactError`` when a required one is missing."""
        try:
            tables = {
                name: NeighbourArrays(*(arrays[f"{name}.{f}"] for f in NEIGHBOUR_FIELDS))
                for name in TABLES
                if f"{name}.neighbour_ids" in arrays
            }
            personal_matrix = (
                CsrArrays(*(arrays[f"personal.matrix.{f}"] for f in CSR_FIELDS))
                if "personal.matrix.data" in arrays
                else None
            )
            return cls(
                item_ids=arrays["item_ids"],
                user_ids=arrays["user_ids"],
                user_items=CsrArrays(*(arrays[f"user_items.{f}"] for f in CSR_FIELDS)),
                catalog={
                    f: arrays[f"catalog.{f}"]
                    for f in CATALOG_FIELDS + OPTIONAL_CATALOG_FIELDS
                    if f in CATALOG_FIELDS or f"catalog.{f}" in arrays
                },
                tables=tables,
                trending=arrays["trending.popularity"],
                manifest=manifest,
                personal_matrix=personal_matrix,
                personal_incoming=(
                    CsrArrays(*(arrays[f"personal.incoming.{f}"] for f in CSR_FIELDS))
                    if "personal.incoming.data" in arrays
                    else None
                ),
                lists=_lists(arrays),
                repeat=(
                    RepeatArrays(
                        *(arrays[f"repeat.{f}"] for f in REPEAT_CELL_FIELDS + REPEAT_ITEM_FIELDS)
                    )
                    if "repeat.frequency" in arrays
                    else None
                ),
                als_user_factors=arrays.get("als.user_factors"),
                als_item_factors=arrays.get("als.item_factors"),
                predictions={
                    name.removeprefix("evaluation."): array
                    for name, array in arrays.items()
                    if name.startswith("evaluation.")
                },
            )
        except KeyError as exc:
            raise ArtifactError(f"incomplete model: no array {exc}") from None


def build_manifest(
    *,
    components: dict[str, Any],
    blend: dict[str, Any],
    params: dict[str, Any],
    data: dict[str, Any],
    cleaning: dict[str, Any],
    counts: dict[str, Any],
    evaluation: dict[str, Any],
    gate: dict[str, Any],
    notes: list[str],
    libraries: dict[str, str],
    engine: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest of a version, the same fields from either engine (``engine`` says which
    when it is not the local one); ``artifacts.save`` adds the version, files and checksums,
    ``training.save_version`` the training time."""
    manifest = {
        "components": components,
        "blend": blend,
        "params": params,
        "data": data,
        "cleaning": cleaning,
        "counts": counts,
        "evaluation": evaluation,
        "gate": gate,
        "notes": notes,
        "libraries": libraries,
    }
    if engine is not None:
        manifest = {"engine": engine, **manifest}
    return manifest


def _lists(arrays: dict[str, NDArray[Any]]) -> PersonalLists | None:
    if "personal_lists.packed" in arrays:
        return PersonalLists.from_packed(
            arrays["personal_lists.packed"],
            arrays["personal_lists.strategy"],
            arrays.get("personal_lists.rows"),  # versions before it: one row per customer
        )
    if "personal_lists.items" in arrays:  # versions written before the packed layout
        return PersonalLists(
            arrays["personal_lists.items"],
            arrays["personal_lists.scores"],
            arrays["personal_lists.strategy"],
        )
    return None


def _prefixed(prefix: str, arrays: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}.{name}": array for name, array in arrays.items()}
