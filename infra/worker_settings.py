"""How `make up`'s workers and their runs talk to the Prefect server: their settings.

``WORKER_QUERY_S``: a worker polls for runs to start this often (Prefect's default is 10 s,
jittered to 0.75-1.3x); a submitted run waits for the next poll, so this bounds its start
latency (``make bench-platform`` measures it); one poll is one cheap query on the server.
``HEARTBEAT_S``: a run's process sends a heartbeat event this often (Prefect's minimum), which
the zombie automation (``infra.automations``) watches.
"""

from collections.abc import Mapping

WORKER_QUERY_S = 2.0
HEARTBEAT_S = 30


def worker_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The settings above as the workers' (and so their runs') environment; a value the
    operator set in ``environ`` wins."""
    defaults = {"PREFECT_WORKER_QUERY_SECONDS": str(WORKER_QUERY_S),
                "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_S)}
    return {name: environ.get(name, value) for name, value in defaults.items()}
