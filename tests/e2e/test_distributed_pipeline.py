"""The pipeline across infrastructure, as a team runs it: `make up`, `make deploy`, a REST
trigger of the parent deployment, and each stage run as its own deployment by the process
worker of its pool (train on `gpu`, the rest on `cpu`), handing over through files."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from benchmarks.synthetic import generate_panel, synthetic_spec
from tests.e2e.stack import (
    PrefectApi,
    child_runs,
    run_module,
    running_stack,
    team_data,
    wait_final,
)

pytestmark = pytest.mark.slow
PARENT = "training-pipeline-distributed/default"
CPU_STAGES = {"validate-stage", "export-stage", "register-stage"}



@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("distributed")
    with running_stack(root, PREFECT_WORKER_QUERY_SECONDS="2") as stack:
        deployed = run_module("infra.flow_deployments",
                              env={**stack["env"], "PREFECT_API_URL": stack["api"]})
        assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
        yield stack


def test_the_stages_run_on_their_pools_and_register_a_model(platform: dict) -> None:
    data = team_data(platform) / "panel.parquet"
    generate_panel(n_entities=40, n_periods=6, seed=5).to_parquet(data, index=False)
    run_id = _trigger(platform["client"], data, "dist_panel")
    run = wait_final(platform["client"], run_id, timeout_s=540)
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert run["work_pool_name"] == "cpu"
    children = child_runs(platform["client"], run_id)
    assert sorted(children) == sorted([*CPU_STAGES, "train-stage"])
    assert children["train-stage"]["work_pool_name"] == "gpu"
    for stage in CPU_STAGES:
        assert children[stage]["work_pool_name"] == "cpu", stage
    assert {c["work_queue_name"] for c in children.values()} == {"default"}
    assert all(c["state"]["type"] == "COMPLETED" for c in children.values())
    # Results were handed over as files in the artifact store, one per stage.
    handover = Path(platform["env"]["MLOPS_DATA_DIR"]) / "handover" / run_id
    assert sorted(p.name for p in handover.iterdir()) == [
        "export.json", "features.json", "register.json", "train.json", "validate.json"]
    registered = json.loads((handover / "register.json").read_text())
    assert registered["name"] == "default.dist_panel"  # the deployment's team's model
    versions = _model_versions(platform, "default.dist_panel")
    assert [str(v.version) for v in versions] == [registered["version"]]
    exported = json.loads((handover / "export.json").read_text())
    assert registered["sha256"] == exported["sha256"]


def test_a_failed_stage_fails_the_parent_with_its_message(platform: dict) -> None:
    frame = generate_panel(n_entities=40, n_periods=6, seed=6)
    frame["entity_id"] = frame["entity_id"].astype("float64")
    frame.loc[np.arange(3), "entity_id"] = np.nan
    data = team_data(platform) / "corrupt.parquet"
    frame.to_parquet(data, index=False)
    run_id = _trigger(platform["client"], data, "dist_corrupt")
    run = wait_final(platform["client"], run_id, timeout_s=540)
    assert run["state"]["type"] == "FAILED", run["state"]
    message = run["state"]["message"] or ""
    assert "validate-stage" in message, message
    assert "expect_column_values_to_not_be_null" in message and "entity_id" in message, message
    children = child_runs(platform["client"], run_id)
    assert list(children) == ["validate-stage"]
    assert children["validate-stage"]["state"]["type"] == "FAILED"
    assert _model_versions(platform, "default.dist_corrupt") == []


def _trigger(client: PrefectApi, data: Path, name: str) -> str:
    spec = synthetic_spec(str(data), name=name).model_dump(mode="json")
    deployment = client.get(f"/deployments/name/{PARENT}")
    assert deployment["work_pool_name"] == "cpu", deployment
    body = {"parameters": {"params": {"spec": spec, "model": {"epochs": 3}, "deploy": False}},
            "idempotency_key": name}
    run = client.post(f"/deployments/{deployment['id']}/create_flow_run", body)
    assert run.status_code == 201, run.text
    return run.json()["id"]


def _model_versions(platform: dict, name: str) -> list:
    from mlflow import MlflowClient

    tracking = f"sqlite:///{platform['env']['MLOPS_DATA_DIR']}/mlflow.db"
    client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    return client.search_model_versions(f"name='{name}'")
