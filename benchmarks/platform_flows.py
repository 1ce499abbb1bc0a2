"""The workload of `make bench-platform`: a flow that does no work, so that what the benchmark
times is the platform around it (the worker's polling, the flow-run process's start, the
state changes), and the floor it is compared with is the same function called directly.

Deployed from this checkout (entrypoint ``benchmarks/platform_flows.py:noop``); it imports
nothing but Prefect.
"""

from __future__ import annotations

from prefect import flow


def noop_body() -> str:
    """The flow's whole body; the floor calls it in a fresh interpreter without a run."""
    return "done"


@flow(name="bench-platform-noop", log_prints=False, persist_result=False)
def noop() -> str:
    return noop_body()
