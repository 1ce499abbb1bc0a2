"""Drift, then retraining, on a real `make up` stack (issue 15, part 4): the deployed
service samples its requests; the drift-check deployment compares them with the training
set; drift emits the event on which `make up`'s automation starts the team's training
deployment, once per cool-down; an unshifted stream starts nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml

from benchmarks.synthetic import (
    generate_mixed_panel,
    mixed_spec,
    request_records,
    shift_mixed_panel,
)
from mlops.config import Settings, TaskType
from mlops.data import storage
from mlops.monitoring.policy import DRIFT_EVENT
from mlops.serving.deploy import service_dir, stop_service
from mlops.serving.sampling import requests_folder
from tests.conftest import wait_for
from tests.e2e.stack import (
    DEFAULT_TEAMS,
    PrefectApi,
    deploy_from_checkout,
    running_stack,
    team_data,
    wait_final,
)

pytestmark = pytest.mark.slow
MODEL = "default.mixed"
RETRAIN = "mixed-retrain"
STREAM_ENTITIES = 125  # 1,000 rows a stream: the policy's minimum


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("drift-stack")
    raw = yaml.safe_load(DEFAULT_TEAMS.read_text())
    for team in raw["teams"]:
        if team["name"] == "default":
            team["drift"] = {"min_rows": 1000, "cooldown_s": 3600,
                             "retrain": f"training-pipeline/{RETRAIN}"}
    teams = root / "teams.yaml"
    teams.write_text(yaml.safe_dump(raw))
    with running_stack(root, "--teams", str(teams), PREFECT_WORKER_QUERY_SECONDS="1",
                       MLOPS_SAMPLE_RATE="1", MLOPS_SAMPLE_FLUSH_S="1") as stack:
        yield stack


@pytest.fixture(scope="module")
def served(stack: dict) -> Iterator[dict]:
    """The mixed dataset trained and served by a run of the team's training deployment,
    and the drift-check deployment of it."""
    client: PrefectApi = stack["client"]
    data = team_data(stack) / "mixed.parquet"
    generate_mixed_panel(n_entities=150, seed=1).to_parquet(data, index=False)
    spec = mixed_spec(str(data), TaskType.classification).model_dump(mode="json")
    params = {"spec": spec, "team": "default", "model": {"epochs": 3, "hidden": [16]}}
    training = deploy_from_checkout(
        client, "training-pipeline", "flows/training_pipeline.py:training_pipeline", RETRAIN,
        "gpu", "default", {"params": {**params, "deploy": False}}, tags=["team:default"])
    first = client.post(f"/deployments/{training}/create_flow_run",
                        {"parameters": {"params": {**params, "deploy": True}}})
    assert first.status_code == 201, first.text
    run = wait_final(client, first.json()["id"], 600)
    assert run["state"]["type"] == "COMPLETED", (run["state"], run_logs(client, run))
    drift = deploy_from_checkout(
        client, "drift-check", "flows/drift_check.py:drift_check", "mixed-drift", "cpu",
        "default", {"params": {"spec": spec, "team": "default"}}, tags=["team:default"])
    settings = Settings(data_dir=Path(stack["env"]["MLOPS_DATA_DIR"]))
    port = (service_dir(settings, MODEL) / "port").read_text().strip()
    yield {"training": training, "drift": drift, "url": f"http://127.0.0.1:{port}",
           "samples": requests_folder(str(settings.data_dir), MODEL), "first": run["id"]}
    stop_service(settings)  # the deploy stage's service (and its supervisor) outlive `down`


def stream(served: dict, frame: pd.DataFrame) -> None:
    """Clients' requests to the service, then the sample it wrote of them (rate 1)."""
    storage.remove(served["samples"])  # the previous window has passed
    records = request_records(frame, mixed_spec("x").features)
    with httpx.Client(base_url=served["url"], timeout=30) as http:
        for start in range(0, len(records), 40):
            answer = http.post("/v1/predict", json={"records": records[start:start + 40]})
            assert answer.status_code == 200, answer.text
    wait_for(lambda: sum(len(storage.read_parquet(path))
                         for path in storage.list_files(served["samples"])) == len(records),
             30, "the service's sample of the stream")


def check_drift(client: PrefectApi, served: dict) -> str:
    """Run the drift-check deployment; its summary artifact."""
    run = client.post(f"/deployments/{served['drift']}/create_flow_run", {})
    assert run.status_code == 201, run.text
    final = wait_final(client, run.json()["id"], 300)
    assert final["state"]["type"] == "COMPLETED", (final["state"], run_logs(client, final))
    found = client.post("/artifacts/filter", {
        "artifacts": {"key": {"any_": ["drift-check"]},
                      "flow_run_id": {"any_": [run.json()["id"]]}}}).json()
    return found[0]["data"]


def run_logs(client: PrefectApi, run: dict) -> str:
    logs = client.post("/logs/filter", {"logs": {"flow_run_id": {"any_": [run["id"]]}}})
    return "\n".join(line["message"][-2000:] for line in logs.json())


def retrainings(client: PrefectApi, served: dict) -> list[dict]:
    """The training deployment's runs other than the first (the automation's)."""
    runs = client.post("/flow_runs/filter", {
        "flow_runs": {"deployment_id": {"any_": [served["training"]]}}}).json()
    return [run for run in runs if run["id"] != served["first"]]


def registry_versions(stack: dict) -> tuple[list[str], dict[str, str]]:
    from mlflow import MlflowClient

    tracking = f"sqlite:///{stack['env']['MLOPS_DATA_DIR']}/mlflow.db"
    client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    versions = client.search_model_versions(f"name='{MODEL}'")
    aliases = client.get_registered_model(MODEL).aliases
    return sorted(str(v.version) for v in versions), aliases


def test_the_service_is_scraped_and_its_training_run_is_in_mlflow(stack: dict,
                                                                  served: dict) -> None:
    """Prometheus finds the deploy stage's service by itself (file discovery), and the
    version's MLflow run holds its training's system metrics and per-epoch histories."""
    from mlflow import MlflowClient

    prometheus = f"http://127.0.0.1:{stack['env']['MLOPS_PROMETHEUS_PORT']}/api/v1/query"
    query = f'up{{job="serving",model="{MODEL}",team="default"}} == 1'
    wait_for(lambda: httpx.get(prometheus, params={"query": query}).json()["data"]["result"],
             60, "Prometheus scraping the deployed service")
    tracking = f"sqlite:///{stack['env']['MLOPS_DATA_DIR']}/mlflow.db"
    client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    version = client.get_model_version(MODEL, "1")
    run = client.get_run(version.run_id)
    assert run.data.tags["mlops.team"] == "default" and run.data.tags["mlops.pool"] == "gpu"
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in history] == [1, 2, 3]
    assert "system/cpu_utilization_percentage" in run.data.metrics, sorted(run.data.metrics)


def test_an_unshifted_stream_starts_nothing(stack: dict, served: dict) -> None:
    client = stack["client"]
    stream(served, generate_mixed_panel(n_entities=STREAM_ENTITIES, seed=7))
    summary = check_drift(client, served)
    assert summary.count("No drift") == 1, summary
    time.sleep(10)  # an automation acts within seconds of an event
    assert retrainings(client, served) == []
    assert registry_versions(stack)[0] == ["1"]


def test_a_shifted_stream_retrains_once_per_cool_down(stack: dict, served: dict) -> None:
    client = stack["client"]
    stream(served, shift_mixed_panel(generate_mixed_panel(n_entities=STREAM_ENTITIES,
                                                          seed=8)))
    summary = check_drift(client, served)
    assert "**Drift:" in summary and "| f0 |" in summary, summary
    events = wait_for(lambda: client.post("/events/filter", {  # stored within seconds
        "filter": {"event": {"name": [DRIFT_EVENT]}}, "limit": 10}).json()["events"], 60,
        "the drift event")
    assert events[0]["resource"]["prefect.resource.id"] == f"mlops.model.{MODEL}"
    assert any(r["prefect.resource.id"] == f"prefect.deployment.{served['training']}"
               for r in events[0]["related"])

    started = wait_for(lambda: retrainings(client, served), 60, "the automation's run")
    assert len(started) == 1
    final = wait_final(client, started[0]["id"], 600)
    assert final["state"]["type"] == "COMPLETED", final["state"]
    versions, aliases = registry_versions(stack)
    assert versions == ["1", "2"] and str(aliases["challenger"]) == "2", aliases

    # Still drifted within the cool-down: the event again, no second retraining.
    assert "**Drift:" in check_drift(client, served)
    time.sleep(15)
    assert len(retrainings(client, served)) == 1
