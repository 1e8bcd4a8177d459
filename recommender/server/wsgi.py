"""Running the app in production: gunicorn as a library, and the per-request log.

``run_gunicorn`` is what ``serve.py`` calls; ``configure_request_log`` sets up the JSON line
each request writes (through a queue, off the request path) in every server process.
"""

from __future__ import annotations

import sys
from typing import Any

from ..config import ServeConfig

# The most gunicorn accepts (``limit_request_line``; 0 would mean unlimited, which it advises against).
MAX_REQUEST_LINE = 8190


def run_gunicorn(config: ServeConfig, app_config: dict[str, Any]) -> None:
    """gunicorn with the app loaded in each worker; metrics shared through a fresh directory."""
    import gc
    import os
    import tempfile

    metrics_dir = tempfile.mkdtemp(prefix="recommender-metrics-")
    # prometheus_client decides at import whether it runs in multiprocess mode: set it first.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    from gunicorn.app.base import BaseApplication

    # Imported here, not in the hook: gunicorn calls the hook from its SIGCHLD handler, and two
    # workers exiting together would re-enter a half-done import ("partially initialized module").
    from prometheus_client import multiprocess

    from . import create_app

    def child_exit(server: Any, worker: Any) -> None:
        multiprocess.mark_process_dead(worker.pid)

    def worker_exit(server: Any, worker: Any) -> None:
        # A worker stopping (SIGTERM, SIGQUIT, max_requests) writes the impressions it counted.
        app = getattr(worker, "wsgi", None)
        if app is not None:
            app.extensions["recommender_tracing"].counter.close()

    class Server(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", f"{config.host}:{config.port}")
            self.cfg.set("workers", config.workers)
            self.cfg.set("threads", config.threads)
            self.cfg.set("worker_class", "gthread" if config.threads > 1 else "sync")
            self.cfg.set("accesslog", None)
            # gunicorn's longest request line (its default is 4094 bytes): a longer URL gets
            # gunicorn's own HTML 400 before the app sees it, so an over-long id would not get
            # the app's JSON 400 naming the parameter. Beyond this, gunicorn still answers.
            self.cfg.set("limit_request_line", MAX_REQUEST_LINE)
            self.cfg.set("child_exit", child_exit)
            self.cfg.set("worker_exit", worker_exit)
            # The app (code, libraries, model maps) is loaded once in the master and shared
            # copy-on-write by the workers, so an added worker costs little memory.
            self.cfg.set("preload_app", True)
            # Python's collector writes to every object it visits, which copies the shared
            # pages into each worker; objects that exist at the fork are frozen out of it.
            self.cfg.set("pre_fork", lambda server, worker: gc.freeze())
            self.cfg.set(
                "post_fork", lambda server, worker: configure_request_log(config.request_log)
            )

        def load(self) -> Any:
            return create_app(app_config)

    try:
        Server().run()
    finally:
        import shutil

        shutil.rmtree(metrics_dir, ignore_errors=True)


def configure_request_log(request_log: str | None) -> None:
    """The server's per-request JSON lines go through a queue (a request only enqueues its
    fields; a background thread writes the lines) to ``request_log`` ("-" = stderr), or
    nowhere when it is empty. Called in each server process (gunicorn: after the worker
    forks, since a thread does not survive a fork)."""
    import atexit

    from . import observability

    if not request_log:
        observability.request_log = None
        return
    stream = sys.stderr if request_log == "-" else open(request_log, "a", encoding="utf-8")  # noqa: SIM115
    observability.request_log = observability.RequestLog(stream)
    atexit.register(observability.request_log.close)
