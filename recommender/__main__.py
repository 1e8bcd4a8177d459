"""``python -m recommender train|serve|nightly|export|alerts|experiments ...``: every command
line in one place."""

import sys

from .cli import (
    alerts_main,
    experiments_main,
    export_main,
    nightly_main,
    serve_main,
    train_main,
)

COMMANDS = {
    "train": train_main,
    "serve": serve_main,
    "nightly": nightly_main,
    "export": export_main,
    "alerts": alerts_main,
    "experiments": experiments_main,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(f"usage: python -m recommender {{{','.join(COMMANDS)}}} [options]", file=sys.stderr)
        sys.exit(2)
    sys.exit(COMMANDS[sys.argv[1]](sys.argv[2:]))
