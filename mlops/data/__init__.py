"""Datasets: loading by spec, where they are stored (local or S3), the expectation suite
and in-memory validation with Great Expectations, and the validated snapshot; with the pure
helpers validation explains its failures with (event times, entity and label hints, the
kinds of data partitions must agree on).

May import ``mlops.config`` and ``mlops.atomic_files`` only.
"""
