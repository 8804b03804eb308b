"""Benchmarks and research scripts (not installed): run from the repository as
``python -m benchmarks.NAME``; each writes its tables under ``results/``."""
