"""One controller tick against a real Prefect server: what it reads, what it writes, that a
second tick writes nothing, preemption (requeue, then cancel) and GPU-hour budgets.

No worker runs here: runs are put in the states a worker would put them in, so each test
knows exactly what the controller sees. Each test has pools of its own.
"""

import asyncio
import time
from pathlib import Path

import pytest
import yaml
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
from prefect.states import Completed, Running

from infra.fairshare_tick import tick
from infra.prefect_api import REQUEUED_TAG, require_queue
from infra.provision import provision
from mlops.fairshare.teams import TeamsConfig, load_teams


def _config(tmp_path: Path, prefix: str, **fairshare: object) -> TeamsConfig:
    raw = {"fairshare": {"period_s": 1, "budget_pool": f"{prefix}-gpu", **fairshare},
           "pools": {f"{prefix}-gpu": {"capacity": 3}, f"{prefix}-cpu": {"capacity": 1}},
           "teams": [
               {"name": "alpha", "weight": 1, "priority": 1,
                "quotas": {f"{prefix}-gpu": 1, f"{prefix}-cpu": 0}},
               {"name": "beta", "weight": 1, "priority": 2,
                "quotas": {f"{prefix}-gpu": 2, f"{prefix}-cpu": 0}},
               {"name": "default", "weight": 1, "priority": 3,
                "quotas": {f"{prefix}-gpu": 0, f"{prefix}-cpu": 1}}]}
    path = tmp_path / "teams.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_teams(path)


async def _runs(client: PrefectClient, pool: str, queue: str, count: int,
                running: bool) -> list[str]:
    """``count`` runs of a deployment on the queue; RUNNING (as a worker starts them) or
    left SCHEDULED (queued)."""
    flow_id = await client.create_flow_from_name("fairshare-probe")
    deployment = await client.create_deployment(
        flow_id, f"probe-{pool}-{queue}", work_pool_name=pool, work_queue_name=queue,
        entrypoint="tests/e2e/sleepy_flow.py:sleepy")
    ids = []
    for _ in range(count):
        run = await client.create_flow_run_from_deployment(deployment)
        if running:
            await client.set_flow_run_state(run.id, Running(), force=True)
        ids.append(str(run.id))
        await asyncio.sleep(0.05)  # distinct start times: "newest" is well defined
    return ids


async def _limits(client: PrefectClient, pool: str) -> dict[str, int | None]:
    return {q.name: q.concurrency_limit for q in await client.read_work_queues(pool)}


def test_a_tick_reclaims_by_preemption_and_a_second_tick_changes_nothing(
        prefect_server: None, tmp_path: Path) -> None:
    config = _config(tmp_path, "fst", preemption=True)

    async def scenario() -> tuple:
        await provision(config)
        async with get_client() as client:
            alpha = await _runs(client, "fst-gpu", "alpha", 3, running=True)  # borrows 2
            await _runs(client, "fst-gpu", "beta", 2, running=False)  # owed its quota of 2
            decisions = await tick(client, config)
            limits = await _limits(client, "fst-gpu")
            states = {i: (await client.read_flow_run(i)).state.type.value for i in alpha}
            copies = {i: await client.read_flow_runs(flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=[f"{REQUEUED_TAG}{i}"]))) for i in alpha}
            again = await tick(client, config)
            return alpha, decisions, limits, states, copies, again

    alpha, decisions, limits, states, copies, again = asyncio.run(scenario())
    gpu = next(d for d in decisions if d.pool == "fst-gpu")
    assert gpu.inputs()["running"] == {"alpha": 3, "beta": 0, "default": 0}
    assert gpu.inputs()["queued"] == {"alpha": 0, "beta": 2, "default": 0}
    assert gpu.plan.allocation == {"alpha": 1, "beta": 2, "default": 0}
    # The two newest alpha runs were preempted: cancelled, each requeued once, in its queue.
    assert [states[i] for i in alpha] == ["RUNNING", "CANCELLING", "CANCELLING"], states
    for run_id in alpha[1:]:
        assert len(copies[run_id]) == 1 and copies[run_id][0].work_queue_name == "alpha"
        assert copies[run_id][0].state.is_scheduled()
    assert sum(line.startswith("preempt fst-gpu/alpha") for line in gpu.applied) == 2, gpu.applied
    assert limits["alpha"] == 1 and limits["beta"] == 2, limits
    assert limits["alpha-high"] == 0 and limits["beta-low"] == 0, limits
    # Nothing changed on the server since: the second tick writes and preempts nothing
    # (the cancelling runs are leaving, not preempted twice).
    assert [line for decision in again for line in decision.applied] == [], again


def test_a_team_over_its_gpu_budget_loses_its_guarantee(prefect_server: None,
                                                         tmp_path: Path) -> None:
    config = _config(tmp_path, "fsb")
    raw = config.model_dump(mode="json")
    raw["teams"][0]["budget_gpu_hours"] = 0.0002  # 0.72 GPU-seconds
    over = TeamsConfig.model_validate(raw)

    async def scenario() -> tuple:
        await provision(config)
        async with get_client() as client:
            [used] = await _runs(client, "fsb-gpu", "alpha", 1, running=True)
            within = await tick(client, over, apply=False)
            time.sleep(1.0)
            await client.set_flow_run_state(used, Completed(), force=True)
            await _runs(client, "fsb-gpu", "alpha", 1, running=False)
            await _runs(client, "fsb-gpu", "beta", 3, running=False)
            spent = await tick(client, over, apply=False)
            return within, spent

    within, spent = asyncio.run(scenario())
    before = next(d for d in within if d.pool == "fsb-gpu")
    after = next(d for d in spent if d.pool == "fsb-gpu")
    assert before.inputs()["over_budget"] == [], before.inputs()
    assert after.gpu_hours["alpha"] >= 0.0002 and after.inputs()["over_budget"] == ["alpha"]
    # Over budget, alpha keeps no guarantee: beta (within budget) takes the idle slot first.
    assert after.plan.allocation == {"alpha": 0, "beta": 3, "default": 0}, after.outputs()
    cpu = next(d for d in spent if d.pool == "fsb-cpu")  # a GPU budget: other pools unchanged
    assert not any(team.over_budget for team in cpu.teams)


def test_a_stage_is_refused_a_queue_its_pool_lacks(prefect_server: None, tmp_path: Path) -> None:
    raw = _config(tmp_path, "fsq").model_dump(mode="json")
    raw["fairshare"] = None  # controller off: no high and low queues
    config = TeamsConfig.model_validate(raw)

    async def scenario() -> None:
        await provision(config)
        async with get_client() as client:
            await _runs(client, "fsq-gpu", "alpha", 0, running=False)  # the deployment only

    asyncio.run(scenario())
    deployment = "fairshare-probe/probe-fsq-gpu-alpha"
    require_queue(deployment, "alpha")  # declared: no error
    with pytest.raises(ValueError, match="no queue 'alpha-high'.*fair-share controller"):
        require_queue(deployment, "alpha-high")
    with pytest.raises(ValueError, match="no queue 'gamma'.*declared in the teams file"):
        require_queue(deployment, "gamma")


def test_the_controller_refuses_bad_settings_before_starting(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from flows.fairshare_controller import main

    with pytest.raises(SystemExit) as refused:
        main(["--period-s", "0"])
    assert refused.value.code == 2 and "--period-s must be > 0" in capsys.readouterr().err
    bad = tmp_path / "teams.yaml"
    bad.write_text("pools: {gpu: {capacity: 1}}\nteams: []\n")
    assert main(["--file", str(bad)]) == 2
    assert "teams must be a non-empty list" in capsys.readouterr().err
