"""Benchmarks, one module per ``make bench-*`` (run as ``python -m benchmarks.<name>``), and
what only benchmarks and tests use: the fair-share simulator and synthetic datasets."""
