"""What "buy it again" costs a training run: ``train.py`` on the shipped log at a revision
before it (``--base``) and at this tree, alternated in the same run on the same machine,
with and without the evaluation (which now also chooses and measures the repeat model).

    python bench/repeat_cost.py --base 69df32b --runs 2

Results (medians, and the ratio of this tree to the base) go to bench/results/repeat_cost.md.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
LOG = ROOT / "data" / "online_retail.parquet"


def train_seconds(tree: Path, work: Path, *extra: str) -> float:
    models = work / "models"
    shutil.rmtree(models, ignore_errors=True)
    started = time.perf_counter()
    subprocess.run(
        [
            PYTHON,
            "train.py",
            "--data",
            str(LOG),
            "--models-dir",
            str(models),
            "--activity-db",
            str(work / "activity.sqlite3"),
            *extra,
        ],
        cwd=tree,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", required=True, help="the revision to compare with")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "repeat_cost.md")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="repeat-cost-"))
    base = work / "base"
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(base), args.base],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    rows = []
    try:
        for label, extra in (
            ("whole run (evaluation on)", ()),
            ("--no-evaluate", ("--no-evaluate",)),
        ):
            times: dict[str, list[float]] = {"base": [], "this tree": []}
            for _ in range(args.runs):
                for name, tree in (("base", base), ("this tree", ROOT)):
                    times[name].append(train_seconds(tree, work, *extra))
            median = {name: statistics.median(values) for name, values in times.items()}
            rows.append(
                f"| {label} | {median['base']:.1f} | {median['this tree']:.1f} | "
                f"{median['this tree'] / median['base']:.3f} | "
                f"{', '.join(f'{v:.1f}' for v in times['base'])} / "
                f"{', '.join(f'{v:.1f}' for v in times['this tree'])} |"
            )
            print(rows[-1], flush=True)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, check=False)
        shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        '# Training time with "buy it again", against the revision before it\n\n'
        f"`python bench/repeat_cost.py --base {args.base} --runs {args.runs}` on {commit}, "
        "shipped log, 2-core machine, runs alternated (base, this tree), medians in seconds.\n\n"
        "| run | base | this tree | ratio | every run (base / this tree) |\n"
        "|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
