"""Prefect REST helpers that provisioning, the fair-share controller and the pipeline share:
paged listings, the queue update that keeps priorities unique, and the requeued copies of
preempted runs.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.objects import FlowRun

PAGE = 200
REQUEUED_TAG = "requeued-from:"  # + the preempted run's id, on the run that replaces it


async def read_all(read_page: Callable[[int], Awaitable[list[Any]]]) -> list[Any]:
    """Every item of a paged listing."""
    items: list[Any] = []
    while True:
        page = await read_page(len(items))
        items += page
        if len(page) < PAGE:
            return items


async def patch_queue(client: PrefectClient, pool: str, name: str, fields: dict[str, Any]) -> None:
    """Update a queue through its pool's route, which keeps priorities unique by shifting the
    queues below (``update_work_queue``'s /work_queues/{id} would let two queues of a pool
    share a priority)."""
    await client.request("PATCH", "/work_pools/{work_pool_name}/queues/{name}",
                         path_params={"work_pool_name": pool, "name": name}, json=fields)


def follow_requeues(run: FlowRun, poll_s: float = 2.0) -> FlowRun:
    """The run that finally did a job: a run the controller preempted ends CANCELLED and its
    copy (tagged ``requeued-from:<id>``) carries on, perhaps preempted in turn; this waits
    for the last copy to end. Used where a parent waits on a child (a pipeline stage)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    with get_client(sync_client=True) as client:
        while run.state is not None and run.state.is_cancelled():
            copies = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=[f"{REQUEUED_TAG}{run.id}"])))
            if not copies:
                return run  # cancelled by a person, not preempted
            run = copies[0]
            while run.state is None or not run.state.is_final():
                time.sleep(poll_s)
                run = client.read_flow_run(run.id)
    return run


def require_queue(deployment: str, queue: str) -> None:
    """Refuse to start a run on a queue its deployment's pool lacks: Prefect would create
    it on the fly, without a limit, outside every team's quota. A missing ``<team>-high``
    or ``<team>-low`` queue means the fair-share section is off; a missing team queue, a
    team the teams file does not declare."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        pool = client.read_deployment_by_name(deployment).work_pool_name
        try:
            client.read_work_queue_by_name(queue, work_pool_name=pool)
        except ObjectNotFound:
            hint = ("priority queues exist only with the fair-share controller on (a "
                    "fairshare section in the teams file)" if queue.endswith(("-high", "-low"))
                    else "is the team declared in the teams file and provisioned?")
            raise ValueError(f"pool {pool!r} has no queue {queue!r}: {hint}") from None
