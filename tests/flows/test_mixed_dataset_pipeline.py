"""A dataset with a string category, an integer-coded one, a nullable number and plain
numbers, by configuration alone: the training pipeline on a real Prefect server, Feast,
MLflow and the service, to predictions from raw string values."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient

from benchmarks.synthetic import GRADES, generate_mixed_panel, mixed_spec
from mlops.config import CustomModel, ModelSettings, Settings, TaskType
from mlops.pipeline.stages import PipelineParams
from mlops.serving.deploy import stop_service
from mlops.training.train import primary_metric

pytestmark = pytest.mark.slow
RECORD = {"continent": "South America", "occupation": 4, "hours": None, "f0": 0.3, "f1": -0.2}


@pytest.fixture
def platform(tmp_path: Path, port: int, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("MLOPS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MLOPS_SERVE_PORT", str(port))
    settings = Settings()
    yield settings
    stop_service(settings)


@pytest.mark.parametrize("task", [TaskType.classification, TaskType.regression,
                                  TaskType.multiclass])
def test_raw_categories_and_nulls_from_data_to_a_served_prediction(
        prefect_server: None, platform: Settings, tmp_path: Path, task: TaskType) -> None:
    from flows.training_pipeline import training_pipeline

    path = tmp_path / "people.parquet"
    frame = generate_mixed_panel(n_entities=120, n_periods=6, task=task, seed=2)
    frame.to_parquet(path, index=False)
    spec = mixed_spec(str(path), task, name="people")
    params = PipelineParams(spec=spec, team="alpha", model=ModelSettings(
        epochs=15, hidden=[16], batch_size=32, learning_rate=0.01))
    state = training_pipeline(params, return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    if task == TaskType.classification:
        assert summary.metrics["test_auc"] > 0.8
    elif task == TaskType.multiclass:
        assert summary.metrics["test_auc_ovr"] > 0.75
    else:
        assert summary.metrics["test_rmse"] < frame["label"].std()
    # The baseline's metrics are logged to MLflow beside the network's.
    client = MlflowClient(tracking_uri=platform.tracking, registry_uri=platform.tracking)
    version = client.get_model_version(summary.model_name, summary.model_version)
    logged = client.get_run(version.run_id).data
    metric, _ = primary_metric(task)
    assert {metric, f"baseline_{metric}"} <= set(logged.metrics)
    assert logged.params["baseline_model"] == "hist_gradient_boosting"

    records = [RECORD, {**RECORD, "continent": "Atlantis", "occupation": None}]
    answer = httpx.post(f"{summary.endpoint}/v1/predict", json={"records": records})
    assert answer.status_code == 200, answer.text
    first, unseen = answer.json()["predictions"]
    assert first != unseen  # South America is known; Atlantis takes the unknown bucket
    if task == TaskType.multiclass:
        assert answer.json()["labels"][0] in GRADES

    continent = {"name": "continent", "datatype": "BYTES", "shape": [1],
                 "data": [RECORD["continent"]]}
    numbers = [{"name": name, "datatype": "FP32", "shape": [1], "data": [RECORD[name]]}
               for name in ("occupation", "hours", "f0", "f1")]
    infer = httpx.post(f"{summary.endpoint}/v2/models/{summary.model_name}/infer",
                       json={"inputs": [continent, *numbers]})
    assert infer.status_code == 200, infer.text
    assert infer.json()["outputs"][0]["data"][0] == pytest.approx(first, abs=1e-6)

    # The online store keeps the strings, and the entity route serves them.
    latest = frame.sort_values("event_timestamp").groupby("entity_id").tail(1)
    with_null = int(latest.loc[latest["hours"].isna(), "entity_id"].iloc[0])
    by_entity = httpx.post(f"{summary.endpoint}/v1/predict/entity",
                           json={"entity_ids": [1, with_null]})
    assert by_entity.status_code == 200, by_entity.text
    assert len(by_entity.json()["predictions"]) == 2


def test_the_champion_gate_ranks_multiclass_models_by_macro_auc(
        prefect_server: None, platform: Settings, tmp_path: Path) -> None:
    """A second version becomes champion exactly when its test_auc_ovr beats the first's."""
    from flows.training_pipeline import training_pipeline

    path = tmp_path / "grades.parquet"
    generate_mixed_panel(n_entities=120, n_periods=6, task=TaskType.multiclass,
                         seed=3).to_parquet(path, index=False)
    spec = mixed_spec(str(path), TaskType.multiclass, name="grades")
    runs = []
    for epochs in (15, 1):
        params = PipelineParams(spec=spec, team="alpha", deploy=False, model=ModelSettings(
            epochs=epochs, hidden=[16], batch_size=32, learning_rate=0.01))
        runs.append(training_pipeline(params))
    first, second = runs
    assert first.aliases == ["challenger", "champion"] and second.model_version == "2"
    wins = second.metrics["test_auc_ovr"] > first.metrics["test_auc_ovr"]
    assert ("champion" in second.aliases) == wins
    assert second.champion_version == ("2" if wins else "1")


def test_a_teams_own_network_from_the_spec_to_a_served_prediction(
        prefect_server: None, platform: Settings, tmp_path: Path) -> None:
    from flows.training_pipeline import training_pipeline

    path = tmp_path / "people.parquet"
    generate_mixed_panel(n_entities=120, n_periods=6, seed=4).to_parquet(path, index=False)
    spec = mixed_spec(str(path), TaskType.classification, name="people").model_copy(update={
        "model": CustomModel(factory="mlops.training.architectures:residual_mlp",
                             options={"width": 32, "blocks": 2})})
    params = PipelineParams(spec=spec, team="alpha", model=ModelSettings(
        epochs=10, batch_size=32, learning_rate=0.01))
    summary = training_pipeline(params)
    assert summary.metrics["test_auc"] > 0.8
    client = MlflowClient(tracking_uri=platform.tracking, registry_uri=platform.tracking)
    run = client.get_run(client.get_model_version(summary.model_name, "1").run_id)
    assert run.data.params["model_factory"] == "mlops.training.architectures:residual_mlp"
    answer = httpx.post(f"{summary.endpoint}/v1/predict", json={"records": [RECORD]})
    assert answer.status_code == 200 and 0 <= answer.json()["predictions"][0] <= 1
