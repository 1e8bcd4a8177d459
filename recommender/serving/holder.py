"""Which model version serves: the one ``current`` points at, swapped in when it changes."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import artifacts
from ..errors import ArtifactError
from .service import RecommendationService

logger = logging.getLogger(__name__)


class ModelHolder:
    """Keeps the service of the version ``current`` points at, reloading when it changes.

    The link is checked at most every ``reload_interval`` seconds. A new version is loaded
    and verified beside the old one and swapped in with one assignment; a version that fails
    to load is logged and skipped, and the old one keeps serving.
    """

    def __init__(
        self,
        models_dir: str | Path,
        reload_interval: float = 2.0,
        on_load: Callable[[str, str | None], None] | None = None,
        **service_options: Any,
    ) -> None:
        self.models_dir = Path(models_dir)
        self.on_load = on_load
        self.reload_interval = reload_interval
        self.service_options = service_options
        self.service: RecommendationService | None = None
        self.last_error: str | None = None
        self._rejected_version: str | None = None
        self._checked_at = -math.inf
        self._lock = threading.Lock()
        # Versions an experiment serves beside the current one (None: it failed to load).
        self._others: dict[str, RecommendationService | None] = {}
        self._others_lock = threading.Lock()
        self.refresh(force=True)

    def get(self) -> RecommendationService | None:
        """The current service, after a cheap check (one ``readlink``) if the interval has passed."""
        if time.monotonic() - self._checked_at >= self.reload_interval:
            self.refresh()
        return self.service

    def refresh(self, force: bool = False) -> None:
        if not self._lock.acquire(blocking=force):
            return
        try:
            self._checked_at = time.monotonic()
            try:
                version = artifacts.current_version(self.models_dir)
            except ArtifactError as exc:
                self.last_error = str(exc)
                return
            loaded = self.service.version if self.service else None
            if version is None:
                self.last_error = "no trained model yet; run make train"
                return
            if version in (loaded, self._rejected_version):
                return
            try:
                bundle = artifacts.load_bundle(self.models_dir / version)
                self.service = RecommendationService(bundle, **self.service_options)
                self.last_error = None
                logger.info("serving model version %s", version)
                if self.on_load is not None:
                    self.on_load(self.service.version, self.service.manifest.get("created_at"))
            except ArtifactError as exc:
                self._rejected_version = version
                self.last_error = f"model version {version} refused: {exc}"
                logger.error("refusing model version %s, keeping %s: %s", version, loaded, exc)
        finally:
            self._lock.release()

    def version_service(self, version: str) -> RecommendationService | None:
        """The service of another version (an experiment's variant), loaded once beside the
        current one and memory-mapped like it; None when it cannot be loaded (logged once)."""
        current = self.get()
        if current is not None and current.version == version:
            return current
        if version in self._others:
            return self._others[version]
        with self._others_lock:
            if version not in self._others:
                try:
                    bundle = artifacts.load_bundle(self.models_dir / version)
                    self._others[version] = RecommendationService(bundle, **self.service_options)
                    logger.info("serving model version %s beside the current one", version)
                except (ArtifactError, OSError) as exc:
                    self._others[version] = None
                    logger.error("cannot load model version %s for an experiment: %s", version, exc)
        return self._others[version]

    def keep_versions(self, versions: set[str]) -> None:
        """Let go of the other versions no running experiment serves (their maps close)."""
        with self._others_lock:
            for version in set(self._others) - versions:
                del self._others[version]
