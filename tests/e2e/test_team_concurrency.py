"""Per-team concurrency on a real Prefect server with real process workers.

Two teams share the gpu pool: alpha (quota 1, served first) and beta (quota 2). Each team's
work queue is limited to its quota by ``infra.provision``, so with a backlog on both queues
alpha never runs more than one flow at once, beta never more than two, and alpha's higher
priority does not starve beta (nor does beta's larger backlog block alpha).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from tests.e2e.stack import PLATFORM_ACCOUNTS, deploy_from_checkout, running_stack

pytestmark = pytest.mark.slow
ENTRYPOINT = "tests/e2e/sleepy_flow.py:sleepy"
QUOTAS = {"alpha": 1, "beta": 2}
BACKLOG = {"alpha": 2, "beta": 3}  # more than the quota: a backlog on both queues
SLEEP_S = 2.0
RUN_TIMEOUT_S = 180.0
TEAMS_YAML = """\
pools:
  gpu: {capacity: 3, type: process}
  cpu: {capacity: 1, type: process}
teams:
  - {name: alpha, weight: 1, priority: 1, quotas: {gpu: 1, cpu: 0}}
  - {name: beta, weight: 1, priority: 2, quotas: {gpu: 2, cpu: 0}}
  - {name: default, weight: 1, priority: 3, quotas: {gpu: 0, cpu: 1}}
"""
ACTIVE = ("PENDING", "RUNNING")  # what a queue's concurrency limit counts
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}



@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("team-concurrency")
    teams = root / "teams.yaml"
    teams.write_text(PLATFORM_ACCOUNTS + TEAMS_YAML)
    with running_stack(root, "--teams", str(teams), PREFECT_WORKER_QUERY_SECONDS="1",
                       PREFECT_WORKER_HEARTBEAT_SECONDS="5") as stack:
        yield stack


def _time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    """Most intervals open at one instant (an end at t frees its slot before a start at t)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals],
                    key=lambda event: (event[0], event[1]))
    current = peak = 0
    for _, step in events:
        current += step
        peak = max(peak, current)
    return peak


def test_team_queues_cap_concurrency_without_blocking_each_other(platform: dict) -> None:
    assert "create queue gpu/alpha (concurrency 1, priority 1)" in platform["up"], platform["up"]
    client = platform["client"]
    deployments = {team: deploy_from_checkout(client, "sleepy", ENTRYPOINT, f"sleepy-{team}",
                                              "gpu", team, {"seconds": SLEEP_S})
                   for team in QUOTAS}
    team_of = {deployment: team for team, deployment in deployments.items()}
    for team, count in BACKLOG.items():
        for index in range(count):
            created = client.post(f"/deployments/{deployments[team]}/create_flow_run",
                                  {"parameters": {"seconds": SLEEP_S},
                                   "idempotency_key": f"{team}-{index}"})
            assert created.status_code == 201, created.text
    query = {"flow_runs": {"deployment_id": {"any_": list(team_of)}}, "limit": 200}
    samples: list[dict[str, dict[str, int]]] = []  # per sample: state type -> team -> count
    began = time.monotonic()
    while True:
        runs = client.post("/flow_runs/filter", query).json()
        counts = {state: dict.fromkeys(QUOTAS, 0) for state in ("SCHEDULED", "ACTIVE")}
        for run in runs:
            state, team = run["state"]["type"], team_of[run["deployment_id"]]
            if state in ("SCHEDULED", *ACTIVE):
                counts["ACTIVE" if state in ACTIVE else state][team] += 1
        samples.append(counts)
        done = all(run["state"]["type"] in FINAL for run in runs)
        if done or time.monotonic() - began > RUN_TIMEOUT_S:
            break
        time.sleep(0.5)
    elapsed = time.monotonic() - began
    states = sorted(run["state"]["type"] for run in runs)
    assert len(runs) == sum(BACKLOG.values()), runs
    assert states == ["COMPLETED"] * len(runs), (states, elapsed, _tail_logs(platform))

    changes = [sample for index, sample in enumerate(samples)
               if index == 0 or sample != samples[index - 1]]
    # Sampled every ~0.5 s: never more active (PENDING or RUNNING) runs than the quota.
    peak = {team: max(sample["ACTIVE"][team] for sample in samples) for team in QUOTAS}
    assert peak == QUOTAS, (peak, changes)
    # Both teams at full quota at once while both still had a backlog: alpha's higher
    # priority did not starve beta, and beta's larger backlog did not hold alpha back.
    assert any(sample["ACTIVE"] == QUOTAS and all(sample["SCHEDULED"].values())
               for sample in samples), changes
    # Exact, from the server's own timestamps: no team ever had more RUNNING than its quota.
    intervals = {team: [(_time(r["start_time"]), _time(r["end_time"])) for r in runs
                        if team_of[r["deployment_id"]] == team] for team in QUOTAS}
    t0 = min(start for spans in intervals.values() for start, _ in spans)
    timeline = {team: sorted((round(a - t0, 1), round(b - t0, 1)) for a, b in spans)
                for team, spans in intervals.items()}
    running = {team: _max_overlap(spans) for team, spans in intervals.items()}
    assert all(running[team] <= quota for team, quota in QUOTAS.items()), (running, timeline)
    # Each team started running while the other still had unfinished work: neither was
    # held until the other's backlog was done. (Completions are not compared: a worker
    # that pauses a few seconds under load can shift them past each other.)
    first_start = {team: min(start for start, _ in spans) for team, spans in intervals.items()}
    last_end = {team: max(end for _, end in spans) for team, spans in intervals.items()}
    assert first_start["alpha"] < last_end["beta"], timeline
    assert first_start["beta"] < last_end["alpha"], timeline
    print(f"\n{len(runs)} runs completed in {elapsed:.0f} s; peak active {peak}, peak running "
          f"{running}; RUNNING spans (s): {timeline}")


def _tail_logs(platform: dict) -> str:
    folder = Path(platform["env"]["MLOPS_DATA_DIR"]) / "platform"
    return "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}"
                     for log in sorted(folder.glob("worker-*.log")))
