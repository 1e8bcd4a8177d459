"""Ingest: reading purchase logs, cleaning them, and turning them into interaction matrices.

The only part of the package that imports pandas; the server never imports it.
"""
