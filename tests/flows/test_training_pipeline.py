"""The training-pipeline flow on a real (temporary) Prefect server, end to end."""

from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient

from benchmarks.synthetic import generate_panel, synthetic_spec
from mlops.config import ModelSettings, Settings, TaskType
from mlops.governance.audit.log import open_audit_log
from mlops.pipeline.stages import PipelineParams
from mlops.serving.deploy import stop_service

pytestmark = pytest.mark.slow


@pytest.fixture
def platform(tmp_path: Path, port: int, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("MLOPS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MLOPS_SERVE_PORT", str(port))
    settings = Settings()
    yield settings
    stop_service(settings)


def _params(tmp_path: Path, frame, name: str = "panel") -> PipelineParams:
    path = tmp_path / f"{name}.parquet"
    frame.to_parquet(path, index=False)
    spec = synthetic_spec(str(path), TaskType.classification, name=name)
    model = ModelSettings(epochs=30, hidden=[16], batch_size=32, learning_rate=0.01)
    return PipelineParams(spec=spec, model=model, team="alpha")


def _versions(settings: Settings, name: str) -> list:
    client = MlflowClient(tracking_uri=settings.tracking, registry_uri=settings.tracking)
    return client.search_model_versions(f"name='{name}'")


def test_pipeline_serves_the_champion_and_reports(prefect_server: None, platform: Settings,
                                                  tmp_path: Path) -> None:
    from prefect import get_client

    from flows.training_pipeline import training_pipeline

    params = _params(tmp_path, generate_panel(n_entities=60, n_periods=8, seed=1))
    state = training_pipeline(params, return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary.aliases == ["challenger", "champion"] and summary.model_version == "1"
    assert summary.metrics["test_auc"] > 0.7
    assert [v.tags["sha256"] for v in _versions(platform, "alpha.panel")] == [summary.onnx_sha256]
    answer = httpx.post(f"{summary.endpoint}/v1/predict/entity", json={"entity_ids": [1, 2]})
    assert answer.status_code == 200 and len(answer.json()["predictions"]) == 2

    async def artifacts_and_task_runs():
        async with get_client() as client:
            artifact = await client.read_latest_artifacts()
            runs = await client.read_task_runs()
            return artifact, runs

    import asyncio

    artifacts, task_runs = asyncio.run(artifacts_and_task_runs())
    report = next(a for a in artifacts if a.key == "training-panel")
    assert "alpha.panel` v1" in report.data and "test_auc" in report.data
    run_id = state.state_details.flow_run_id
    flow_tasks = {r.name.rsplit("-", 1)[0] for r in task_runs if r.flow_run_id == run_id}
    assert {"validate-data", "build-features", "train-model", "export-onnx",
            "register-model", "deploy-service", "report-run"} <= flow_tasks
    with open_audit_log(platform) as log:
        facts = [(r.action, r.team, r.subject) for r in log.records()]
        assert log.verify().broken is None
    assert facts == [("dataset.validated", "alpha", "panel"),
                     ("model.registered", "alpha", "alpha.panel v1"),
                     ("alias.moved", "alpha", "alpha.panel@challenger"),
                     ("alias.moved", "alpha", "alpha.panel@champion"),
                     ("service.deployed", "alpha", "alpha.panel")]


def test_bad_data_stops_the_flow_before_training(prefect_server: None, platform: Settings,
                                                 tmp_path: Path) -> None:
    from flows.training_pipeline import training_pipeline

    frame = generate_panel(n_entities=30, n_periods=6, seed=2)
    frame.loc[3, "entity_id"] = None
    state = training_pipeline(_params(tmp_path, frame, name="corrupt"), return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception, match="entity_id"):
        state.result()
    assert not (platform.data_dir / "training" / "corrupt").exists()
    assert _versions(platform, "corrupt") == []
    assert not (platform.data_dir / "service" / "corrupt").exists()
    with open_audit_log(platform) as log:
        (fact,) = log.records()
    assert (fact.action, fact.subject, fact.details["outcome"]) == (
        "dataset.validated", "corrupt", "failed")
    assert "entity_id" in fact.details["detail"]


def test_an_audit_trail_that_cannot_record_stops_the_run(prefect_server: None,
                                                         platform: Settings,
                                                         tmp_path: Path) -> None:
    from flows.training_pipeline import training_pipeline

    (platform.data_dir / "audit" / "audit.jsonl").mkdir(parents=True)  # not a file
    state = training_pipeline(_params(tmp_path, generate_panel(n_entities=30, n_periods=6),
                                      name="unaudited"), return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception, match="dataset unaudited was validated .* audit trail"):
        state.result()
    assert not (platform.data_dir / "training" / "unaudited").exists()
