"""Datasets: loading by spec, where they are stored (local or S3), whether the spec fits
the data, the expectation suite and in-memory validation with Great Expectations, the
validated snapshot, and the feature encoding training and serving share; with the pure
helpers validation explains its failures with (event times, entity and label hints, the
kinds of data partitions must agree on).

May import ``mlops.config`` and ``mlops.atomic_files`` only.
"""
