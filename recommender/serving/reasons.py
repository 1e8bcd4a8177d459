"""Why each item was recommended: for each chosen item, the item of the shopper's history
that contributed most to its score ("because you viewed X"), read from the item-to-item
matrix's rows or, where shorter, from the chosen items' columns (its saved transpose)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from ..algorithms.als import ALS


class ReasonFinder:
    """The reasons part of ``ranking.Ranker``: it reads the matrix, its transpose and ALS."""

    matrix: sp.csr_matrix
    incoming: sp.csr_matrix | None
    als: ALS | None
    scratch: threading.local  # per thread: the threads of a gthread worker share the ranker

    def contributions(
        self, history: NDArray[np.int64], weights: NDArray[np.float64]
    ) -> tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.float64]]:
        """Every (history position, neighbour, weighted score) entry of the history's rows of the
        item-to-item matrix, gathered with numpy from the CSR arrays."""
        owners, columns, values = gather_rows(self.matrix, history)
        return owners, columns, values * np.asarray(weights)[owners]

    def reasons(
        self,
        history: NDArray[np.int64],
        weights: NDArray[np.float64],
        chosen: list[int],
        gathered: tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.float64]] | None = None,
    ) -> list[int]:
        """For each chosen item, the history item that contributed most (-1 when none did).

        The item-to-item contribution decides; where there is none, the history item whose
        ALS factors are closest does. Read from the history's rows (``gathered`` when the
        caller has them already) or the chosen items' columns, whichever is shorter.
        """
        if not len(history) or not chosen:
            return [-1] * len(chosen)
        columns = np.asarray(chosen)
        best_owner = None
        if (
            gathered is None
            and self.incoming is not None
            and self._columns_shorter(history, columns)
        ):
            best_owner = self._best_owners(history, weights, columns)
        if best_owner is None:
            best_owner = self._best_owners_by_rows(history, weights, columns, gathered)
        closest = None
        if self.als is not None and len(best_owner) < len(chosen):
            factors = self.als.item_factors_
            closest = (factors[history] @ factors[columns].T).argmax(axis=0)
        reasons = []
        for position, item in enumerate(chosen):
            owner = best_owner.get(item)
            if owner is None and closest is not None:
                owner = int(closest[position])
            reasons.append(int(history[owner]) if owner is not None else -1)
        return reasons

    def _columns_shorter(self, history: NDArray[np.int64], columns: NDArray[np.int64]) -> bool:
        """Whether the chosen items' columns hold fewer entries than the history's rows."""
        assert self.incoming is not None
        rows = self.matrix.indptr[history + 1] - self.matrix.indptr[history]
        incoming = self.incoming.indptr[columns + 1] - self.incoming.indptr[columns]
        return int(incoming.sum()) < int(rows.sum())

    def _best_owners_by_rows(
        self,
        history: NDArray[np.int64],
        weights: NDArray[np.float64],
        columns: NDArray[np.int64],
        gathered: tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.float64]] | None = None,
    ) -> dict[int, int]:
        """Chosen item -> the history position contributing most, from the history's rows.

        Without ``gathered``, only the rows' columns are read for every entry; positions and
        values only for the few entries that are chosen items (as ``_matched_entries``)."""
        if gathered is None:
            owners, neighbours, contributions = self._chosen_entries(history, weights, columns)
            relevant = contributions > 0
        else:
            owners, neighbours, contributions = gathered
            with self._placed(columns, 0) as places:
                relevant = (np.take(places, neighbours) == 0) & (contributions > 0)
        owners, neighbours, contributions = (
            owners[relevant],
            neighbours[relevant],
            contributions[relevant],
        )
        if not len(neighbours):  # items without neighbours (or only weaker ones) contribute nothing
            return {}
        order = np.lexsort((-contributions, neighbours))
        first = firsts(neighbours[order])
        return dict(zip(neighbours[order][first].tolist(), owners[order][first].tolist()))

    def _chosen_entries(
        self, history: NDArray[np.int64], weights: NDArray[np.float64], columns: NDArray[np.int64]
    ) -> tuple[NDArray[np.intp], NDArray[np.int32], NDArray[np.float64]]:
        """``contributions``' entries whose column is one of ``columns``, in the same order
        with the same values, gathering values and history positions for those alone."""
        positions, _, row_ends = row_positions(self.matrix, history)
        neighbours = np.take(self.matrix.indices, positions)
        with self._placed(columns, 0) as places:
            found = np.flatnonzero(np.take(places, neighbours) == 0)
        owners = np.searchsorted(row_ends, found, side="right")
        values = np.take(self.matrix.data, positions[found]) * np.asarray(weights)[owners]
        return owners, neighbours[found], values

    def _best_owners(
        self, history: NDArray[np.int64], weights: NDArray[np.float64], columns: NDArray[np.int64]
    ) -> dict[int, int] | None:
        """As ``_best_owners_by_rows`` (ties: the earliest history position), reading only the
        chosen items' columns: k short rows instead of a heavy buyer's thousands. None for a
        list with repeated items (a cart can have them): each occurrence weighs on its own
        there, which the rows' walk handles and this lookup (one occurrence per item) does not.

        A column's entries are matched to the history through a per-thread item -> history
        position array (``_placed``): one gather instead of a search per entry, and only the
        few matching entries go on to be weighed."""
        positions = np.arange(len(history))
        with self._placed(history, positions) as places:
            if (places[history] != positions).any():  # a repeated item: a later one overwrote
                return None
            entries, history_position, chosen_position = self._matched_entries(columns, places)
        if not len(entries):
            return {}
        assert self.incoming is not None
        contributions = self.incoming.data[entries] * np.asarray(weights)[history_position]
        keep = contributions > 0
        chosen_position, history_position = chosen_position[keep], history_position[keep]
        if not len(chosen_position):
            return {}
        order = np.lexsort((history_position, -contributions[keep], chosen_position))
        first = firsts(chosen_position[order])
        return dict(
            zip(
                columns[chosen_position[order][first]].tolist(),
                history_position[order][first].tolist(),
            )
        )

    def _matched_entries(
        self, columns: NDArray[np.int64], places: NDArray[np.int64]
    ) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
        """The entries of the chosen items' columns whose source is in the history (``places``
        over the catalog: its position there, -1 elsewhere): each entry's place in the
        matrix's arrays, its history position and its column's position in ``columns``.

        Only the sources are read for every entry (a popular item's column holds thousands);
        values and column positions only for the few that match, the latter from the
        running total of the columns' lengths."""
        assert self.incoming is not None
        indptr, indices = self.incoming.indptr, self.incoming.indices
        starts = np.asarray(indptr[columns], dtype=np.int64)
        ends = np.asarray(indptr[columns + 1], dtype=np.int64)
        sources = np.concatenate(
            [indices[start:end] for start, end in zip(starts.tolist(), ends.tolist())]
        )
        history_position = np.take(places, sources)
        found = np.flatnonzero(history_position >= 0)
        lengths = ends - starts
        ends_within = np.cumsum(lengths)
        chosen_position = np.searchsorted(ends_within, found, side="right")
        entries = found + (starts - (ends_within - lengths))[chosen_position]
        return entries, history_position[found], chosen_position

    @contextmanager
    def _placed(
        self, items: NDArray[np.integer], values: NDArray[np.int64] | int
    ) -> Iterator[NDArray[np.int64]]:
        """This thread's array over the catalog holding ``values`` at ``items`` and -1
        everywhere else, for the ``with`` block: reset after it, so it is made once per thread
        instead of a catalog-long array per request."""
        places = getattr(self.scratch, "places", None)
        if places is None:
            places = self.scratch.places = np.full(self.matrix.shape[0], -1, dtype=np.int64)
        places[items] = values
        try:
            yield places
        finally:
            places[items] = -1


def firsts(keys: NDArray[np.integer]) -> NDArray[np.bool_]:
    """Where each run of equal sorted ``keys`` starts (``np.r_[True, np.diff(keys) != 0]``
    without ``np.r_``'s Python-level concatenation, a few microseconds a call)."""
    first = np.empty(len(keys), dtype=bool)
    first[:1] = True
    np.not_equal(keys[1:], keys[:-1], out=first[1:])
    return first


def gather_rows(
    matrix: sp.csr_matrix, rows: NDArray[np.int64]
) -> tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.float32]]:
    """Every stored entry of ``rows`` of a CSR matrix, gathered with numpy straight from its
    (memory-mapped) arrays, no sparse object built: (position in ``rows``, column, value).
    Gathered by ``np.take``, which skips fancy indexing's general machinery: 40% less time
    on the thousands of entries of a popular item's column or a heavy buyer's rows."""
    positions, lengths, _ = row_positions(matrix, rows)
    return (
        np.repeat(np.arange(len(rows)), lengths),
        np.take(matrix.indices, positions),
        np.take(matrix.data, positions),
    )


def row_positions(
    matrix: sp.csr_matrix, rows: NDArray[np.int64]
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """Where ``rows``' stored entries lie in a CSR matrix's arrays, row after row; each row's
    length, and where its entries end in that list (the running total of the lengths: a
    binary search of an entry's place there gives its row's position in ``rows``)."""
    starts = np.asarray(matrix.indptr[rows], dtype=np.int64)
    lengths = np.asarray(matrix.indptr[rows + 1], dtype=np.int64) - starts
    ends = np.cumsum(lengths)
    total = int(ends[-1]) if len(ends) else 0
    return np.arange(total) - np.repeat(ends - lengths - starts, lengths), lengths, ends
