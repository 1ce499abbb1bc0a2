"""Fair share on a real Prefect server with real process workers: the controller that
`make up` starts borrows idle GPUs for a team, reclaims them when their owners return, and
with preemption on cancels and requeues the newest borrowed run, which resumes from its
checkpoint.

Three teams share a gpu pool of 4 slots: alpha (quota 2), beta (quota 1) and default (quota
1), equal weights; the controller decides every 2 s. Concurrency per team is sampled from
the server every ~0.5 s and printed, so a failure shows the whole timeline.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.stack import PLATFORM_ACCOUNTS, PrefectApi, deploy_from_checkout, running_stack

pytestmark = pytest.mark.slow
SLEEPY, CHECKPOINTED = "tests/e2e/sleepy_flow.py:sleepy", "tests/e2e/sleepy_flow.py:checkpointed"
TEAMS = ("alpha", "beta", "default")
QUOTA = {"alpha": 2, "beta": 1, "default": 1}
CAPACITY = 4
PERIOD_S = 2
JOB_S = 10.0
TEAMS_YAML = """\
fairshare: {{period_s: {period}, preemption: {preemption}}}
pools:
  gpu: {{capacity: 4, type: process}}
  cpu: {{capacity: 1, type: process}}
teams:
  - {{name: alpha, weight: 1, priority: 1, quotas: {{gpu: 2, cpu: 0}}}}
  - {{name: beta, weight: 1, priority: 2, quotas: {{gpu: 1, cpu: 0}}}}
  - {{name: default, weight: 1, priority: 3, quotas: {{gpu: 1, cpu: 1}}}}
"""
HOLDING = {"PENDING", "RUNNING", "CANCELLING"}
Sample = tuple[float, dict[str, int], dict[str, int]]  # seconds, holding and queued per team
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("fairshare")
    teams = root / "teams.yaml"
    teams.write_text(PLATFORM_ACCOUNTS + TEAMS_YAML.format(period=PERIOD_S, preemption="false"))
    with running_stack(root, "--teams", str(teams), PREFECT_WORKER_QUERY_SECONDS="1",
                       PREFECT_WORKER_HEARTBEAT_SECONDS="5") as stack:
        client = stack["client"]
        stack["client"], stack["teams"] = client, teams
        stack["sleepy"] = {team: deploy_from_checkout(client, "sleepy", SLEEPY, f"sleepy-{team}",
                                                      "gpu", team, {"seconds": JOB_S})
                           for team in TEAMS}
        yield stack


def _submit(client: PrefectApi, deployment: str, key: str, parameters: dict) -> str:
    run = client.post(f"/deployments/{deployment}/create_flow_run",
                      {"parameters": parameters, "idempotency_key": key})
    assert run.status_code == 201, run.text
    return run.json()["id"]


class Timeline:
    """Per-team run counts sampled from the server: (seconds, holding, queued) per sample."""

    def __init__(self, client: PrefectApi, team_of: dict[str, str]) -> None:
        self.client, self.team_of, self.began = client, team_of, time.monotonic()
        self.samples: list[Sample] = []
        self.runs: list[dict] = []

    def sample(self) -> None:
        query = {"flow_runs": {"deployment_id": {"any_": sorted(set(self.team_of))}},
                 "limit": 200}
        self.runs = self.client.post("/flow_runs/filter", query).json()
        holding, queued = dict.fromkeys(TEAMS, 0), dict.fromkeys(TEAMS, 0)
        for run in self.runs:
            team, state = self.team_of[run["deployment_id"]], run["state"]["type"]
            if state in HOLDING:
                holding[team] += 1
            elif state == "SCHEDULED":
                queued[team] += 1
        self.samples.append((round(time.monotonic() - self.began, 1), holding, queued))

    def until(self, done: Callable[[Sample], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.sample()
            if done(self.samples[-1]):
                return True
            time.sleep(0.5)
        return False

    def now(self) -> float:
        return time.monotonic() - self.began

    def show(self) -> str:
        changes = [s for i, s in enumerate(self.samples)
                   if i == 0 or s[1:] != self.samples[i - 1][1:]]
        return "\n".join(f"{t:6.1f}s holding {h} queued {q}" for t, h, q in changes)


def test_idle_slots_are_borrowed_and_reclaimed_as_borrowed_runs_end(platform: dict) -> None:
    client = platform["client"]
    timeline = Timeline(client, {d: t for t, d in platform["sleepy"].items()})
    for index in range(8):
        _submit(client, platform["sleepy"]["alpha"], f"alpha-{index}", {"seconds": JOB_S})
    borrowed = timeline.until(lambda s: s[1]["alpha"] > QUOTA["alpha"], timeout_s=90)
    assert borrowed, f"alpha alone never borrowed the idle slots:\n{timeline.show()}"
    timeline.until(lambda s: s[1]["alpha"] == CAPACITY, timeout_s=45)
    arrival = timeline.now()
    for team, count in (("beta", 3), ("default", 2)):
        for index in range(count):
            _submit(client, platform["sleepy"][team], f"{team}-{index}", {"seconds": JOB_S})
    reclaimed = timeline.until(lambda s: s[1]["beta"] >= 1 and s[1]["default"] >= 1,
                               timeout_s=JOB_S + 60)
    assert reclaimed, f"guarantees never came back:\n{timeline.show()}"
    reclaim_s = timeline.now() - arrival
    finished = timeline.until(lambda s: not any(s[1].values()) and not any(s[2].values()),
                              timeout_s=300)
    report = timeline.show()
    print(f"\nreclaim took {reclaim_s:.1f} s (job {JOB_S:.0f} s, period {PERIOD_S} s)\n{report}")
    assert finished, report
    assert sorted({run["state"]["type"] for run in timeline.runs}) == ["COMPLETED"], report
    assert max(sum(h.values()) for _, h, _ in timeline.samples) <= CAPACITY, report
    # Once alpha is back within its quota while every team waits, it stays there: the
    # borrowed slots went back to their owners and were not refilled by alpha.
    after = [s for s in timeline.samples if s[0] >= arrival]
    settled = next(i for i, s in enumerate(after) if s[1]["alpha"] <= QUOTA["alpha"])
    for t, holding, queued in after[settled:]:
        if queued["beta"] and queued["default"]:
            assert holding["alpha"] <= QUOTA["alpha"], f"at {t}s alpha refilled\n{report}"
    # Reclaim without preemption waits for borrowed runs to end: at most one job duration,
    # plus a controller period, a worker poll and a process start on this 2-core machine.
    assert reclaim_s <= JOB_S + PERIOD_S + 20, report


def test_preemption_requeues_the_newest_borrowed_run_which_resumes(platform: dict) -> None:
    client, root = platform["client"], platform["root"]
    platform["teams"].write_text(PLATFORM_ACCOUNTS + TEAMS_YAML.format(period=PERIOD_S,
                                                                          preemption="true"))
    folder = root / "checkpoints"
    folder.mkdir()
    deployments = {team: deploy_from_checkout(
        client, "checkpointed", CHECKPOINTED, f"checkpointed-{team}", "gpu", team,
        {"key": "none", "steps": 1, "step_s": 1.0, "folder": str(folder)})
        for team in ("alpha", "beta")}
    timeline = Timeline(client, {d: t for t, d in deployments.items()})
    steps, step_s = 10, 2.0
    for index in range(CAPACITY):
        _submit(client, deployments["alpha"], f"ckpt-alpha-{index}",
                {"key": f"alpha-{index}", "steps": steps, "step_s": step_s,
                 "folder": str(folder)})
    # Every alpha run has checkpointed at least one step: the preempted one has work to keep.
    assert timeline.until(lambda s: s[1]["alpha"] == CAPACITY and _steps_done(folder) == CAPACITY,
                          timeout_s=90), timeline.show()
    arrival = timeline.now()
    _submit(client, deployments["beta"], "ckpt-beta", {"key": "beta", "steps": 2,
                                                       "step_s": 1.0, "folder": str(folder)})
    got = timeline.until(lambda s: s[1]["beta"] >= 1, timeout_s=60)
    started_s = timeline.now() - arrival
    finished = timeline.until(lambda s: not any(s[1].values()) and not any(s[2].values()),
                              timeout_s=240)
    report = timeline.show()
    print(f"\nbeta started {started_s:.1f} s after arriving (period {PERIOD_S} s)\n{report}")
    assert got and finished, report
    runs = timeline.runs
    cancelled = [r for r in runs if r["state"]["type"] == "CANCELLED"]
    assert len(cancelled) == 1, [(r["name"], r["state"]["type"]) for r in runs]
    copies = [r for r in runs if f"requeued-from:{cancelled[0]['id']}" in r["tags"]]
    assert [c["state"]["type"] for c in copies] == ["COMPLETED"], runs
    # The controller logged the decision with its inputs, and the preemption it applied.
    log = (Path(platform["env"]["MLOPS_DATA_DIR"]) / "platform" /
           "fairshare-controller.log").read_text()
    assert f"preempt gpu/alpha run {cancelled[0]['id']}" in log, log[-3000:]
    assert '"inputs": {"capacity": 4' in log, log[-3000:]
    # Beta got its guarantee well before a job could end on its own (steps * step_s = 20 s).
    assert started_s < steps * step_s - 5, report
    # Every job did all its steps; the preempted one resumed from its checkpoint and redid
    # at most the step it was in (a step is journaled when its checkpoint is written).
    key = cancelled[0]["parameters"]["key"]
    starts, done = _journal(folder / f"{key}.journal")
    assert starts[0] == 0 and len(starts) == 2 and starts[1] >= 1, starts
    assert done[-1] == steps and len(done) - steps <= 1, done
    assert all(json.loads((folder / f"alpha-{i}.json").read_text())["done"] == steps
               for i in range(CAPACITY))


def _steps_done(folder: Path) -> int:
    """How many runs have checkpointed at least one step."""
    return sum(bool(_journal(path)[1]) for path in folder.glob("*.journal"))


def _journal(path: Path) -> tuple[list[int], list[int]]:
    """The steps each start resumed from, and each step done, in order."""
    starts, done = [], []
    for line in path.read_text().split():
        (starts if line.startswith("s") else done).append(int(line.lstrip("s")))
    return starts, done


def test_shares_are_published_as_a_table_artifact_and_gauges(platform: dict) -> None:
    import httpx

    found = platform["client"].post("/artifacts/filter",
                                    {"artifacts": {"key": {"any_": ["fairshare-gpu"]}}}).json()
    assert found, "no fairshare-gpu artifact"
    rows = json.loads(found[0]["data"]) if isinstance(found[0]["data"], str) else found[0]["data"]
    assert {row["team"] for row in rows} == set(TEAMS), rows
    assert {row["quota"] for row in rows if row["team"] == "alpha"} == {QUOTA["alpha"]}
    port = platform["env"]["MLOPS_FAIRSHARE_PORT"]
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert 'mlops_fairshare_quota{pool="gpu",team="alpha"} 2.0' in metrics, metrics[-2000:]
    # The preemption of the test before was counted.
    assert 'mlops_fairshare_preemptions_total{pool="gpu",team="alpha"} 1.0' in metrics
    # What the rules and the anomaly detector read: the pool's size, each team's queue wait
    # (nothing is queued by now) and that the controller is ticking.
    assert 'mlops_fairshare_capacity{pool="gpu"}' in metrics
    assert 'mlops_fairshare_oldest_queued_seconds{pool="gpu",team="alpha"} 0.0' in metrics
    assert "mlops_fairshare_last_tick_timestamp_seconds" in metrics
