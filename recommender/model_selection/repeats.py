"""Buy it again: the repeat model's settings, how much of a personal list it fills, and which
purchases a customer's picks exclude by default, all chosen on the validation folds against
"everything bought next" (rebuys included); then measured once on the test fold beside the
usual baselines of next-basket work (P-TopFreq, its decayed version).

The question differs from the headline's ("items new to the customer"): a shop whose
customers rebuy wants both rows, "Buy it again" and "New for you", and a personal list that
holds a due consumable. The explore blend itself is chosen on new items (the search), so
this stage changes nothing of it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from ..algorithms.repeat import RepeatBuyer, RepeatCells, mixed_cells, mixed_scores
from ..config import EvaluationSettings
from ..data.matrix import Interactions
from ..evaluation import HeldOut, row_ndcg, row_slices, top_k, top_k_blocks
from .choice import GUARD_ERRORS, BlendChoice, plain_ease
from .folds import Fold
from .scoring import FoldState, choice_blocks, choice_top_k, held_out_metrics, release
from .search import paired_difference, rank_keys

REPEAT_DECAYS = (0.0, 30.0, 60.0, 120.0, 365.0)
RATE_WEIGHTS = (0.0, 1.0)
DUE_WEIGHTS = (0.0, 1.0)
# How much of a personal list's score comes from the repeat model (the rest: the explore blend).
MIXES = (0.0, 0.25, 0.5, 0.75, 0.9, 1.0)
# exclude_purchased modes: every purchase excluded (new items only), none, or the repeat-aware one.
MODES = ("true", "false", "repeat")


@dataclass(frozen=True)
class RepeatChoice:
    """The repeat model's settings, the mix of a personal list with purchases kept, and the
    default ``exclude_purchased`` mode; stored in the manifest, read by the server.

    The defaults (used untuned: ``--no-evaluate``, too few validation rows, the Spark engine)
    are what the validation folds chose on the shipped Online Retail log: plain P-TopFreq,
    three quarters of a kept-purchases list; purchases stay excluded by default, as a shop's
    data has not shown that its customers rebuy.
    """

    decay_days: float = 0.0
    rate_weight: float = 0.0
    due_weight: float = 0.0
    mix: float = 0.75
    exclude_purchased: str = "true"

    def build(self, horizon_days: float) -> RepeatBuyer:
        return RepeatBuyer(self.decay_days, self.rate_weight, self.due_weight, horizon_days)

    def label(self) -> str:
        parts = [f"decay {self.decay_days:g}d" if self.decay_days else "no decay"]
        if self.rate_weight:
            parts.append(f"repeat rate^{self.rate_weight:g}")
        if self.due_weight:
            parts.append(f"due^{self.due_weight:g}")
        return f"repeat({', '.join(parts)})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def repeat_cells(interactions: Interactions) -> RepeatCells:
    """The repeat model's input from a log's interactions."""
    assert interactions.purchase_cells is not None and interactions.purchase_days is not None
    return RepeatCells.from_purchases(
        interactions.user_items, interactions.purchase_cells, interactions.purchase_days
    )


@dataclass
class _Rows:
    """One fold's rows for this question, prepared once: how to score them with the explore
    blend a block of rows at a time (``scoring.choice_blocks``: the dense rows x items scores
    of every fold, held together, were this stage's peak), the explore values at their own
    items (each divided by its row's largest magnitude), their own items, the repeat model's
    input."""

    fold: Fold
    explore: Callable[[slice], NDArray[np.float64]]
    cells: RepeatCells
    held_out: HeldOut
    owned: sp.csr_matrix
    times: NDArray[np.float32]
    explore_owned: NDArray[np.float64]

    def blocks(self) -> list[slice]:
        return row_slices(*self.owned.shape)


def _prepare(state: FoldState, choice: BlendChoice, settings: EvaluationSettings) -> _Rows | None:
    fold = state.fold.everything
    if fold is None or fold.interactions.purchase_cells is None:
        return None
    explore = choice_blocks(state.sibling(fold), choice, settings)
    if explore is None:
        return None
    cells = repeat_cells(fold.interactions)
    rows = fold.held_out.rows
    owned = fold.interactions.user_items[rows].tocsr()
    prepared = _Rows(
        fold, explore, cells, fold.held_out, owned, cells.rows(rows).times, np.empty(owned.nnz)
    )
    for block in prepared.blocks():
        scores = explore(block)
        scale = np.abs(scores).max(axis=1)
        scale[scale == 0] = 1.0
        first, last = owned.indptr[block.start], owned.indptr[block.stop]
        lengths = np.diff(owned.indptr[block.start : block.stop + 1])
        row_of_cell = np.repeat(np.arange(len(scores)), lengths)
        prepared.explore_owned[first:last] = (
            scores[row_of_cell, owned.indices[first:last]] / scale[row_of_cell]
        )
    return prepared


def rankings(
    rows: _Rows,
    repeats: Sequence[RepeatChoice],
    horizon: float,
    depth: int,
    lists: tuple[str, ...],
    explore: bool = True,
) -> list[dict[str, NDArray[np.int64]]]:
    """For each of ``repeats``, the ``lists`` asked for, each (rows, depth) item indices, best
    first (-1: none): ``buy_again`` (the customer's own items only) or a personal list in an
    ``exclude_purchased`` mode (``MODES``). Without ``explore`` the repeat scores alone rank
    (ties: lower index), as the P-TopFreq baselines are usually computed.

    The personal lists are ranked a block of rows at a time, each block's explore scores
    formed once for every model in ``repeats``: row for row what ranking whole dense rows x
    items matrices gives, in a block's memory."""
    owned = rows.owned
    out: list[dict[str, NDArray[np.int64]]] = []
    # Per model, only what its lists read: its scores of the evaluated rows (sparse, their
    # own items) and the cells the repeat-aware mode excludes; the model itself (every
    # customer's cells) is not kept.
    repeat_rows, excluded = [], []
    for repeat in repeats:
        model = repeat.build(horizon).fit(rows.cells)
        scored = model.scores_[rows.held_out.rows].tocsr()
        lists_of = {}
        if "buy_again" in lists:
            # The personal list's scores on the customer's own items only: the buy-again row,
            # ranked over the stored cells (as the server does), not the whole catalog.
            mixed_own = mixed_cells(scored, rows.explore_owned if explore else None, repeat.mix)
            lists_of["buy_again"] = _rank_cells(owned.indptr, owned.indices, mixed_own, depth)
        out.append(lists_of)
        repeat_rows.append(scored)
        if "repeat" in lists:
            cells = owned.copy()
            cells.data = model.rarely_rebought(owned.indices, rows.times).astype(np.float32)
            cells.eliminate_zeros()
            excluded.append(cells)
    dense = [name for name in lists if name != "buy_again"]
    if not dense:
        return out
    nothing = sp.csr_matrix(owned.shape)
    parts: list[dict[str, list[NDArray[np.int64]]]] = [
        {name: [] for name in dense} for _ in repeats
    ]
    for block in rows.blocks():
        explore_block = rows.explore(block)
        if "true" in dense:  # the explore blend alone: the same for every model
            kept = top_k(explore_block, owned[block], depth)
            for blocks in parts:
                blocks["true"].append(kept)
        if "false" not in dense and "repeat" not in dense:
            continue
        for number, repeat in enumerate(repeats):
            mixed = mixed_scores(repeat_rows[number][block].toarray(), explore_block, repeat.mix)
            if "false" in dense:
                parts[number]["false"].append(top_k(mixed, nothing[block], depth))
            if "repeat" in dense:
                parts[number]["repeat"].append(top_k(mixed, excluded[number][block], depth))
    for lists_of, blocks in zip(out, parts):
        for name in dense:
            lists_of[name] = np.concatenate(blocks[name])
    return out


def _rank_cells(
    indptr: NDArray[np.integer],
    indices: NDArray[np.integer],
    values: NDArray[np.floating],
    depth: int,
) -> NDArray[np.int64]:
    """Each row's stored cells ranked by value (ties: lower item), (rows, depth), -1 padded."""
    n_rows = len(indptr) - 1
    row = np.repeat(np.arange(n_rows), np.diff(indptr))
    order = np.lexsort((indices, -np.asarray(values, dtype=np.float64), row))
    place = np.arange(len(order)) - np.asarray(indptr[:-1])[row[order]]
    keep = place < depth
    out = np.full((n_rows, depth), -1, dtype=np.int64)
    out[row[order][keep], place[keep]] = indices[order][keep]
    return out


def _ndcg(recommended: NDArray[np.int64], held_out: HeldOut) -> NDArray[np.float64]:
    """Per-row NDCG of rankings that may end early (-1)."""
    padded = _padded(held_out)
    return row_ndcg(np.where(recommended >= 0, recommended, padded.targets.shape[1] - 1), padded)


def _padded(held_out: HeldOut) -> HeldOut:
    """The held-out set with one more item, never a target: where a short list points."""
    targets = sp.hstack([held_out.targets, sp.csr_matrix((len(held_out.rows), 1))]).tocsr()
    return HeldOut(
        held_out.rows,
        held_out.seen,
        targets,
        held_out.n_targets,
        np.append(held_out.popularity, 0.0),
    )


def choose_repeat(
    states: dict[str, list[FoldState]], choice: BlendChoice, settings: EvaluationSettings
) -> tuple[RepeatChoice | None, dict[str, Any]]:
    """The repeat model, the mix and the default mode, on every validation fold that has a
    repeats-included side; None when none has (a log without timestamps or customers).
    What scoring ``choice`` does not need is released from ``states`` first (the search's
    ALS models, when the choice does not blend ALS): this stage scores nothing else there.

    Long because its three stages (the model alone, the mix, the mode) share one table per
    fold, in the order the module docstring gives.
    """
    for group in states.values():  # only ``choice`` is scored on these folds from here on
        for state in group:
            release(state, [choice], fitted=True)
    prepared = {
        name: [rows for state in group if (rows := _prepare(state, choice, settings))]
        for name, group in states.items()
    }
    prepared = {name: group for name, group in prepared.items() if group}
    if not prepared:
        return None, {}
    horizon = settings.test_days

    def measure(
        candidates: list[RepeatChoice], keys: tuple[str, ...]
    ) -> dict[str, dict[RepeatChoice, dict[str, Any]]]:
        """Per list in ``keys``, each candidate's per-row NDCG on each protocol. Fold by fold,
        every candidate and list at once: a fold's explore scores are formed once per block
        of rows for all of them."""
        ndcg = {
            name: [
                [
                    {key: _ndcg(lists[key], rows.held_out) for key in keys}
                    for lists in rankings(rows, candidates, horizon, settings.eval_k, keys)
                ]
                for rows in group
            ]
            for name, group in prepared.items()
        }
        return {
            key: {
                candidate: {
                    name: np.concatenate([per_fold[number][key] for per_fold in folds])
                    for name, folds in ndcg.items()
                }
                for number, candidate in enumerate(candidates)
            }
            for key in keys
        }

    models = [
        RepeatChoice(decay, rate, due, 1.0)
        for decay in REPEAT_DECAYS
        for rate in RATE_WEIGHTS
        for due in DUE_WEIGHTS
    ]
    alone = measure(models, ("buy_again",))["buy_again"]
    ranking = rank_keys(alone)
    best = max(alone, key=ranking.__getitem__)
    mixes = [RepeatChoice(best.decay_days, best.rate_weight, best.due_weight, mix) for mix in MIXES]
    mixed = measure(mixes, ("false",))["false"]
    ranking_mix = rank_keys(mixed)
    chosen = max(mixed, key=ranking_mix.__getitem__)
    modes = {mode: values[chosen] for mode, values in measure([chosen], MODES).items()}
    primary = next(iter(prepared))
    gain, error = paired_difference(
        modes["repeat"][primary], modes["true"][primary], bootstrap_seed=settings.random_state
    )
    if gain > GUARD_ERRORS * error:
        default = "repeat"
        rule = (
            f"repeat-aware beats excluding every purchase on everything bought next by "
            f"{gain:.4f} > {GUARD_ERRORS:g} standard errors ({error:.4f}): it is the default"
        )
    else:
        default = "true"
        rule = (
            f"repeat-aware does not beat excluding every purchase by more than {GUARD_ERRORS:g} "
            f"standard errors ({gain:.4f}, standard error {error:.4f}): purchases stay excluded "
            "by default, as before"
        )
    final = RepeatChoice(
        chosen.decay_days, chosen.rate_weight, chosen.due_weight, chosen.mix, default
    )
    report = {
        "question": "everything bought next, rebuys included; nothing excluded",
        "chosen": final.label() + f", mix {final.mix:g}",
        "default_exclude_purchased": default,
        "rule": rule,
        "folds": {
            name: [rows.fold.description for rows in group] for name, group in prepared.items()
        },
        "models": [
            {"config": c.label(), **_means(values)}
            for c, values in sorted(alone.items(), key=lambda kv: ranking[kv[0]], reverse=True)
        ],
        "mixes": [{"mix": c.mix, **_means(values)} for c, values in mixed.items()],
        "modes": {mode: _means(values) for mode, values in modes.items()},
    }
    return final, report


def tifu_knn_scores(
    cells: RepeatCells,
    rows: NDArray[np.int64],
    decay_days: float = 60.0,
    neighbours: int = 100,
    own: float = 0.7,
) -> NDArray[np.float64]:
    """TIFU-KNN's scores (Hu et al. 2020), the strongest classical next-basket method in Li et
    al. 2023, as a reference: each customer a vector of their time-decayed item frequencies
    (unit length), the prediction ``own * theirs + (1 - own) * the mean of their nearest
    customers'`` (cosine). Fixed settings from the paper's range, not tuned here.
    Dense rows x items; ``tifu_knn_blocks`` forms them a block of rows at a time."""
    return tifu_knn_blocks(cells, rows, decay_days, neighbours, own)(slice(0, len(rows)))


def tifu_knn_blocks(
    cells: RepeatCells,
    rows: NDArray[np.int64],
    decay_days: float = 60.0,
    neighbours: int = 100,
    own: float = 0.7,
) -> Callable[[slice], NDArray[np.float64]]:
    """``tifu_knn_scores`` of a slice of ``rows`` at a time (row for row the same): the
    neighbours of every row are found here, each block's dense scores only when asked for."""
    vectors = sp.csr_matrix(
        (cells.frequency(decay_days), cells.cells.indices, cells.cells.indptr),
        shape=cells.cells.shape,
    )
    norms = np.sqrt(np.asarray(vectors.multiply(vectors).sum(axis=1)).ravel())
    vectors = sp.diags(1.0 / np.where(norms > 0, norms, 1.0)) @ vectors
    query = vectors[rows]
    count = min(neighbours, max(1, vectors.shape[0] - 1))
    # Customers x customers similarities a block of rows at a time: whole, they are the
    # evaluated rows x every customer, dense (gigabytes on a log of 100,000 customers).
    customers = vectors.T.tocsr()
    blocks = []
    for part in row_slices(len(rows), vectors.shape[0]):
        similarity = (query[part] @ customers).toarray()
        similarity[np.arange(len(similarity)), rows[part]] = -np.inf  # not oneself
        # A copy: the slice alone would keep the whole block's partition (rows x every
        # customer) alive, a block's worth of memory per block of rows.
        blocks.append(np.argpartition(-similarity, count - 1, axis=1)[:, :count].copy())
    nearest = np.concatenate(blocks) if blocks else np.zeros((0, count), dtype=np.int64)
    weights = sp.csr_matrix(
        (
            np.full(nearest.size, 1.0 / count),
            nearest.ravel(),
            np.arange(0, nearest.size + 1, count),
        ),
        shape=(len(rows), vectors.shape[0]),
    )

    def block(part: slice) -> NDArray[np.float64]:
        return np.asarray(
            own * query[part].toarray() + (1.0 - own) * (weights[part] @ vectors).toarray()
        )

    return block


def _means(values: dict[str, NDArray[np.float64]]) -> dict[str, float]:
    return {f"ndcg {name}": round(float(v.mean()), 5) for name, v in values.items()}


def measure_repeats(
    state: FoldState,
    choice: BlendChoice,
    repeat: RepeatChoice,
    settings: EvaluationSettings,
) -> dict[str, Any] | None:
    """The test fold, once: the buy-again row and the personal list in each mode against
    popularity, P-TopFreq (plain and decayed 60 days) and EASE with purchases kept, each with
    its interval, and the paired difference of the new lists from the better P-TopFreq.

    Long because each list and baseline is named where it is measured, in the report's order."""
    rows = _prepare(state, choice, settings)
    if rows is None:
        return None
    held, k = rows.held_out, settings.eval_k
    depth = max(k, 20)
    lists = rankings(rows, [repeat], settings.test_days, depth, ("buy_again", *MODES))[0]
    baselines = {
        "baseline: P-TopFreq (orders holding the item)": RepeatChoice(0.0, 0.0, 0.0, 1.0),
        "baseline: P-TopFreq, orders weighted exp(-age / 60 days)": RepeatChoice(
            60.0, 0.0, 0.0, 1.0
        ),
    }
    per_row: dict[str, NDArray[np.float64]] = {}
    results: dict[str, Any] = {}

    def add(name: str, recommended: NDArray[np.int64]) -> None:
        padded = _padded(held)
        safe = np.where(recommended >= 0, recommended, padded.targets.shape[1] - 1)
        results[name] = held_out_metrics(padded, np.empty(0), settings, recommended=safe)
        per_row[name] = _ndcg(recommended[:, :k], held)

    add("buy again: " + repeat.label(), lists["buy_again"])
    for mode in MODES:
        add(f"personal, exclude_purchased={mode}", lists[mode])
    for name, baseline in baselines.items():
        add(
            name,
            rankings(rows, [baseline], settings.test_days, depth, ("buy_again",), False)[0][
                "buy_again"
            ],
        )
    # The dense baselines are ranked a block of rows at a time (``top_k_blocks``).
    add(
        "baseline: popularity",
        top_k_blocks(
            lambda part: np.tile(held.popularity, (part.stop - part.start, 1)), held.seen, depth
        ),
    )
    tifu = "baseline: TIFU-KNN (decay 60 days, 100 nearest customers, own part 0.7)"
    add(tifu, top_k_blocks(tifu_knn_blocks(rows.cells, held.rows), held.seen, depth))
    if len(rows.fold.interactions.item_ids) <= settings.ease_max_items:
        ranked = choice_top_k(state.sibling(rows.fold), plain_ease(settings), settings, depth)
        if ranked is not None:
            add("baseline: EASE l2=250, purchases kept", ranked)
    # Each new list against the better P-TopFreq (the anchor) and against TIFU-KNN.
    anchors = (max(baselines, key=lambda name: per_row[name].mean()), tifu)
    paired = {}
    for name in (
        "buy again: " + repeat.label(),
        *(f"personal, exclude_purchased={m}" for m in MODES),
    ):
        for number, anchor in enumerate(anchors):
            gain, error = paired_difference(
                per_row[name], per_row[anchor], bootstrap_seed=settings.random_state
            )
            paired[name + ("" if number == 0 else " (against TIFU-KNN)")] = {
                "against": anchor,
                "difference": round(gain, 5),
                "ci95": [round(gain - 1.96 * error, 5), round(gain + 1.96 * error, 5)],
            }
    return {
        "question": "everything bought next, rebuys included; nothing excluded unless the mode says",
        "protocol": rows.fold.description,
        "k": k,
        "models": results,
        "paired": paired,
    }
