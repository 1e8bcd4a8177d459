"""Helpers shared by the benchmark scripts: paths, /usr/bin/time runs with an RSS timeline, JSON I/O."""

from __future__ import annotations

import json
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
CACHE = BENCH / ".cache"
RESULTS = BENCH / "results"
PYTHON = sys.executable
TIME = "/usr/bin/time"

# The logs the benchmarks train on: name -> (lines, users, items).
SIZES: dict[str, tuple[int, int, int]] = {
    "1M": (1_000_000, 100_000, 10_000),
    "2M-serve": (2_000_000, 200_000, 50_000),
    "5M": (5_000_000, 400_000, 25_000),
    "20M": (20_000_000, 1_000_000, 50_000),
}
SEED = 42


def log_path(size: str) -> Path:
    return CACHE / f"log_{size}.parquet"


def ensure_log(size: str, seed: int = SEED) -> tuple[Path, dict[str, Any] | None]:
    """The cached synthetic log of ``size`` (generated once, by bench/synthetic.py)."""
    path = log_path(size)
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists():
        return path, json.loads(meta.read_text())
    lines, users, items = SIZES[size]
    command = [
        PYTHON,
        str(BENCH / "synthetic.py"),
        "--lines",
        str(lines),
        "--users",
        str(users),
        "--items",
        str(items),
        "--seed",
        str(seed),
        "--out",
        str(path),
    ]
    print(f"[bench] generating {size}: {' '.join(command)}", file=sys.stderr, flush=True)
    out = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT).stdout
    info = json.loads(out.strip().splitlines()[-1])
    info["command"] = " ".join(_rel(c) for c in command)
    meta.write_text(json.dumps(info, indent=2))
    return path, info


def _rel(arg: str) -> str:
    try:
        return str(Path(arg).resolve().relative_to(ROOT)) if "/" in arg else arg
    except ValueError:
        return arg


def shown(command: list[str]) -> str:
    """A command as it would be typed from the repository root."""
    return " ".join("python" if c == PYTHON else _rel(c) for c in command)


def children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                kids += [
                    int(x) for x in Path(f"/proc/{pid}/task/{task}/children").read_text().split()
                ]
            except OSError:
                pass
    except OSError:
        pass
    return kids


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


_TIME_FIELDS = {
    "wall": re.compile(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)"),
    "max_rss_kb": re.compile(r"Maximum resident set size \(kbytes\): (\d+)"),
    "user_s": re.compile(r"User time \(seconds\): ([\d.]+)"),
    "system_s": re.compile(r"System time \(seconds\): ([\d.]+)"),
    "cpu_percent": re.compile(r"Percent of CPU this job got: (\d+)%"),
    "exit_status": re.compile(r"Exit status: (\d+)"),
    "signal": re.compile(r"Command terminated by signal (\d+)"),
}


def parse_time_v(text: str) -> dict[str, Any]:
    """The figures of ``/usr/bin/time -v`` output."""
    found: dict[str, Any] = {}
    for key, pattern in _TIME_FIELDS.items():
        match = pattern.search(text)
        if match:
            found[key] = match.group(1)
    out: dict[str, Any] = {}
    if "wall" in found:
        seconds = 0.0
        for part in found["wall"].split(":"):
            seconds = seconds * 60 + float(part)
        out["wall_seconds"] = round(seconds, 2)
    if "max_rss_kb" in found:
        out["peak_rss_mib"] = round(int(found["max_rss_kb"]) / 1024, 1)
    for key in ("user_s", "system_s"):
        if key in found:
            out[key.replace("_s", "_cpu_seconds")] = float(found[key])
    if "cpu_percent" in found:
        out["cpu_percent"] = int(found["cpu_percent"])
    if "exit_status" in found:
        out["exit_status"] = int(found["exit_status"])
    if "signal" in found:
        out["terminated_by_signal"] = int(found["signal"])
    return out


def timed_run(
    command: list[str],
    log_file: Path,
    timeout: float | None = None,
    sample_every: float = 0.5,
    max_rss_mib: float | None = None,
) -> dict[str, Any]:
    """Run ``command`` under ``/usr/bin/time -v``, streaming stderr to ``log_file``.

    Returns the /usr/bin/time figures, stdout, the stderr lines with the moment each arrived,
    and an RSS timeline of the command (sampled from /proc). On timeout the command itself
    (the child of /usr/bin/time) gets SIGTERM, so /usr/bin/time still reports; the same when
    its RSS passes ``max_rss_mib`` (to protect a shared machine).
    """
    if not Path(TIME).exists():
        raise SystemExit(f"{TIME} missing: apt-get install -y time")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    busy_before, load_before = cpu_busy_seconds(), Path("/proc/loadavg").read_text().split()[:3]
    proc = subprocess.Popen(
        [TIME, "-v", *command],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    stderr_lines: list[tuple[float, str]] = []
    timeline: list[tuple[float, float]] = []
    stop = threading.Event()
    killed_for_memory: list[float] = []

    def read_stderr() -> None:
        with log_file.open("w") as sink:
            assert proc.stderr is not None
            for line in proc.stderr:
                stderr_lines.append((time.time() - started, line.rstrip("\n")))
                sink.write(line)
                sink.flush()

    def sample() -> None:
        while not stop.is_set():
            kids = children(proc.pid)
            if kids:
                value = rss_mib(kids[0])
                if value is not None:
                    timeline.append((round(time.time() - started, 2), round(value, 1)))
                    if max_rss_mib and value > max_rss_mib and not killed_for_memory:
                        killed_for_memory.append(value)
                        os.kill(kids[0], signal.SIGTERM)
            stop.wait(sample_every)

    reader = threading.Thread(target=read_stderr, daemon=True)
    sampler = threading.Thread(target=sample, daemon=True)
    reader.start()
    sampler.start()
    stdout_chunks: list[str] = []
    stdout_reader = threading.Thread(
        target=lambda: stdout_chunks.append(proc.stdout.read()), daemon=True
    )  # type: ignore[union-attr]
    stdout_reader.start()
    timed_out = False
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        for kid in children(proc.pid):
            os.kill(kid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            for kid in children(proc.pid):
                os.kill(kid, signal.SIGKILL)
            proc.wait()
    stop.set()
    reader.join()
    stdout_reader.join()
    sampler.join()
    text = "\n".join(line for _, line in stderr_lines)
    result = parse_time_v(text)
    result.update(returncode=proc.returncode, timed_out=timed_out, command=shown(command))
    if killed_for_memory:
        result["stopped_for_memory_at_rss_mib"] = round(killed_for_memory[0], 1)
    if "user_cpu_seconds" in result:
        # CPU that other processes on the machine used meanwhile: a sign of interference.
        other = (
            cpu_busy_seconds()
            - busy_before
            - result["user_cpu_seconds"]
            - result["system_cpu_seconds"]
        )
        result["other_processes_cpu_seconds"] = round(max(other, 0.0), 1)
    result["loadavg_at_start"] = load_before
    return {
        "time": result,
        "stdout": "".join(stdout_chunks),
        "stderr": stderr_lines,
        "rss_timeline": timeline,
    }


def cpu_busy_seconds() -> float:
    """Busy CPU seconds of the whole machine so far (all processes), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def process_cpu() -> dict[int, tuple[float, str]]:
    """CPU seconds and command line of every process now, from /proc/*/stat."""
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[float, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            cmd = (
                Path(f"/proc/{entry}/cmdline")
                .read_bytes()
                .replace(b"\0", b" ")
                .decode(errors="replace")
                .strip()
            )
            out[int(entry)] = ((int(fields[11]) + int(fields[12])) / ticks, cmd[:120])
        except (OSError, IndexError, ValueError):
            pass
    return out


def busiest_others(
    before: dict[int, tuple[float, str]],
    after: dict[int, tuple[float, str]],
    exclude: set[int],
    top: int = 3,
    at_least: float = 0.5,
) -> list[dict[str, Any]]:
    """Processes outside ``exclude`` that used the most CPU between two snapshots."""
    used = []
    for pid, (cpu, cmd) in after.items():
        if pid in exclude:
            continue
        delta = cpu - before.get(pid, (0.0, ""))[0]
        if delta >= at_least:
            used.append({"pid": pid, "cpu_seconds": round(delta, 2), "command": cmd})
    return sorted(used, key=lambda u: -u["cpu_seconds"])[:top]


def wait_for_quiet(
    max_wait: float = 300.0, cores: float = 0.3, window: float = 3.0
) -> dict[str, Any]:
    """Wait (up to ``max_wait`` s) until the machine is nearly idle: under ``cores`` busy cores
    over ``window`` seconds. The machine may be shared with other work; a measurement taken
    while something else runs is not comparable, so this is recorded with each result."""
    started = time.time()
    while True:
        before = cpu_busy_seconds()
        time.sleep(window)
        busy = (cpu_busy_seconds() - before) / window
        waited = time.time() - started
        if busy < cores or waited >= max_wait:
            if busy >= cores:
                print(
                    f"[bench] machine still busy ({busy:.2f} cores) after {waited:.0f}s; measuring anyway",
                    file=sys.stderr,
                    flush=True,
                )
            return {"waited_seconds": round(waited, 1), "busy_cores_before": round(busy, 2)}


def machine() -> dict[str, Any]:
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    versions = {}
    for name in ("implicit", "numpy", "scipy", "pandas", "pyarrow", "flask", "gunicorn"):
        try:
            from importlib import metadata

            versions[name] = metadata.version(name)
        except Exception:  # noqa: BLE001
            pass
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(mem_kb / 2**20, 1),
        "python": platform.python_version(),
        "libraries": versions,
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "code": git_state(),
    }


def git_state() -> dict[str, Any]:
    """The commit measured and the files changed on top of it (the tree may be edited meanwhile)."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30
            ).stdout.rstrip()
        except (OSError, subprocess.SubprocessError):
            return ""

    import hashlib

    changed = [
        line[3:]
        for line in git("status", "--short").splitlines()
        if not line[3:].startswith("bench/")
    ]
    diff = git("diff", "HEAD", "--", ".", ":(exclude)bench")
    return {
        "head": git("rev-parse", "--short", "HEAD").strip(),
        "uncommitted_files": changed,
        "uncommitted_diff_sha256": hashlib.sha256(diff.encode()).hexdigest()[:12] if diff else None,
    }


def update_json(path: Path, key: str | None, value: Any) -> dict[str, Any]:
    """Merge ``value`` under ``key`` (or at the top) into the JSON file at ``path``."""
    data = json.loads(path.read_text()) if path.exists() else {}
    if key is None:
        data.update(value)
    else:
        data.setdefault(key, {}).update(value)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return data
