"""Every exception and warning class of the package; nothing else defines them.

The entry points map these to exit codes (``train.py``) and HTTP statuses (the server),
so a caller can tell bad input (``DataError``, ``ConfigError``) from a broken model
(``ArtifactError``) without parsing messages.
"""

from __future__ import annotations


class RecommenderError(Exception):
    """Base class of every error this package raises on purpose."""


class DataError(RecommenderError, ValueError):
    """The input log is unusable: missing file, unreadable, missing column, empty after cleaning."""


class ConfigError(RecommenderError, ValueError):
    """A parameter or configuration value is invalid; the message names it."""


class ArtifactError(RecommenderError):
    """A model directory is missing, incomplete, corrupted or of an unknown schema."""


class ModelSkippedError(RecommenderError):
    """A model cannot be fitted at this scale (say, EASE on a catalog too large to invert)."""


class GateRefusedError(RecommenderError):
    """A new model measured worse than the one serving; it was kept on disk but not promoted."""


class BusyError(RecommenderError):
    """Another run of the same job (nightly, alerts) holds its lock (exit code 75: try later)."""


class NightlyBusyError(BusyError):
    """Another nightly run holds the lock."""


class StoreError(RecommenderError):
    """The activity store refused a statement or holds a schema this version cannot use."""


class StoreUnavailable(StoreError):
    """The activity store cannot be reached now (database down, network): retry later (HTTP 503)."""


class NotFittedError(RecommenderError, ValueError, AttributeError):
    """A model was queried before ``fit`` (as scikit-learn's ``NotFittedError``)."""


class UnknownItemError(RecommenderError, KeyError):
    """An external item id that the model has never seen."""


class DeliveryError(RecommenderError):
    """The mail server could not be reached or refused the session (exit code 1)."""
