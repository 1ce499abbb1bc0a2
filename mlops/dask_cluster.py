"""The Dask cluster the data stages run on: a team's scheduler (``MLOPS_DASK_SCHEDULER``),
or else a LocalCluster sized to this machine's memory budget, started for the stage."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from distributed import Client
from distributed.diagnostics.plugin import WorkerPlugin

from mlops.config import Settings
from mlops.partitioned_validation import dask_client
from mlops.storage import s3_options

CONNECT_TIMEOUT_S = 15


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
