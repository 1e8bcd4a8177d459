"""Command lines of ``train.py`` and ``serve.py``: parse options, configure logging, map errors to exit codes.

Exit codes: 0 success, 2 bad input or configuration (a one-line message naming the file,
field or option), 1 anything else (a one-line message; ``--verbose`` adds the traceback).
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from .config import FORMATS, PRESETS, SIMILARITIES, WEIGHTINGS, ServeConfig, TrainConfig, load_config
from .errors import ConfigError, DataError, RecommenderError

logger = logging.getLogger("recommender")


def train_main(argv: Sequence[str] | None = None) -> int:
    """``train.py``: train on a purchase log and promote the new model version."""
    parser = argparse.ArgumentParser(prog="train.py", description=train_main.__doc__)
    parser.add_argument("--data", help="purchase log: CSV (plain or gzip), Parquet, or baskets file")
    parser.add_argument("--models-dir", help="where model versions and the 'current' link live")
    parser.add_argument("--config", help="TOML file with a [train] table")
    parser.add_argument("--format", choices=FORMATS, help="input format (default: auto)")
    parser.add_argument("--preset", choices=PRESETS, help="column names preset (default: auto)")
    parser.add_argument("--columns", help="column mapping, e.g. user_id=cust,item_id=sku,timestamp=ts")
    parser.add_argument("--catalog", help="CSV/Parquet with item_id and optional name, price")
    parser.add_argument("--encoding", help="text encoding of CSV input (default utf-8)")
    parser.add_argument("--similarity", choices=SIMILARITIES, help="item-to-item similarity")
    parser.add_argument("--neighbours", type=int, help="neighbours kept per item (K)")
    parser.add_argument("--min-support", type=int, help="minimum buyers for an item to get neighbours")
    parser.add_argument("--min-pair-support", type=int, help="minimum shared buyers for two items to be neighbours")
    parser.add_argument("--weighting", choices=WEIGHTINGS, help="customer x item cell value")
    parser.add_argument("--item-pattern", help="regular expression that product ids must match")
    parser.add_argument("--keep-versions", type=int, help="model versions kept on disk")
    parser.add_argument("--num-threads", type=int, help="threads for implicit (0 = all cores)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks")
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)

    def work() -> None:
        from threadpoolctl import threadpool_limits

        from . import training

        overrides = {key: value for key, value in vars(args).items() if key not in ("config", "verbose")}
        config = load_config(TrainConfig, args.config, overrides)
        with threadpool_limits(limits=1, user_api="blas"):
            path = training.run(config)
        print(f"trained model version {path.name} in {config.models_dir}")

    return _guarded(work, args.verbose)


def serve_main(argv: Sequence[str] | None = None) -> int:
    """``serve.py``: serve the current model over HTTP (gunicorn; ``--dev`` for Flask's server)."""
    parser = argparse.ArgumentParser(prog="serve.py", description=serve_main.__doc__)
    parser.add_argument("--models-dir", help="directory with the 'current' model link")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default 8000)")
    parser.add_argument("--workers", type=int, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, help="threads per gunicorn worker")
    parser.add_argument("--config", help="TOML file with a [serve] table")
    parser.add_argument("--dev", action="store_true", help="Flask's development server (not for production)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks")
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)

    def work() -> None:
        overrides = {k: v for k, v in vars(args).items() if k not in ("config", "dev", "verbose")}
        config = load_config(ServeConfig, args.config, overrides)
        app_config = {key: value for key, value in vars(config).items()}
        if args.dev:
            from .server import create_app

            create_app(app_config).run(host=config.host, port=config.port, debug=False, threaded=True)
        else:
            _run_gunicorn(config, app_config)

    return _guarded(work, args.verbose)


def _run_gunicorn(config: ServeConfig, app_config: dict[str, Any]) -> None:
    from gunicorn.app.base import BaseApplication

    from .server import create_app

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            self.cfg.set("bind", f"{config.host}:{config.port}")
            self.cfg.set("workers", config.workers)
            self.cfg.set("threads", config.threads)
            self.cfg.set("worker_class", "gthread" if config.threads > 1 else "sync")
            self.cfg.set("accesslog", None)

        def load(self) -> Any:
            return create_app(app_config)

    Server().run()


def _guarded(work: Any, verbose: bool) -> int:
    try:
        work()
    except (DataError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RecommenderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the last line of defence: one line, no traceback unless asked
        if verbose:
            logger.exception("unexpected error")
        print(f"error: unexpected {type(exc).__name__}: {exc} (rerun with --verbose)", file=sys.stderr)
        return 1
    return 0


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
