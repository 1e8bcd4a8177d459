"""IdMap: external ids (strings) to contiguous integer indices and back.

Models only ever see indices; the service only ever sees external ids. An IdMap is a numpy
string array plus a dict built from it, and imports no pandas, because the server loads it.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from ..errors import UnknownItemError


class IdMap:
    """Bidirectional map between external ids and ``0..n-1``.

    Parameters
    ----------
    ids : 1-D array of unique external ids; position ``i`` holds the id of index ``i``.
    """

    def __init__(self, ids: NDArray[np.str_] | Iterable[str]) -> None:
        self.ids_ = np.asarray(ids if isinstance(ids, np.ndarray) else list(ids), dtype=np.str_)
        self._index = {value: position for position, value in enumerate(self.ids_.tolist())}
        if len(self._index) != len(self.ids_):
            raise ValueError("IdMap ids must be unique")

    def __len__(self) -> int:
        return len(self.ids_)

    def __contains__(self, external_id: object) -> bool:
        return external_id in self._index

    def index(self, external_id: str, missing: Literal["error", "none"] = "error") -> int | None:
        """Index of one id; ``missing="error"`` raises ``UnknownItemError``, ``"none"`` returns None."""
        position = self._index.get(external_id)
        if position is None and missing == "error":
            raise UnknownItemError(external_id)
        return position

    def indices(self, external_ids: Iterable[str]) -> NDArray[np.int64]:
        """Indices of many ids; unknown ids map to -1."""
        return np.fromiter((self._index.get(value, -1) for value in external_ids), dtype=np.int64)

    def ids(self, indices: NDArray[np.integer] | Iterable[int]) -> list[str]:
        """External ids of indices, as Python strings."""
        return self.ids_[np.asarray(indices, dtype=np.int64)].tolist()
