"""A flow run that a worker started ends when that worker dies (``mlops.orphans``)."""

import os

from mlops.orphans import end_with_parent


def end_with_worker() -> None:
    """Watch the worker, in a run a Prefect worker started (it sets PREFECT__WORKER_NAME);
    a flow run from a terminal (`make run`) keeps going whatever its parent does."""
    if os.environ.get("PREFECT__WORKER_NAME"):
        end_with_parent()
