"""Out-of-core data on Dask: the cluster, partition files, validation partition by
partition, feature preparation per partition, and worker memory hygiene.

May import ``mlops.config``, ``mlops.atomic_files`` and ``mlops.data`` (it runs the same
suite on each partition and writes the same snapshot as the in-memory path).
"""
