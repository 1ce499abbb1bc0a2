"""Datasets: loading by spec, where they are stored (local or S3), the expectation suite
and in-memory validation with Great Expectations, and the validated snapshot.

May import ``mlops.config`` and ``mlops.atomic_files`` only.
"""
