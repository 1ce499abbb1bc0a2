"""Workloads of the platform tests: flows that only sleep (they import nothing heavy)."""

import time
from typing import Literal

from prefect import flow
from pydantic import BaseModel, Field


@flow(name="sleepy", log_prints=False)
def sleepy(seconds: float = 1.0) -> float:
    time.sleep(seconds)
    return seconds


@flow(name="checkpointed", log_prints=False)
def checkpointed(key: str, steps: int, step_s: float, folder: str) -> int:
    """Sleeps ``steps`` times, saving progress after each step and resuming from it, as a
    training run resumes from its last checkpoint. Appends each step done to a journal, so
    a test can count the work done twice after a preemption (``s<N>``: a start at step N)."""
    import json
    from pathlib import Path

    state, journal = Path(folder) / f"{key}.json", Path(folder) / f"{key}.journal"
    done = json.loads(state.read_text())["done"] if state.exists() else 0
    with journal.open("a") as out:
        out.write(f"s{done}\n")  # where this run (re)started
    while done < steps:
        time.sleep(step_s)
        done += 1
        with journal.open("a") as out:
            out.write(f"{done}\n")
        partial = state.with_suffix(".tmp")
        partial.write_text(json.dumps({"done": done}))
        partial.replace(state)
    return done


class TeamJob(BaseModel):
    """A team's job as the training pipeline takes it: ``team`` and ``priority`` decide
    where it runs (the gateway checks both)."""

    seconds: float = Field(default=1.0, ge=0, le=600, description="How long to sleep.")
    team: str = Field(default="default", description="The team the run is accounted to.")
    priority: Literal["high", "normal", "low"] = "normal"


@flow(name="team-job", log_prints=False)
def team_job(params: TeamJob) -> str:
    time.sleep(params.seconds)
    return params.team
