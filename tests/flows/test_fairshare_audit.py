"""The fair-share controller's audit records, one tick at a time against a real Prefect
server: each limit change, preemption and budget hold is recorded under the controller's
account before it is made; with the audit trail unable to record, the tick changes nothing
(limits stay, no run is preempted) and the next tick, with the trail back, does it all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from prefect.client.orchestration import PrefectClient, get_client

from infra.fairshare_audit import ControllerAudit, controller_actor
from infra.fairshare_tick import PoolDecision, tick
from infra.provision import provision
from mlops.fairshare.teams import TeamsConfig
from mlops.governance.audit.log import open_audit_log
from tests.flows.test_fairshare_tick import _config, _limits, _runs
from tests.unit.test_gateway_audit import TEAMS_YAML, local_settings, records, store_down

Setup = Callable[[PrefectClient], Awaitable[None]]


def _ticks(config: TeamsConfig, pool: str, data_dir: Path, setup: Setup) -> tuple:
    """Provision, set runs up, then tick with the trail down, read, tick with it back,
    read, tick again: (decisions and limits) per tick."""
    audit = ControllerAudit(open_audit_log(local_settings(data_dir)), "fs-bot")

    async def scenario() -> list[tuple[PoolDecision, dict]]:
        await provision(config)
        async with get_client() as client:
            await setup(client)
            seen = []
            for down in (True, False, False):
                if down:
                    with store_down(data_dir):
                        decisions = await tick(client, config, audit=audit)
                else:
                    decisions = await tick(client, config, audit=audit)
                seen.append((next(d for d in decisions if d.pool == pool),
                             await _limits(client, pool)))
            return seen

    return tuple(asyncio.run(scenario()))


def test_limit_changes_are_recorded_first_and_wait_while_the_trail_is_down(
        prefect_server: None, tmp_path: Path) -> None:
    config = _config(tmp_path, "fsl")
    data_dir = tmp_path / "data"

    async def setup(client: PrefectClient) -> None:
        await _runs(client, "fsl-gpu", "alpha", 3, running=False)  # alpha may borrow 2

    (down, before), (up, after), (again, _) = _ticks(config, "fsl-gpu", data_dir, setup)
    assert down.applied == [] and len(down.unrecorded) == 1, down
    assert down.unrecorded[0].startswith("queue.limit_changed fsl-gpu/alpha: the audit trail "
                                         "cannot record it (audit file ")
    assert before["alpha"] == 1  # as provisioned: unchanged while the trail was down
    assert after["alpha"] == 3 and up.unrecorded == [], up
    assert again.applied == []  # nothing left to change, nothing recorded twice
    changed = records(data_dir, "queue.limit_changed")
    assert [(r.actor, r.team, r.subject, r.details) for r in changed
            if r.subject == "fsl-gpu/alpha"] == [
        ("fs-bot", "alpha", "fsl-gpu/alpha",
         {"pool": "fsl-gpu", "queue": "alpha", "old": 1, "new": 3})]
    assert len(changed) == sum(line.startswith("limit ") for line in up.applied)


def test_preemptions_and_budget_holds_are_recorded_and_wait_while_the_trail_is_down(
        prefect_server: None, tmp_path: Path) -> None:
    raw = _config(tmp_path, "fsp", preemption=True).model_dump(mode="json")
    raw["teams"][0]["budget_gpu_hours"] = 1e-9  # alpha is over as soon as it runs
    config = TeamsConfig.model_validate(raw)
    data_dir = tmp_path / "data"

    async def setup(client: PrefectClient) -> None:
        await _runs(client, "fsp-gpu", "alpha", 3, running=True)  # borrows 2
        await _runs(client, "fsp-gpu", "beta", 2, running=False)  # owed its quota of 2
        await asyncio.sleep(0.2)  # some GPU time used

    (down, before), (up, _), (again, _) = _ticks(config, "fsp-gpu", data_dir, setup)
    assert down.applied == [] and down.plan.preempt, down
    assert down.unrecorded[0].startswith("budget.held team alpha: the audit trail cannot")
    assert before["alpha"] == 1 and before["beta"] == 2  # as provisioned
    preempted = [line for line in up.applied if line.startswith("preempt ")]
    assert len(preempted) == 2 and up.unrecorded == [], up.applied
    [held] = records(data_dir, "budget.held")
    assert (held.actor, held.team, held.details["budget_gpu_hours"]) == ("fs-bot", "alpha",
                                                                         1e-9)
    assert held.details["used_gpu_hours"] > 0 and held.details["over_budget"] == "borrow"
    runs = records(data_dir, "run.preempted")
    assert sorted(r.subject for r in runs) == sorted(line.split()[3] for line in preempted)
    assert {(r.actor, r.team) for r in runs} == {("fs-bot", "alpha")}
    assert "reclaimed" in runs[0].details["reason"]
    assert again.applied == [] and len(records(data_dir, "budget.held")) == 1  # once per hold


def test_the_controller_acts_as_its_service_account(tmp_path: Path) -> None:
    named = tmp_path / "teams.yaml"
    named.write_text(TEAMS_YAML)
    assert controller_actor(named) == "fairshare-controller"
    named.write_text(TEAMS_YAML.replace("name: fairshare-controller", "name: fs-bot"))
    assert controller_actor(named) == "fs-bot"
    none = tmp_path / "bare.yaml"
    none.write_text("pools: {gpu: {capacity: 1}}\n")
    assert controller_actor(none) == "fairshare-controller"
    assert controller_actor(tmp_path / "absent.yaml") == "fairshare-controller"


def test_the_controller_refuses_to_start_without_its_audit_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from flows.fairshare_controller import main

    teams = tmp_path / "teams.yaml"
    teams.write_text(TEAMS_YAML)
    monkeypatch.setenv("MLOPS_PROFILE", "production")
    monkeypatch.setenv("MLOPS_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("MLOPS_AUDIT_KEY", raising=False)
    assert main(["--file", str(teams)]) == 2
    assert "MLOPS_AUDIT_KEY is not set" in capsys.readouterr().err
