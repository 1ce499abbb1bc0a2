"""Approvals on a real Prefect server: a team whose champion moves only on an approver's
word. The run pauses with a form; a non-approver's answer is refused and the run waits
again; an approver's yes moves champion, a no or no answer in time keeps it, and the run
ends NotPromoted saying so. Every answer is in the audit trail, under who gave it."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow import MlflowClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState
from prefect.client.schemas.filters import FlowRunFilterStateType as StateTypeFilter
from prefect.client.schemas.objects import StateType
from prefect.flow_runs import resume_flow_run

from benchmarks.synthetic import generate_panel, synthetic_spec
from mlops.config import ModelSettings, Settings
from mlops.governance.audit.log import open_audit_log
from mlops.pipeline.stages import PipelineParams

TEAMS = {"teams": [
    {"name": "alpha", "approval": {"required": True, "timeout_s": 300},
     "members": [{"name": "ann", "roles": ["approver"], "credential": "env:ANN_SECRET"},
                 {"name": "rob", "roles": ["runner"], "credential": "env:ROB_SECRET"}]},
    {"name": "gamma", "approval": {"required": True, "timeout_s": 3}},
]}


@pytest.fixture
def platform(prefect_server: None, tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch) -> Settings:
    teams = tmp_path / "teams.yaml"
    teams.write_text(yaml.safe_dump(TEAMS))
    monkeypatch.setenv("MLOPS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MLOPS_TEAMS_FILE", str(teams))
    return Settings()


def _params(settings: Settings, team: str, name: str) -> PipelineParams:
    folder = settings.data_dir / "datasets-in" / team
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.parquet"
    generate_panel(n_entities=40, n_periods=6, seed=4).to_parquet(path, index=False)
    return PipelineParams(spec=synthetic_spec(str(path), name=name), team=team, deploy=False,
                          model=ModelSettings(epochs=3, hidden=[8], batch_size=64))


class Run:
    """The training pipeline in a thread, as a worker runs it; its final state is kept."""

    def __init__(self, params: PipelineParams) -> None:
        from flows.training_pipeline import training_pipeline

        self.state: Any = None
        self.thread = threading.Thread(target=lambda: setattr(
            self, "state", training_pipeline(params, return_state=True)))
        self.thread.start()

    def finish(self, timeout_s: float = 300) -> Any:
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "the run did not finish"
        return self.state


def paused_run(previous: set[str] = frozenset(), timeout_s: float = 300) -> str:
    """The id of a run waiting for input that is not in ``previous`` (a new pause)."""
    import asyncio

    async def find() -> list[Any]:
        async with get_client() as client:
            return await client.read_flow_runs(flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=StateTypeFilter(any_=[StateType.PAUSED]))))

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for run in asyncio.run(find()):
            key = f"{run.id}:{run.state.state_details.pause_key}"
            if key not in previous and run.state.state_details.run_input_keyset:
                return key
        time.sleep(0.5)
    pytest.fail("no run paused for approval")


def answer(key: str, approve: bool, approver: str, comment: str = "") -> None:
    resume_flow_run(key.split(":")[0], run_input={"approve": approve, "comment": comment,
                                                   "approver": approver})


def champion(settings: Settings, name: str) -> str | None:
    client = MlflowClient(tracking_uri=settings.tracking, registry_uri=settings.tracking)
    aliases = client.get_registered_model(name).aliases
    return None if "champion" not in aliases else str(aliases["champion"])


def trail(settings: Settings) -> list[tuple[str, str, str]]:
    with open_audit_log(settings) as log:
        assert log.verify().broken is None
        return [(r.action, r.actor, r.subject) for r in log.records()
                if r.action.startswith(("approval", "alias"))]


def test_a_runner_is_refused_and_an_approver_makes_it_champion(platform: Settings) -> None:
    run = Run(_params(platform, "alpha", "approved"))
    first = paused_run()
    answer(first, True, "rob", "looks fine to me")  # a runner: refused, the run waits again
    second = paused_run({first})
    answer(second, True, "ann", "metrics checked")
    state = run.finish()
    assert state.is_completed() and state.name == "Completed", state.message
    summary = state.result()
    assert summary.aliases == ["challenger", "champion"] and not summary.held_back
    assert champion(platform, "alpha.approved") == "1"
    assert trail(platform) == [("alias.moved", "pipeline", "alpha.approved@challenger"),
                               ("approval.granted", "ann", "alpha.approved v1"),
                               ("alias.moved", "ann", "alpha.approved@champion")]


def test_a_rejection_keeps_the_champion_and_the_run_says_so(platform: Settings) -> None:
    run = Run(_params(platform, "alpha", "rejected"))
    answer(paused_run(), False, "ann", "drift in the hours feature")
    state = run.finish()
    assert state.is_completed() and state.name == "NotPromoted"
    assert "not approved; champion stays unset" in state.message
    assert champion(platform, "alpha.rejected") is None
    assert trail(platform)[-1] == ("approval.rejected", "ann", "alpha.rejected v1")


def test_no_answer_in_time_keeps_the_champion(platform: Settings) -> None:
    state = Run(_params(platform, "gamma", "unanswered")).finish()
    assert state.is_completed() and state.name == "NotPromoted"
    assert champion(platform, "gamma.unanswered") is None
    with open_audit_log(platform) as log:
        (rejected,) = [r for r in log.records() if r.action == "approval.rejected"]
    assert rejected.actor == "pipeline" and "timeout" in rejected.details["reason"]
