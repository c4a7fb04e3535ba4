"""Benchmarks of resjax against a jitted loop, PyTorch and one process per setting.

``scripts/benchmark.py`` runs them and writes ``docs/benchmarks.md`` and
``docs/benchmarks.json``. PyTorch is optional (``requirements-bench.txt``): without
it the PyTorch rows are skipped with a note.
"""
