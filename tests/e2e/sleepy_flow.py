"""The workload of the team concurrency test: a flow that only sleeps (imports nothing heavy)."""

import time

from prefect import flow


@flow(name="sleepy", log_prints=False)
def sleepy(seconds: float = 1.0) -> float:
    time.sleep(seconds)
    return seconds
