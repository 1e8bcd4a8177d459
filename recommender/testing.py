"""Helpers for tests and benchmarks that need real servers (as lkpy's ``lenskit.testing``):
a free port on 127.0.0.1 and a throwaway PostgreSQL cluster. Not used by the service itself."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

PG_PASSWORD = "test-secret"


class PostgresMissing(RuntimeError):
    """Debian's ``postgresql`` package is not installed (``make install-postgres``)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresCluster:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (Debian's ``postgresql`` package), run as
    the ``postgres`` user when the caller is root (PostgreSQL refuses root), with password
    authentication as a shop's would have. ``stop``/``start`` take it away and back."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not found:
            raise PostgresMissing(
                "PostgreSQL is not installed (make install-postgres installs Debian's package)"
            )
        self.bin = Path(found[-1]).parent
        # Not under pytest's own temporary directory: the postgres user cannot enter it.
        self.root, self.port = Path(tempfile.mkdtemp(prefix="recommender-pg-")), free_port()
        self.data = self.root / "data"
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        self.databases = 0
        try:
            password_file = self.root / "password"
            password_file.write_text(PG_PASSWORD)
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "scram-sha-256",
                      "--pwfile", str(password_file), "-E", "UTF8", "--no-sync")  # fmt: skip
            self.start()
        except BaseException:
            # A cluster that never started leaves nothing behind.
            shutil.rmtree(self.root, ignore_errors=True)
            raise

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed: {done.stderr.strip() or done.stdout.strip()}")

    def start(self) -> None:
        options = f"-h 127.0.0.1 -p {self.port} -k {self.root} -c fsync=off -c max_connections=200"
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.root / "log"),
            "-w",
            "start",
        )

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        """Stop (if running) and delete the cluster."""
        try:
            self.stop()
        except RuntimeError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres", password: bool = True) -> str:
        secret = f":{PG_PASSWORD}" if password else ""
        return f"postgresql://postgres{secret}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database's URL."""
        import psycopg

        self.databases += 1
        name = f"shop{self.databases}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return self.url(name)
