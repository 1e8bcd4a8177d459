#!/usr/bin/env python3
"""Serve the current model over HTTP: ``python serve.py --help``."""

import sys

from recommender.cli import serve_main

if __name__ == "__main__":
    sys.exit(serve_main())
