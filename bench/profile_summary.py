#!/usr/bin/env python3
"""Top functions of a py-spy profile recorded with ``--format raw`` (collapsed stacks).

    py-spy record --format raw -o bench/.cache/train20M.collapsed --pid PID
    python bench/profile_summary.py bench/.cache/train20M.collapsed > bench/results/train20M_profile.txt

Prints the share of samples per function, inclusive (anywhere on the stack) and self (the
innermost Python frame: time in that function or in the C code it called), and the heaviest
stacks below recommender/ code.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys

FRAME = re.compile(r"^(?P<func>.+?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def short(frame: str, with_line: bool = False) -> str:
    match = FRAME.match(frame)
    if not match:
        return frame
    path = match.group("file")
    for marker in ("site-packages/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    line = f":{match.group('line')}" if with_line and match.group("line") else ""
    return f"{match.group('func')} ({path}{line})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("collapsed")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    inclusive: collections.Counter[str] = collections.Counter()
    self_time: collections.Counter[str] = collections.Counter()
    own_line: collections.Counter[str] = collections.Counter()
    total = 0
    with open(args.collapsed) as handle:
        for raw in handle:
            stack, _, count_text = raw.rstrip("\n").rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = [
                f
                for f in stack.split(";")
                if f and not f.startswith("process ") and not f.startswith("thread ")
            ]
            if not frames:
                continue
            total += count
            for name in {short(f) for f in frames}:
                inclusive[name] += count
            self_time[short(frames[-1])] += count
            ours = [f for f in frames if "recommender/" in f]
            if ours:
                own_line[short(ours[-1], with_line=True)] += count
    print(f"{total} samples")
    for title, counter in (
        ("inclusive (on the stack)", inclusive),
        ("self (innermost Python frame)", self_time),
        ("innermost line of our code (recommender/) on the stack", own_line),
    ):
        print(f"\n== {title}")
        for name, count in counter.most_common(args.top):
            print(f"{100 * count / max(total, 1):6.1f}%  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
