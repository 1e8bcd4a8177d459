"""Command lines of ``train.py`` and ``serve.py``: parse options, configure logging, map errors to exit codes.

Exit codes: 0 success, 2 bad input or configuration (a one-line message naming the file,
field or option), 3 a new model refused by the promotion gate, 75 another nightly or alerts
run holds the lock, 1 anything else (a one-line message; ``--verbose`` adds the traceback).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import AlertsConfig, ServeConfig, TrainConfig, load_config, load_experiments
from .errors import BusyError, ConfigError, DataError, GateRefusedError, RecommenderError

logger = logging.getLogger("recommender")


TRAIN_HELP = {
    "data": "purchase log: CSV (plain or gzip), Parquet, or baskets file",
    "models_dir": "where model versions and the 'current' link live",
    "format": "input format: auto, csv, parquet, baskets",
    "preset": "column names preset: auto, generic, online_retail",
    "columns": "column mapping, e.g. user_id=cust,item_id=sku,timestamp=ts",
    "catalog": "CSV/Parquet with item_id and optional name, price, category, available",
    "encoding": "text encoding of CSV input",
    "similarity": "item-to-item similarity: cosine, bm25, tfidf",
    "neighbours": "neighbours kept per item (K)",
    "min_support": "minimum buyers for an item to get neighbours",
    "min_pair_support": "minimum shared buyers for two items to be neighbours",
    "weighting": "customer x item cell value for item-to-item: binary, count, log",
    "excluded_items": "comma-separated non-product codes to drop",
    "item_pattern": "regular expression that product ids must match",
    "include_activity": "activity store (SQLite file or postgresql:// URL) whose purchases join the log",
    "activity_db": "activity store: a SQLite file or a postgresql://user@host:port/db URL",
    "activity_db_password": "PostgreSQL password (better: RECO_ACTIVITY_DB_PASSWORD or PGPASSWORD)",
    "als_confidence": "ALS confidence weighting: binary, log, bm25",
    "trending_half_life_days": "age at which a sale counts half for trending (untuned blend)",
    "keep_versions": "model versions kept on disk",
    "num_threads": "threads for implicit (0 = all cores)",
    "max_history": "item-to-item counts each customer's most recent N items only (0 = all)",
    "personal_list_depth": "each known customer's best N candidates precomputed (0 = score per request)",
    "personal_list_days": "precompute lists only for customers who bought within N days of the log's end "
    "(0 = all): two thirds of the shipped log's customers at 90; the rest are scored per request",
    "engine": "training engine: local (pandas + implicit) or spark (pip install .[spark])",
    "spark_master": "Spark master URL (default: local[*], or what spark-submit set)",
    "spark_driver_memory": "driver memory when train.py starts Spark itself (spark-submit sets its own)",
    "spark_partitions": "Spark shuffle partitions (0 = 2 per core of the master)",
}
ALERTS_HELP = {
    "rules": "alerts to find: back_in_stock,price_drop,new_for_you (default), time_to_reorder (opt-in)",
    "price_drop": "price-drop alert when the price fell by at least this fraction since the interest",
    "interest_days": "views and carts this recent count as interest (wish-list items always do)",
    "new_days": "new-for-you: items first sold within this many days of the newest one",
    "new_top": "new-for-you: ... that are among the customer's personal top N",
    "reorder_top": "time-to-reorder: at most this many reminders per customer",
    "reorder_max_overdue": "time-to-reorder: not for items overdue by more than this many intervals",
    "cap_days": "at most one digest per customer per this many days",
    "smtp_host": "mail server to send the digests through (none: file only)",
    "smtp_password": "SMTP password (better: RECO_SMTP_PASSWORD in the environment)",
    "sender": "From: address of the digests",
    "unsubscribe_url": "unsubscribe link; {user_id} is replaced by the customer's id",
}
SERVE_HELP = {
    "models_dir": "directory with the 'current' model link",
    "host": "address to listen on",
    "workers": "gunicorn worker processes",
    "threads": "threads per gunicorn worker (1: sync workers, the default; more: gthread)",
    "activity_db": "activity store (events, wish lists, privacy): a SQLite file or a postgresql:// URL",
    "activity_db_password": "PostgreSQL password (better: RECO_ACTIVITY_DB_PASSWORD or PGPASSWORD)",
    "customers_file": "CSV with id,name[,opted_out]: greetings and opt-outs",
    "request_log": "where the JSON line of each request goes: - for stderr, a file, or empty for none",
    "tracing": "sign a recommendation_id into every list and count impressions",
    "trace_secret": "key that signs recommendation ids (better: RECO_TRACE_SECRET; unset: kept in the store)",
    "attribution_days": "an event citing a recommendation_id older than this is not attributed",
    "impressions_flush_seconds": "each worker writes its impression counts this often",
}


def train_main(argv: Sequence[str] | None = None) -> int:
    """``train.py``: train on a purchase log and promote the new model version."""
    parser = argparse.ArgumentParser(
        prog="train.py", description="Train on a purchase log and promote the new model version."
    )
    _add_config_options(parser, TrainConfig, TRAIN_HELP, "train")
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)

    def work() -> None:
        from . import runner

        config = load_config(TrainConfig, args.config, _overrides(args))
        path = runner.train(config)
        print(f"trained model version {path.name} in {config.models_dir}")

    return _guarded(work, args.verbose)


def serve_main(argv: Sequence[str] | None = None) -> int:
    """``serve.py``: serve the current model over HTTP (gunicorn; ``--dev`` for Flask's server)."""
    parser = argparse.ArgumentParser(
        prog="serve.py", description="Serve the current model over HTTP."
    )
    _add_config_options(parser, ServeConfig, SERVE_HELP, "serve")
    parser.add_argument(
        "--dev", action="store_true", help="Flask's development server (not for production)"
    )
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    _single_threaded_blas()

    def work() -> None:
        from .server import create_app, wsgi

        config = load_config(ServeConfig, args.config, _overrides(args))
        app_config: dict[str, Any] = {
            **vars(config),
            "alerts": vars(load_config(AlertsConfig, args.config)),
            "experiments": load_experiments(args.config),
        }
        if args.dev:
            wsgi.configure_request_log(config.request_log)
            create_app(app_config).run(
                host=config.host, port=config.port, debug=False, threaded=True
            )
        else:
            wsgi.run_gunicorn(config, app_config)

    return _guarded(work, args.verbose)


def nightly_main(argv: Sequence[str] | None = None) -> int:
    """``python -m recommender nightly``: the unattended retrain (see ``recommender.nightly``)."""
    parser = argparse.ArgumentParser(
        prog="python -m recommender nightly",
        description="Ingest, train, evaluate, gate, promote, reload, prune.",
    )
    _add_config_options(parser, TrainConfig, TRAIN_HELP, "train")
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)

    def work() -> None:
        from . import nightly

        config = load_config(TrainConfig, args.config, _overrides(args))
        result = nightly.run(config)
        print(" ".join(f"{key}={value}" for key, value in result.items()))

    return _guarded(work, args.verbose)


def export_main(argv: Sequence[str] | None = None) -> int:
    """``python -m recommender export``: each customer's top picks for an e-mail campaign."""
    parser = argparse.ArgumentParser(
        prog="python -m recommender export",
        description="Write every customer's top-k recommendations to CSV or JSON Lines.",
    )
    parser.add_argument("--out", required=True, help="output file, or - for standard output")
    parser.add_argument("--k", default="10", help="recommendations per customer (default 10)")
    parser.add_argument(
        "--format", choices=("csv", "jsonl"), default="csv", help="output format (default csv)"
    )
    parser.add_argument("--jobs", default="2", help="parallel batches (default 2)")
    _add_config_options(parser, ServeConfig, SERVE_HELP, "serve")
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)

    def work() -> None:
        from . import artifacts, export
        from .customers import read_customers
        from .serving.service import RecommendationService

        overrides = {
            k: v for k, v in _overrides(args).items() if k not in ("out", "k", "format", "jobs")
        }
        config = load_config(ServeConfig, args.config, overrides)
        k, jobs = _positive_int("k", args.k), _positive_int("jobs", args.jobs)
        service = RecommendationService(artifacts.load_current_bundle(config.models_dir))
        excluded = read_customers(config.customers_file).opted_out | _forgotten(config)
        counts = export.export(service, args.out, k, args.format, excluded, jobs=jobs)
        print(
            f"exported {counts['customers']} customers "
            f"({counts['skipped']} opted out or forgotten) to {args.out}",
            file=sys.stderr,
        )

    return _guarded(work, args.verbose)


def alerts_main(argv: Sequence[str] | None = None) -> int:
    """``python -m recommender alerts``: back-in-stock, price-drop and new-for-you alerts, to a
    file for the shop's mail tool and/or by e-mail (``--smtp-host``)."""
    parser = argparse.ArgumentParser(
        prog="python -m recommender alerts",
        description="Find the alerts due (back in stock, price dropped, new for you) and deliver "
        "them: one digest per customer, by e-mail when smtp_host is set, and/or to --out (CSV, "
        "or JSON Lines for .jsonl).",
    )
    parser.add_argument("--out", help="alerts file for the shop's mail tool (.csv or .jsonl)")
    parser.add_argument(
        "--catalog", help="record this catalog file's prices and availability first (CSV/Parquet)"
    )
    _add_config_options(parser, ServeConfig, SERVE_HELP, "serve")
    _add_config_options(parser, AlertsConfig, ALERTS_HELP, "alerts", common=False)
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    _single_threaded_blas()

    def work() -> None:
        from . import alerts

        given = _overrides(args)
        alert_fields = {spec.name for spec in dataclasses.fields(AlertsConfig)}
        config = load_config(
            ServeConfig,
            args.config,
            {
                k: v
                for k, v in given.items()
                if k not in alert_fields and k not in ("out", "catalog")
            },
        )
        settings = load_config(
            AlertsConfig, args.config, {k: v for k, v in given.items() if k in alert_fields}
        )
        if not args.out and not settings.smtp_host:
            raise ConfigError(
                "out: give --out FILE and/or --smtp-host (nowhere to deliver the alerts)"
            )
        out = Path(args.out) if args.out else None
        if out is not None and out.suffix not in (".csv", ".jsonl"):
            raise ConfigError(f"out: {out.name} must end in .csv or .jsonl")
        catalog = None
        if args.catalog:
            from .data.catalog import catalog_states
            from .data.loading import read_catalog

            catalog = catalog_states(read_catalog(args.catalog))
        counts = alerts.run(config, settings, out, catalog)
        print(
            f"alerts: {counts['alerts']} alerts in {counts['digests']} digests"
            + (f" to {out}" if out else "")
            + (f" by e-mail via {settings.smtp_host}" if settings.smtp_host else "")
            + f"; {counts['capped']} customers capped, {counts['no_address']} without an address, "
            f"{counts['resent']} unconfirmed e-mails of an earlier run sent",
            file=sys.stderr,
        )

    return _guarded(work, args.verbose)


def experiments_main(argv: Sequence[str] | None = None) -> int:
    """``python -m recommender experiments list|report NAME``: the experiments in the activity
    store and what each variant earned (the same report as the admin endpoint)."""
    parser = argparse.ArgumentParser(
        prog="python -m recommender experiments",
        description="List the experiments, or report one: per variant with 95%% intervals, and "
        "each variant against control (difference, interval, p-value), read from the store.",
    )
    parser.add_argument("action", choices=("list", "report"))
    parser.add_argument("name", nargs="?", help="the experiment to report")
    parser.add_argument(
        "--lift", help="relative lift to size the test for (default: the experiment's)"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    _add_config_options(parser, ServeConfig, SERVE_HELP, "serve")
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)

    def work() -> None:
        from .activity import ActivityStore
        from .experiments.stored import as_text, describe, report, stored

        given = {
            k: v for k, v in _overrides(args).items() if k not in ("action", "name", "lift", "json")
        }
        config = load_config(ServeConfig, args.config, given)
        store = ActivityStore(config.activity_db, password=config.activity_db_password)
        if not store.exists():
            raise ConfigError(
                f"activity_db: {store.where} does not exist (no server has run on it)"
            )
        try:
            if args.action == "list":
                for experiment, row in stored(store):
                    print(
                        json.dumps(describe(experiment, row))
                        if args.json
                        else f"{experiment.name}\t{row.status}"
                    )
                return
            if not args.name:
                raise ConfigError("name: give the experiment to report")
            lift = None
            if args.lift is not None:
                try:
                    lift = float(args.lift)
                except ValueError:
                    raise ConfigError(f"lift: must be a number, got {args.lift!r}") from None
                if not 0 < lift <= 10:
                    raise ConfigError("lift: must be more than 0 and at most 10")
            found = report(store, args.name, lift)
            if found is None:
                raise ConfigError(f"name: no experiment {args.name!r} in {store.where}")
            print(json.dumps(found, indent=2) if args.json else as_text(found))
        finally:
            store.close()

    return _guarded(work, args.verbose)


def _single_threaded_blas() -> None:
    """One BLAS thread per serving thread: the server scales with gunicorn processes and
    threads, and a multithreaded BLAS under them (a matrix-vector product per request)
    oversubscribes the cores and spins. Set before numpy loads, so every worker inherits it;
    an operator's own setting wins."""
    import os

    for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, "1")


def _forgotten(config: ServeConfig) -> frozenset[str]:
    """Customers whose data must not be used (the activity store's suppression list, if any)."""
    from .activity import ActivityStore

    store = ActivityStore(config.activity_db, password=config.activity_db_password)
    try:
        return frozenset(store.suppressed()) if store.exists() else frozenset()
    finally:
        store.close()


def _positive_int(name: str, raw: str) -> int:
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"{name}: must be a positive integer, got {raw!r}")
    return int(raw)


def _add_config_options(
    parser: argparse.ArgumentParser,
    cls: type,
    help_texts: dict[str, str],
    section: str,
    common: bool = True,
) -> None:
    """One ``--option`` per config field, so every setting can be given on the command line.

    Values stay strings here; ``load_config`` converts and validates them with the same
    messages as for files and environment variables.
    """
    if common:
        parser.add_argument("--config", help=f"TOML file with a [{section}] table")
    for spec in dataclasses.fields(cls):
        flag = "--" + spec.name.replace("_", "-")
        default = (
            spec.default if spec.default is not dataclasses.MISSING else spec.default_factory()  # type: ignore[operator]
        )
        shown = ",".join(default) if isinstance(default, tuple) else default
        text = (
            f"{help_texts.get(spec.name, spec.name.replace('_', ' '))} (default: {shown or 'none'})"
        )
        if str(spec.type) == "bool":
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None, help=text
            )
        else:
            parser.add_argument(
                flag, dest=spec.name, default=None, metavar=spec.name.upper(), help=text
            )
    if common:
        parser.add_argument(
            "-v", "--verbose", action="store_true", help="debug logging and tracebacks"
        )


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        key: value for key, value in vars(args).items() if key not in ("config", "verbose", "dev")
    }


def _guarded(work: Any, verbose: bool) -> int:
    try:
        return _exit_code(work, verbose)
    finally:
        # What the work left in reference cycles (a failed read's frames holding an Arrow
        # table, say) is freed now, while Arrow's thread pool still runs: freed during the
        # interpreter's teardown instead, it could abort the process ("terminate called
        # without an active exception", exit 134; seen about once in 30 failed reads of a
        # header-only CSV on a loaded machine), losing the exit code.
        gc.collect()


def _exit_code(work: Any, verbose: bool) -> int:
    try:
        work()
    except (DataError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except GateRefusedError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 3
    except BusyError as exc:
        print(f"busy: {exc}", file=sys.stderr)
        return 75
    except RecommenderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the last line of defence: one line, no traceback unless asked
        if verbose:
            logger.exception("unexpected error")
        print(
            f"error: unexpected {type(exc).__name__}: {exc} (rerun with --verbose)", file=sys.stderr
        )
        return 1
    return 0


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
