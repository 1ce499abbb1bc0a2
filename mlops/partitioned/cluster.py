"""The Dask cluster the data stages run on: a team's scheduler (``MLOPS_DASK_SCHEDULER``),
or else a LocalCluster sized to the memory budget, started for the stage."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from distributed import Client
from distributed.diagnostics.plugin import WorkerPlugin

from mlops.config import Settings
from mlops.data.storage import s3_options

CONNECT_TIMEOUT_S = 15
# The default cluster: 2 single-threaded worker processes within a 3 GB budget for the
# whole process tree: OVERHEAD for the client process (it also runs the scheduler and the
# nannies), the rest split between the workers. Between tasks a worker holds Great
# Expectations and its libraries, flat from one partition to the next because each task
# ends with a full garbage collection (worker_memory.py); while working it adds one
# partition. Workers hold no data to spill (results are small) and a pause could only wait
# for memory the running task frees, so pausing and spilling are off and the limit acts
# only through the restart at 95% (the task is retried). `make bench-scale` measures the
# peak against this budget.
MEMORY_BUDGET = 3.0e9
OVERHEAD = 0.3e9
WORKER_MEMORY = {"distributed.worker.memory.target": False,
                 "distributed.worker.memory.spill": False,
                 "distributed.worker.memory.pause": False}


class DaskUnavailable(ConnectionError):
    """The configured Dask scheduler did not answer; the message names its address."""


class ObjectStoreOnWorkers(WorkerPlugin):
    """A Dask worker plugin: the object store's settings as every worker's s3:// defaults,
    including workers that join later (a LocalCluster's inherit them from the environment
    instead: ``storage.use_object_store``)."""

    name = "mlops-object-store"

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options

    def setup(self, worker: Any) -> None:
        import fsspec
        import s3fs

        fsspec.config.conf["s3"] = self.options
        s3fs.S3FileSystem.clear_instance_cache()


@contextmanager
def cluster_client(settings: Settings) -> Iterator[Client]:
    """A client of the settings' cluster, closed after (a LocalCluster is shut down)."""
    if not settings.dask_scheduler:
        with dask_client() as client:
            yield client
        return
    try:
        client = Client(settings.dask_scheduler, timeout=CONNECT_TIMEOUT_S)
    except OSError as exc:
        raise DaskUnavailable(f"Dask scheduler at {settings.dask_scheduler} is unreachable "
                              f"(MLOPS_DASK_SCHEDULER): {exc}") from None
    with client:
        if settings.profile == "production":
            client.register_plugin(ObjectStoreOnWorkers(s3_options(settings)))
        yield client


@contextmanager
def dask_client(client: Client | None = None, workers: int = 2) -> Iterator[Client]:
    """The given client, or a local cluster sized to the memory budget (closed after)."""
    if client is not None:
        yield client
        return
    import dask
    from distributed import LocalCluster

    limit = int((MEMORY_BUDGET - OVERHEAD) / workers)
    with (dask.config.set(WORKER_MEMORY),
          LocalCluster(n_workers=workers, threads_per_worker=1, memory_limit=limit,
                       dashboard_address=None) as cluster,
          Client(cluster) as local):
        yield local
