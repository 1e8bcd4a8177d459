"""recommender.memory: the allocator settings the evaluation uses (issue 30, memory).

They change where freed memory goes, never a value: each runs, is harmless to what is
allocated, and does nothing (saying so) where the C library is not glibc's.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from recommender import memory, training
from recommender.errors import DataError

from helpers import TINY_LOG, tiny_config

ROOT = Path(__file__).resolve().parent.parent
GLIBC = memory._glibc() is not None


@pytest.mark.skipif(not GLIBC, reason="glibc's allocator only")
def test_trimming_runs_and_keeps_every_live_value() -> None:
    kept = np.arange(3_000_000, dtype=np.float64)
    for _ in range(3):
        freed = np.ones(2_000_000) * 2.0
        del freed
    assert memory.release_freed_memory() is True
    assert kept[-1] == 2_999_999.0
    assert float(kept.sum()) == float(np.arange(3_000_000, dtype=np.float64).sum())


@pytest.mark.skipif(not GLIBC, reason="glibc's allocator only")
def test_one_arena_then_threads_compute_the_same() -> None:
    """In a child process: the setting lasts for the rest of the process."""
    code = (
        "import numpy as np\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        "from recommender import memory\n"
        "assert memory.share_one_arena() is True\n"
        "def work(seed):\n"
        "    rng = np.random.default_rng(seed)\n"
        "    return float(sum((rng.random(1_000_000) * 2).sum() for _ in range(5)))\n"
        "with ThreadPoolExecutor(2) as pool:\n"
        "    got = list(pool.map(work, range(4)))\n"
        "assert got == [work(seed) for seed in range(4)], got\n"
        "assert memory.release_freed_memory() is True\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_nothing_happens_without_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    memory._glibc.cache_clear()
    monkeypatch.setattr(sys, "platform", "darwin")
    try:
        assert memory._glibc() is None
        assert memory.release_freed_memory() is False
        assert memory.share_one_arena() is False
    finally:
        memory._glibc.cache_clear()
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(lambda: int(np.ones(10).sum())).result() == 10


@pytest.mark.parametrize("evaluate", [True, False])
def test_training_builds_the_whole_logs_matrices_after_the_evaluation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, evaluate: bool
) -> None:
    """They are not held through the evaluation's peak; one arena only when evaluating."""
    events: list[str] = []
    build = training.build_interactions

    def evaluated(*args: object) -> None:
        events.append("evaluate")
        raise DataError("not here")

    def built(*args: object) -> object:
        events.append("interactions")
        return build(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(training, "select_and_evaluate", evaluated)
    monkeypatch.setattr(training, "build_interactions", built)
    monkeypatch.setattr(training, "share_one_arena", lambda: events.append("one arena"))
    log = tmp_path / "tiny.csv"
    log.write_text(TINY_LOG)
    training.run(tiny_config(log, tmp_path / "models", evaluate=evaluate))
    expected = ["one arena", "evaluate", "interactions"] if evaluate else ["interactions"]
    assert events == expected
