"""Tracing recommendations to what they earn: the signed ``recommendation_id`` each list
carries, and the impression counts a worker gathers before it writes them.

A ``recommendation_id`` is itsdangerous' ``URLSafeTimedSerializer`` over the list's facts
(endpoint, strategy, model version, experiment and variant, shopper, the items in their
order) with the time it was signed: readable by whoever holds it (it names nothing the
caller did not already see) but not forgeable without the server's secret, and too old
after ``max_age`` seconds. Nothing is stored per list: an event that cites the id carries
the list with it.

Impressions are counted in the worker (a dict increment under a lock) and written by a
background thread every ``interval`` seconds and at exit, so a page view never waits on a
database write. A worker killed with SIGKILL loses what it counted since its last write:
at most ``interval`` seconds of impressions (and, while the store is unreachable, what it
kept to retry).
"""

from __future__ import annotations

import atexit
import hashlib
import hmac
import logging
import os
import threading
import time
from base64 import urlsafe_b64encode
from collections.abc import Callable, Sequence
from typing import NamedTuple

import orjson
from itsdangerous import BadData, SignatureExpired, URLSafeTimedSerializer
from itsdangerous.encoding import base64_encode, int_to_bytes

logger = logging.getLogger(__name__)

FORMAT = 1
# (day, endpoint, strategy, model_version, experiment, variant)
CounterKey = tuple[str, str, str, str, str, str]


class ShownList(NamedTuple):
    """A list as it was shown: what a ``recommendation_id`` says (a named tuple: one is
    made per response, and a frozen dataclass takes several times longer to build)."""

    endpoint: str
    strategy: str
    model_version: str
    experiment: str
    variant: str
    shopper_id: str | None
    items: Sequence[str]
    shown_at: float = 0.0

    def position(self, item_id: str) -> int | None:
        """1 for the first item shown; None when the list did not show the item."""
        try:
            return self.items.index(item_id) + 1
        except ValueError:
            return None


def _base64(data: bytes) -> bytes:
    """itsdangerous' ``base64_encode`` (URL-safe, no padding) of bytes, without its check
    that they are bytes."""
    return urlsafe_b64encode(data).rstrip(b"=")


class Tracer:
    """Signs and reads ``recommendation_id`` values with one secret.

    The format is itsdangerous' ``URLSafeTimedSerializer`` without its zlib step (a list of
    ten ids gains little from it): base64(JSON) "." base64(time) "." base64(HMAC-SHA1 with a
    key derived from the secret and salt). Reading goes through itsdangerous; issuing writes
    the same format itself (the JSON by orjson, non-ASCII as UTF-8, which itsdangerous' reader
    takes alike), with the key derived once: itsdangerous derives it, and makes a
    signer, for every id, and in a request (cold caches) that tripled the cost of the
    response's tracing (a test checks that itsdangerous reads what this writes).

    Parameters
    ----------
    secret : the same on every server that may read another's ids.
    max_age_seconds : an id older than this no longer attributes (the attribution window).
    """

    def __init__(self, secret: str, max_age_seconds: float) -> None:
        self.serializer = URLSafeTimedSerializer(secret, salt="recommender.recommendation_id")
        key = self.serializer.make_signer(self.serializer.salt).derive_key()
        self._mac = hmac.new(key, digestmod=hashlib.sha1)  # copied per id: no key setup
        self._stamp_second = -1
        self._stamp = b""
        self.max_age_seconds = max_age_seconds

    def issue(self, shown: ShownList, now: float | None = None) -> str:
        """The list's ``recommendation_id``, signed at ``now`` (default: the clock's time)."""
        payload = _base64(
            orjson.dumps(
                [
                    FORMAT,
                    shown.endpoint,
                    shown.strategy,
                    shown.model_version,
                    shown.experiment,
                    shown.variant,
                    shown.shopper_id,
                    shown.items,
                ]
            )
        )
        second = int(time.time() if now is None else now)
        if second != self._stamp_second:
            self._stamp_second, self._stamp = second, base64_encode(int_to_bytes(second))
        signed = payload + b"." + self._stamp
        mac = self._mac.copy()
        mac.update(signed)
        return (signed + b"." + _base64(mac.digest())).decode("ascii")

    def read(self, token: str) -> ShownList | str:
        """The list, or why it cannot attribute: ``expired`` or ``forged`` (a bad signature,
        or not an id at all)."""
        try:
            payload, signed_at = self.serializer.loads(
                token, max_age=int(self.max_age_seconds), return_timestamp=True
            )
        except SignatureExpired:
            return "expired"
        except BadData:
            return "forged"
        try:
            version, endpoint, strategy, model, experiment, variant, shopper, items = payload
        except (TypeError, ValueError):
            return "forged"
        if version != FORMAT:
            return "forged"
        return ShownList(
            endpoint,
            strategy,
            model,
            experiment,
            variant,
            shopper,
            tuple(items),
            signed_at.timestamp(),
        )


class ImpressionCounter:
    """Impression counts (lists and items shown) and experiment exposures, kept in the
    worker and handed to ``write`` (the store's ``add_impressions``) by a background thread.

    ``write`` failing (the store away) keeps the counts for the next try. The thread starts
    with the first count in each process, so a count made after gunicorn forks is written
    by the worker that made it.
    """

    def __init__(
        self,
        write: Callable[[dict[CounterKey, tuple[int, int]], dict], None],
        interval: float = 5.0,
    ) -> None:
        self.write = write
        self.interval = interval
        self._counts: dict[CounterKey, list[int]] = {}
        self._exposures: dict[tuple[str, str], list] = {}
        self._lock = threading.Lock()
        self._started = False
        self._stop = threading.Event()
        # A fork copies the parent's counts (they are the parent's to write) and not its
        # thread: the child starts its own with its first count.
        os.register_at_fork(after_in_child=self._forget_parent)

    def add(
        self,
        key: CounterKey,
        items: int,
        exposure: tuple[str, str, str] | None = None,
        now: float | None = None,
    ) -> None:
        """Count one list of ``items`` items; ``exposure`` is (experiment, variant, shopper)."""
        if not self._started:
            self._start()
        with self._lock:
            counted = self._counts.get(key)
            if counted is None:
                self._counts[key] = [1, items]
            else:
                counted[0] += 1
                counted[1] += items
            if exposure is not None:
                experiment, variant, shopper = exposure
                seen = self._exposures.get((experiment, shopper))
                if seen is None:
                    self._exposures[(experiment, shopper)] = [
                        variant,
                        1,
                        time.time() if now is None else now,
                    ]
                else:
                    seen[1] += 1

    def flush(self) -> bool:
        """Write what was counted; True when nothing is left over."""
        with self._lock:
            counts, self._counts = self._counts, {}
            exposures, self._exposures = self._exposures, {}
        if not counts and not exposures:
            return True
        try:
            self.write(
                {key: (lists, items) for key, (lists, items) in counts.items()},
                {key: tuple(value) for key, value in exposures.items()},
            )
            return True
        except Exception as exc:  # the store away: keep the counts for the next try
            logger.warning("impressions not written yet (kept for the next try): %s", exc)
            with self._lock:
                for key, (lists, items) in counts.items():
                    counted = self._counts.setdefault(key, [0, 0])
                    counted[0] += lists
                    counted[1] += items
                for shopper_key, (variant, lists, first_at) in exposures.items():
                    seen = self._exposures.setdefault(shopper_key, [variant, 0, first_at])
                    seen[1] += lists
            return False

    def pending(self) -> int:
        """Lists counted and not written yet."""
        with self._lock:
            return sum(lists for lists, _ in self._counts.values())

    def close(self) -> None:
        """Stop the thread and write what is left (at exit, and when the app is closed)."""
        self._stop.set()
        if self._started:
            self.flush()

    def _start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
            self._stop = threading.Event()
        threading.Thread(target=self._run, name="impressions", daemon=True).start()
        atexit.register(self.close)

    def _forget_parent(self) -> None:
        self._started = False
        self._lock = threading.Lock()
        self._counts, self._exposures = {}, {}

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()


def counter_key(day: str, shown: ShownList) -> CounterKey:
    return (
        day,
        shown.endpoint,
        shown.strategy,
        shown.model_version,
        shown.experiment,
        shown.variant,
    )
