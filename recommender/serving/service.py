"""RecommendationService: one loaded model version answering in external ids, with fallbacks.

Built once per version from its bundle; everything a request needs (id dicts, names as
Python strings, the personal matrix, the trending ranking, ALS factors) is prepared here, so
a request maps ids, asks ``Ranker`` for one or two BLAS calls and a partial sort, and has
``serving.responses`` shape the answer. Batch scoring for training, export and alerts
is ``serving.batch``.

Strategies, as each response names them: ``item-knn`` (item-to-item neighbours), ``als``
(matrix factorisation alone), ``blend`` (both, plus trending, with the weights the training
run chose), ``popular`` (trending items, the fallback when nothing personal is known).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..algorithms.als import ALS
from ..algorithms.neighbours import table_matrix
from ..bundle import ModelBundle, NeighbourArrays, PersonalLists
from ..data.idmap import IdMap
from ..errors import ArtifactError
from . import responses
from .catalog import Catalog, Filters
from .personal import PersonalAnswers
from .ranking import BlendWeights, Ranked, Ranker
from .repeat import RepeatAnswers, RepeatModel


class RecommendationService(PersonalAnswers, RepeatAnswers):
    """Answers for one model version; read-only and safe to share between threads.

    Parameters
    ----------
    bundle : a loaded, verified model version (``artifacts.load_bundle``).
    activity_half_life_hours : an event this old counts half as much as one just now.
    """

    def __init__(self, bundle: ModelBundle, activity_half_life_hours: float = 72.0) -> None:
        self.version, self.manifest = bundle.version, bundle.manifest
        self.activity_half_life_hours = activity_half_life_hours
        components = bundle.components
        try:
            self.catalog = Catalog(bundle.item_ids, bundle.catalog)
            self.items, self.names, self.prices = (
                self.catalog.items,
                self.catalog.names,
                self.catalog.prices,
            )
            # When each item was first sold (seconds since the epoch; NaN unknown): "new for you".
            self.first_sold = (
                None
                if bundle.catalog.get("first_sold") is None
                else np.asarray(bundle.catalog["first_sold"], dtype=np.float64)
            )
            self.users = IdMap(bundle.user_ids)
            self.user_items = bundle.user_items.matrix((len(self.users), len(self.items)))
            # Plain ndarray views of the memory-mapped arrays (the same shared pages): numpy's
            # memmap subclass adds microseconds to every indexing, dozens of times per request.
            self.tables = {
                name: NeighbourArrays(*map(np.asarray, bundle.tables[name].to_dict().values()))
                for name in ("also_bought", "bought_together")
                if name in bundle.tables
            }
            if not self.tables:
                raise ValueError("model has no item-to-item component")
            if any(table.ids.shape[0] != len(self.items) for table in bundle.tables.values()):
                raise ValueError("neighbour table does not match the item list")
            # Personal scores use the item-to-item model the run chose; an older model without
            # one uses the neighbours over customers, else over orders.
            personal = (
                bundle.tables.get("personal")
                or self.tables.get("also_bought")
                or self.tables["bought_together"]
            )
            self.knn_matrix = (
                bundle.personal_matrix.matrix((len(self.items), len(self.items)))
                if bundle.personal_matrix is not None
                else table_matrix(personal.ids, personal.scores)
            )
            als = None
            if "als" in components:
                als = ALS.from_arrays(
                    {
                        "user_factors": np.asarray(bundle.als_user_factors),
                        "item_factors": np.asarray(bundle.als_item_factors),
                    },
                    **{k: components["als"][k] for k in ("regularization", "alpha")},
                )
                als.gram()
            blend = bundle.blend
            weights = BlendWeights(
                float(blend.get("als_weight", 0.5)),
                float(blend.get("trend_weight", 0.0)),
                None if blend.get("item_weight") is None else float(blend["item_weight"]),
            )
            incoming = (
                bundle.personal_incoming.matrix((len(self.items), len(self.items)))
                if bundle.personal_incoming is not None
                else None
            )
            self.ranker = Ranker(
                self.catalog, self.knn_matrix, als, bundle.trending, weights, incoming
            )
            self.ranker.warm_up()  # compiled here (the master, under --preload), not per request
            self._prepare_per_customer(bundle)
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"model version {self.version}: incomplete model: {exc}") from None
        self.als = als

    def _prepare_per_customer(self, bundle: ModelBundle) -> None:
        """The precomputed lists and the repeat model ("buy it again"; versions trained before
        it go without), checked against the customers."""
        lists = bundle.lists
        self.lists = (
            None
            if not isinstance(lists, PersonalLists)
            else PersonalLists(
                np.asarray(lists.items),
                np.asarray(lists.scores),
                np.asarray(lists.strategy),
                None if lists.rows is None else np.asarray(lists.rows),
            )
        )
        if self.lists is not None:
            rows = self.lists.rows
            listed = len(self.users) if rows is None else int(rows.max(initial=-1)) + 1
            if (
                len(self.lists.strategy) != len(self.users)
                or (rows is not None and len(rows) != len(self.users))
                or self.lists.items.shape[0] != listed
            ):
                raise ValueError("personal lists do not match the customer list")
        self.repeat = (
            RepeatModel(bundle, self.user_items)
            if bundle.repeat is not None and "repeat" in bundle.components
            else None
        )

    # ----------------------------------------------------------------- item pages
    def item_neighbours(
        self, component: str, item_id: str, k: int, filters: Filters = Filters()
    ) -> dict[str, Any]:
        """Top-k neighbours of an item from ``also_bought`` or ``bought_together``.

        Falls back to the other component when a log had no customers, and tops the list up
        with trending items when the item has fewer than k neighbours that pass the filters
        (or none, or is unknown); ``strategy`` and each entry's ``source`` say which.
        """
        name = component if component in self.tables else next(iter(self.tables))
        table = self.tables[name]
        item_idx = self.items.index(item_id, missing="none")
        exclude = () if item_idx is None else (item_idx,)
        # Without filters that take items out, the catalog-long mask is made only when
        # trending items must top the list up: a neighbour is allowed unless it is the item.
        allowed = self.catalog.allowed(filters, exclude) if filters.masks_items() else None
        ranked = Ranked(strategy="item-knn")
        support: dict[int, int] = {}
        fallback = "unknown_item" if item_idx is None else None
        if item_idx is not None:
            ids = table.ids[item_idx]
            usable = (ids != item_idx) if allowed is None else allowed[ids]
            kept = self.catalog.diversify_places(
                ids, np.flatnonzero(usable & (ids >= 0)), k, filters
            )
            ranked.items = ids[kept].tolist()
            ranked.scores = table.scores[item_idx][kept].tolist()
            support = dict(zip(ranked.items, table.support[item_idx][kept].tolist()))
            ranked.sources = ["item-knn"] * len(ranked.items)
            fallback = None if ranked.items else "too_few_buyers"
        if len(ranked.items) < k:
            if allowed is None:
                allowed = self.catalog.allowed(filters, exclude)
            self.ranker.fill_popular(ranked, k, allowed, filters)
        if fallback:
            ranked.strategy = "popular"
        response = responses.ranking(
            ranked, self.catalog, self.version, extra={"bought_both": support}
        )
        response = {
            "item": responses.item(self.catalog, item_idx, item_id),
            "basis": self.manifest["components"][name]["basis"],
            **response,
        }
        if fallback:
            response["fallback_reason"] = fallback
        return response

    # ----------------------------------------------------------------- lookups
    def purchased(self, user_id: str) -> bool:
        """Whether the model was trained on purchases of this customer."""
        return self.users.index(user_id, missing="none") is not None

    def purchased_items(self, user_id: str) -> list[str]:
        """The items the model holds as bought by this customer (for a subject access request)."""
        user_idx = self.users.index(user_id, missing="none")
        return [] if user_idx is None else self.items.ids(self._purchase_row(user_idx)[0])

    def history(self, user_id: str) -> list[dict[str, Any]]:
        """The items the model holds as bought by this customer, with names and prices."""
        user_idx = self.users.index(user_id, missing="none")
        if user_idx is None:
            return []
        return [
            responses.item(self.catalog, int(i), self.catalog.ids[i])
            for i in self._purchase_row(user_idx)[0]
        ]

    def search(self, query: str, page: int, per_page: int) -> dict[str, Any]:
        """Catalog items whose id or name contains ``query`` (case-insensitive), most bought first."""
        matches = self.catalog.search(query, self.ranker.trending_order)
        start = (page - 1) * per_page
        return {
            "query": query,
            "page": page,
            "per_page": per_page,
            "total": int(len(matches)),
            "items": [
                responses.item(self.catalog, int(i), self.catalog.ids[i])
                for i in matches[start : start + per_page]
            ],
        }

    def info(self) -> dict[str, Any]:
        """What a caller may want to know about the loaded model (no file paths)."""
        manifest = self.manifest
        return {
            "version": self.version,
            "created_at": manifest.get("created_at"),
            "data_fingerprint": manifest.get("data", {}).get("sha256"),
            "counts": manifest.get("counts", {}),
            "components": manifest.get("components", {}),
            "cleaning": manifest.get("cleaning", {}),
            "training_seconds": manifest.get("training_seconds"),
            "evaluation": manifest.get("evaluation", {}),
            "blend": manifest.get("blend", {}),
        }

    # ----------------------------------------------------------------- internals
