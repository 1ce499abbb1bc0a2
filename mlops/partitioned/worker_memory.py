"""Giving back a partition's memory in a long-lived Dask worker once its task is done.

Great Expectations leaves each validation run in reference cycles (its ephemeral context,
validator and batch, and the tracebacks of the errors pydantic catches while parsing the
suite, which hold every frame of the call stack), and they keep the partition's frame
alive until a full garbage collection. CPython runs one only when the objects promoted
since the last exceed a quarter of the long-lived ones, and with GE imported a worker
holds hundreds of thousands: a worker kept a dozen partitions alive between tasks, and
was killed at its memory limit on large datasets.
"""

from __future__ import annotations

import ctypes
import gc

_frozen = False


def freeze_long_lived() -> None:
    """Once per process, between tasks: move every object alive now out of the collector's
    sight, so the full collection after each partition scans only what tasks create, not
    the hundreds of thousands of objects of the imported libraries.

    What is alive at that moment is never collected if it later becomes cyclic garbage,
    so call it before the process's first partition, with the libraries imported.
    """
    global _frozen
    if not _frozen:
        gc.collect()
        gc.freeze()
        _frozen = True


def release_memory() -> None:
    """Free what the last partition left behind and hand it back to the OS: a full
    collection (see the module's docstring), then arrow's pool and glibc's free lists,
    which keep freed memory otherwise."""
    import pyarrow as pa

    gc.collect()
    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
