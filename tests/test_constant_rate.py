"""The benchmark's constant-rate client (bench/constant_rate.py) against a real socket server
on 127.0.0.1 that records when each connection arrives: requests spread evenly over time (not
in bursts, as hey's workers send them), answers with another status counted as failures, and
the latency measured from the scheduled send, so a slow answer is not hidden by the client
waiting for it."""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import constant_rate  # noqa: E402


class RecordingServer:
    """Accepts connections, notes each arrival, and answers with ``status`` after ``delay``
    seconds (answered in threads, so a slow answer does not hold the next arrival)."""

    def __init__(self, status: int = 200, delay: float = 0.0) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=512)
        self.port = self.listener.getsockname()[1]
        self.status, self.delay = status, delay
        self.arrivals: list[float] = []
        self.requests: list[bytes] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._stop = False
        self._thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(0.2)
        while not self._stop:
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            self.arrivals.append(time.perf_counter())
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        with connection:
            self.requests.append(connection.recv(65536))
            time.sleep(self.delay)
            connection.sendall(
                f"HTTP/1.1 {self.status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".encode()
            )

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        self.listener.close()


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    recording = RecordingServer()
    yield recording
    recording.close()


def test_requests_arrive_one_at_a_time_at_the_rate(server: RecordingServer) -> None:
    result = constant_rate.run(f"http://127.0.0.1:{server.port}/v1/x?k=10", 200, 1.5)
    assert result["sent"] == 300 and result["failed"] == 0
    assert result["rps"] == pytest.approx(200.0, rel=0.25)
    gaps = np.diff(server.arrivals) * 1000
    # One every 5 ms. hey -c10 -q20 would send ten within a millisecond, then nothing for 50:
    # nine gaps in ten under a millisecond. The margins leave room for a busy machine, which
    # can hold the client or this server's thread back and bunch a few arrivals.
    assert 3.0 <= np.median(gaps) <= 7.0
    assert np.mean(gaps < 1.0) < 0.4
    assert server.requests[0].startswith(b"GET /v1/x?k=10 HTTP/1.1\r\n")


def test_a_post_carries_its_body_and_a_status_not_2xx_is_a_failure() -> None:
    for status, failed in ((201, 0), (503, 10)):
        answering = RecordingServer(status=status)
        try:
            result = constant_rate.run(
                f"http://127.0.0.1:{answering.port}/v1/events", 50, 0.2, "POST", b'{"k": 3}'
            )
        finally:
            answering.close()
        assert result["sent"] == 10 and result["failed"] == failed
        assert ("p99_ms" in result) == (failed == 0)
        assert answering.requests[0].startswith(b"POST /v1/events HTTP/1.1\r\n")
        assert answering.requests[0].endswith(b'Content-Length: 8\r\n\r\n{"k": 3}')


def test_latency_counts_from_the_scheduled_send() -> None:
    """Answers take 30 ms: every request is still sent on time (open loop), so at 100 a second
    three are in flight at once, and each one's latency is at least the 30 ms. A client that
    waited for each answer before the next request would take 3 s for the 100."""
    slow = RecordingServer(delay=0.03)
    try:
        result = constant_rate.run(f"http://127.0.0.1:{slow.port}/", 100, 1.0)
    finally:
        slow.close()
    assert result["sent"] == 100 and result["failed"] == 0
    assert 30.0 <= result["p50_ms"] <= result["p99_ms"]
    assert 0.9 <= slow.arrivals[-1] - slow.arrivals[0] < 1.5


def test_percentile_is_the_nearest_rank() -> None:
    ordered = [float(v) for v in range(1, 101)]
    assert constant_rate.percentile(ordered, 0.50) == 50.0
    assert constant_rate.percentile(ordered, 0.99) == 99.0
    assert constant_rate.percentile([7.0], 0.99) == 7.0
