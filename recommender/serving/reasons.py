"""Why each item was recommended: for each chosen item, the item of the shopper's history
that contributed most to its score ("because you viewed X"), read from the item-to-item
matrix's rows or, where shorter, from the chosen items' columns (its saved transpose), in
one compiled loop (``kernels.best_owners``)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from ..algorithms.als import ALS
from .kernels import best_owners, merged_neighbour_sums, neighbour_sums

# Histories of at most this many items have their rows merged (``kernels.merged_neighbour_sums``);
# longer ones are placed and sorted, which costs less from about eight rows on (measured on
# the shipped and the 50,000-item models: 18 against 25 µs at eight rows, 123 against 49 at 24).
MERGED_ROWS = 8


class ReasonFinder:
    """The reasons part of ``ranking.Ranker``: it reads the matrix, its transpose and ALS."""

    matrix: sp.csr_matrix
    incoming: sp.csr_matrix | None
    als: ALS | None
    scratch: threading.local  # per thread: the threads of a gthread worker share the ranker

    def neighbour_sums(
        self, history: NDArray[np.int64], weights: NDArray[np.float64]
    ) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """The items the history's rows of the item-to-item matrix reach (ascending) and their
        weighted sums, in one compiled pass: the rows merged for a short history over a
        matrix in column order (``kernels.merged_neighbour_sums``), else placed and sorted
        (``kernels.neighbour_sums``); the same sums either way."""
        history = np.asarray(history, dtype=np.int64)
        weights = np.asarray(weights, dtype=np.float64)
        if len(history) <= MERGED_ROWS and self._rows_sorted:
            return merged_neighbour_sums(*self._arrays[:3], history, weights)
        return neighbour_sums(*self._arrays[:3], history, weights, self._places())

    def reasons(
        self, history: NDArray[np.int64], weights: NDArray[np.float64], chosen: list[int]
    ) -> list[int]:
        """For each chosen item, the history item that contributed most (-1 when none did).

        The item-to-item contribution decides (ties: the earliest history position); where
        there is none, the history item whose ALS factors are closest does. One compiled pass
        (``kernels.best_owners``) over the history's rows or the chosen items' columns,
        whichever holds fewer entries.
        """
        if not len(history) or not chosen:
            return [-1] * len(chosen)
        history = np.asarray(history, dtype=np.int64)
        columns = np.asarray(chosen, dtype=np.int64)
        owners = best_owners(  # ten or so: Python lists from here cost less than numpy calls
            *self._arrays, history, np.asarray(weights, dtype=np.float64), columns, self._places()
        ).tolist()
        if self.als is not None and -1 in owners:
            factors = self.als.item_factors_
            closest = (factors[history] @ factors[columns].T).argmax(axis=0).tolist()
            owners = [near if position < 0 else position for position, near in zip(owners, closest)]
        items = history.tolist()
        return [items[position] if position >= 0 else -1 for position in owners]

    @cached_property
    def _rows_sorted(self) -> bool:
        """Whether each row of the matrix lists its columns in ascending order (as training
        writes it), which the merged sums need; checked once per model."""
        return bool(self.matrix.has_sorted_indices)

    @cached_property
    def _arrays(self) -> tuple[NDArray[Any], ...]:
        """The matrix's CSR arrays and its transpose's (empty when there is none), as plain
        arrays (the compiled loop takes no memmap subclass), read once."""
        matrix = self.matrix
        incoming = self.incoming
        own = tuple(np.asarray(a) for a in (matrix.indptr, matrix.indices, matrix.data))
        if incoming is None:
            return own + tuple(a[:0] for a in own)
        return own + tuple(
            np.asarray(a) for a in (incoming.indptr, incoming.indices, incoming.data)
        )

    def warm_up(self) -> None:
        """Compile the loops for this model's array types now (or load them from the disk
        cache), not at a first request."""
        self.neighbour_sums(np.zeros(1, dtype=np.int64), np.ones(1))
        self.neighbour_sums(np.zeros(MERGED_ROWS + 1, dtype=np.int64), np.ones(MERGED_ROWS + 1))
        self.reasons(np.zeros(1, dtype=np.int64), np.ones(1), [0])

    def _places(self) -> NDArray[np.int64]:
        """This thread's catalog-long scratch array of -1 (the compiled loop leaves it so)."""
        places = getattr(self.scratch, "places", None)
        if places is None:
            places = self.scratch.places = np.full(self.matrix.shape[0], -1, dtype=np.int64)
        return places

    @contextmanager
    def _placed(
        self, items: NDArray[np.integer], values: NDArray[np.int64] | int
    ) -> Iterator[NDArray[np.int64]]:
        """This thread's array over the catalog holding ``values`` at ``items`` and -1
        everywhere else, for the ``with`` block: reset after it, so it is made once per thread
        instead of a catalog-long array per request."""
        places = self._places()
        places[items] = values
        try:
            yield places
        finally:
            places[items] = -1
