"""The Flask application factory (``create_app``), as in Flask's tutorial app.

Production: ``gunicorn 'recommender.server:create_app()'``. The factory reads the server
configuration once (``config.load_config``), loads the current model into
``app.extensions["recommender"]`` and registers one blueprint per resource.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask

from ..config import AlertsConfig, ServeConfig, load_config, load_experiments
from ..customers import read_customers
from ..serving.holder import ModelHolder

logger = logging.getLogger(__name__)


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app.

    Parameters
    ----------
    test_config : lower-case keys override ``ServeConfig`` fields (``models_dir``, ``max_k``,
        ...); upper-case keys go to Flask's own config (``TESTING``).
    """
    test_config = dict(test_config or {})
    # The alert rules (``[alerts]``, ``RECO_*``), for ``GET /v1/users/<id>/alerts``.
    alerts_config = load_config(AlertsConfig, overrides=test_config.pop("alerts", None))
    # The config file's ``[experiments.<name>]`` tables, started unless the store has them.
    seed_experiments = test_config.pop("experiments", None)
    if seed_experiments is None:
        seed_experiments = load_experiments()
    serve_config = load_config(
        ServeConfig, overrides={key: value for key, value in test_config.items() if key.islower()}
    )
    app = Flask(__name__)
    app.config.from_mapping(
        MAX_CONTENT_LENGTH=serve_config.max_body_bytes,
        **{key: value for key, value in test_config.items() if key.isupper()},
    )
    from . import encoding

    encoding.init_app(app)
    app.extensions["recommender_config"] = serve_config
    from .observability import note_model

    app.extensions["recommender"] = ModelHolder(
        serve_config.models_dir,
        serve_config.reload_interval,
        on_load=note_model,
        activity_half_life_hours=serve_config.activity_half_life_hours,
    )
    app.extensions["recommender_customers"] = read_customers(serve_config.customers_file)
    app.extensions["recommender_alerts"] = alerts_config
    app.extensions["recommender_seed_experiments"] = seed_experiments

    from . import (
        admin,
        errors,
        events,
        explorer,
        health,
        items,
        model,
        observability,
        openapi,
        performance,
        privacy,
        recommendations,
        stores,
        tracing,
        users,
    )

    errors.init_app(app)
    stores.init_app(app)
    tracing.init_app(app)
    observability.init_app(app)
    for blueprint in (
        health.bp,
        model.bp,
        items.bp,
        users.bp,
        privacy.bp,
        events.bp,
        recommendations.bp,
        admin.bp,
        performance.bp,
        openapi.bp,
        explorer.bp,
    ):
        app.register_blueprint(blueprint)
    return app
