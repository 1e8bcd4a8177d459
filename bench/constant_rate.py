"""Latency at a constant offered rate: requests sent on a fixed schedule, one every 1/rate
seconds, whatever the answers (open loop), each on its own connection (gunicorn's sync
workers close every connection), latency counted from the moment the schedule says the
request should have gone out.

Why not hey: ``hey -c10 -q100`` gives each of its ten workers its own ticker, all started
together, so the ten send at the same instant: measured at a bare socket server, 40 bursts of
exactly 10 connections within 1.5 ms, every 100 ms, for ``-c10 -q10``. At "1,000 req/s"
that is ten requests at once every 10 ms, and on two sync workers the tenth waits for the
nine before it: the p99 measured is a burst's drain time, not the latency at a rate. hey's
workers are also closed loops (a worker waits for its answer before its next tick), so a
slow answer lowers the rate offered instead of queueing behind it. wrk2 and vegeta, which
send at a rate, are in no package registry this project installs from. This client is one
process, an event loop over non-blocking sockets, and costs less CPU per request than hey
(about 190 against 280 µs, measured at a bare socket server), which matters with the client
on the server's cores.

python bench/constant_rate.py URL RATE SECONDS [--method POST --body JSON]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import resource
import selectors
import socket
import sys
import time
from typing import Any
from urllib.parse import urlsplit


def request_bytes(host: str, path: str, method: str = "GET", body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def percentile(ordered: list[float], share: float) -> float:
    """The nearest-rank percentile of an ascending list (what hey and wrk report)."""
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


def run(
    url: str, rate: int, seconds: float, method: str = "GET", body: bytes = b""
) -> dict[str, Any]:
    """Send ``rate * seconds`` requests at ``rate`` a second; p50/p99 in ms of the answers
    with a 2xx status, how many a second were answered so, and the client's own CPU."""
    parts = urlsplit(url)
    address = (parts.hostname or "127.0.0.1", parts.port or 80)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    request = request_bytes(address[0], path, method, body)
    selector = selectors.DefaultSelector()
    total, interval = int(rate * seconds), 1.0 / rate
    latencies: list[float] = []
    failed = 0
    in_flight = 0
    # An overloaded server leaves thousands of connections open at once (the open loop keeps
    # sending): allow as many as the system lets this process have.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):  # an unlimited hard limit: the soft one stays
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    usage_before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter() + 0.02
    sent = 0
    while sent < total or in_flight:
        now = time.perf_counter()
        while sent < total and start + sent * interval <= now:
            due = start + sent * interval
            sent += 1
            try:
                connection = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            except OSError:  # out of file descriptors: an overload's queue, counted
                failed += 1
                continue
            connection.setblocking(False)
            connection.connect_ex(address)
            # [when it should have gone out, the status line's first bytes]
            selector.register(connection, selectors.EVENT_WRITE, [due, b""])
            in_flight += 1
        wait = max(0.0, start + sent * interval - time.perf_counter()) if sent < total else 1.0
        for key, events in selector.select(wait):
            connection, state = key.fileobj, key.data
            if events & selectors.EVENT_WRITE:
                try:
                    connection.sendall(request)  # type: ignore[union-attr]
                    selector.modify(connection, selectors.EVENT_READ, state)
                    continue
                except OSError:
                    chunk = None
            else:
                try:
                    chunk = connection.recv(65536)  # type: ignore[union-attr]
                except OSError:
                    chunk = None
                if chunk:
                    state[1] = state[1] or chunk[:12]
                    continue
            selector.unregister(connection)
            connection.close()  # type: ignore[union-attr]
            in_flight -= 1
            if chunk is not None and state[1][8:10] == b" 2":  # "HTTP/1.1 2xx"
                latencies.append(time.perf_counter() - state[0])
            else:
                failed += 1
    finished = time.perf_counter()
    usage_after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (usage_after.ru_utime - usage_before.ru_utime) + (
        usage_after.ru_stime - usage_before.ru_stime
    )
    latencies.sort()
    result: dict[str, Any] = {"offered_rps": rate, "sent": sent, "failed": failed}
    if latencies:
        result.update(
            p50_ms=round(1000 * percentile(latencies, 0.50), 2),
            p99_ms=round(1000 * percentile(latencies, 0.99), 2),
            # Over the sending window, or longer where answers came after it (an overload):
            # what the server kept up with, not what was sent.
            rps=round(len(latencies) / max(seconds, finished - start), 1),
            client_cpu_us_per_request=round(1e6 * cpu / sent),
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("rate", type=int)
    parser.add_argument("seconds", type=float)
    parser.add_argument("--method", default="GET")
    parser.add_argument("--body", default="")
    args = parser.parse_args()
    print(json.dumps(run(args.url, args.rate, args.seconds, args.method, args.body.encode())))


if __name__ == "__main__":
    sys.exit(main())
