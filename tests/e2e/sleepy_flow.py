"""The workload of the team concurrency test: a flow that only sleeps (imports nothing heavy)."""

import time

from prefect import flow


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
