#!/usr/bin/env python3
"""Train on a purchase log and promote a new model version: ``python train.py --help``."""

import sys

from recommender.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main())
