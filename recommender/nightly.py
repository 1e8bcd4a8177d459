"""The nightly job: new data in, a better model out, the server switched over, old data pruned.

Steps: take the lock (one run at a time: a lock file in the models directory, and with
``--include-activity`` the activity store's own run lock, so that with one PostgreSQL shared
by several hosts, each running this from cron, one trains and the others exit 75); stop
early when neither the log nor the activity store changed since the serving model was
trained; train, evaluate, gate and promote
(``runner.train``); wait until the running server answers with the new version (it reloads
by itself when ``models/current`` changes, between requests, without a restart); delete
activity events older than the retention period. Progress bars in a terminal, plain log
lines under cron.
"""

from __future__ import annotations

import fcntl
import json
import logging
import sys
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from . import artifacts, run_steps, runner
from .activity import ActivityStore
from .config import TrainConfig
from .errors import BusyError, DataError, NightlyBusyError, StoreError

logger = logging.getLogger(__name__)
LOCK_NAME = ".nightly.lock"


def run(config: TrainConfig, progress: bool | None = None) -> dict[str, Any]:
    """Run the nightly cycle once; return what it did (``status``: trained, nothing new)."""
    from tqdm import tqdm

    show = sys.stderr.isatty() if progress is None else progress
    models_dir = Path(config.models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    store = (
        ActivityStore(
            config.include_activity,
            history_limit=10**9,
            history_days=config.event_retention_days,
            password=config.activity_db_password,
        )
        if config.include_activity
        else None
    )
    with open(models_dir / LOCK_NAME, "a+") as lock, ExitStack() as held:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise NightlyBusyError(
                f"{models_dir / LOCK_NAME}: another nightly run is in progress"
            ) from None
        if store is not None:
            held.callback(store.close)
            try:
                held.enter_context(store.run_lock("nightly"))
            except BusyError as exc:
                raise NightlyBusyError(str(exc)) from None
            except StoreError as exc:
                raise DataError(f"include_activity: {exc}") from None
        steps = [
            "look for new data",
            "train, evaluate, gate, promote",
            "server reload",
            "prune old events",
        ]
        with tqdm(total=len(steps), desc="nightly", unit="step", disable=not show) as bar:

            def step(name: str) -> None:
                bar.set_postfix_str(name)
                if not show:
                    logger.info("nightly: %s", name)

            step(steps[0])
            signature = run_steps.data_signature(config)
            current = artifacts.current_version(models_dir)
            manifest = artifacts.read_manifest(models_dir, current) if current else None
            unchanged = (
                signature.get("log_sha256") is not None
                and manifest
                and (manifest.get("data", {}).get("signature") == signature)
            )
            if unchanged and not config.force:
                logger.info("nightly: nothing new since model %s; done", current)
                return {"status": "nothing new", "version": current}
            bar.update(1)

            step(steps[1])
            version = runner.train(config).name
            bar.update(1)

            step(steps[2])
            reload = (
                wait_for_server(config.server_url, version)
                if config.server_url
                else "no server_url given"
            )
            bar.update(1)

            step(steps[3])
            pruned = store.prune() if store is not None and store.exists() else 0
            bar.update(1)
    result = {"status": "trained", "version": version, "server": reload, "events_pruned": pruned}
    logger.info("nightly: %s", result)
    return result


def wait_for_server(server_url: str, version: str, timeout: float = 60.0) -> str:
    """Poll the server's ``/ready`` until it serves ``version``; say what happened."""
    deadline = time.monotonic() + timeout
    served = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(server_url.rstrip("/") + "/ready", timeout=5) as response:
                served = json.loads(response.read()).get("model_version")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            served = f"unreachable ({exc})"
        if served == version:
            return f"serving {version}"
        time.sleep(1.0)
    logger.warning("the server at %s still serves %s, not %s", server_url, served, version)
    return f"still serving {served} after {timeout:.0f}s"
