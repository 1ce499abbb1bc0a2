"""Stage hand-overs in the object store: on the production profile each stage of one
pipeline run completes on a worker of its own, with a fresh, empty data directory, sharing
only the bucket (moto's S3 server), the machine's PostgreSQL and Redis and the tracking
store; what one stage hands the next lives under ``s3://<bucket>/handover/<run_id>/``. The
deploy stage, last, serves the champion from there."""

from __future__ import annotations

from pathlib import Path

import boto3
import httpx
import numpy as np
import pandas as pd
import pytest
import redis

from benchmarks.synthetic import generate_panel, synthetic_spec
from mlops.config import ModelSettings, Settings
from mlops.data import storage
from mlops.pipeline.handover import HandoverRef, handover_root, read_result, write_result
from mlops.pipeline.stages import (
    PipelineParams,
    Stage,
    deploy_stage,
    export_stage,
    features_stage,
    register_stage,
    train_stage,
    validate_stage,
)
from mlops.serving.deploy import stop_service
from mlops.training.model import load_model, predict
from tests.conftest import free_port
from tests.e2e.production_services import postgres_tenant, production_profile

pytestmark = pytest.mark.slow
REDIS_DB = 14
REF = HandoverRef(run_id="resume-anywhere-1")
MODEL = ModelSettings(epochs=2, hidden=[16], device="cpu")


def fresh_worker(monkeypatch: pytest.MonkeyPatch, folder: Path) -> Settings:
    """The settings of a worker whose data directory is new and empty."""
    folder.mkdir()
    monkeypatch.setenv("MLOPS_DATA_DIR", str(folder))
    return Settings()


def test_each_stage_runs_on_a_worker_with_an_empty_data_dir(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    online = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    with postgres_tenant() as tenant, production_profile(
            monkeypatch, tenant, tmp_path, f"redis://127.0.0.1:6379/{REDIS_DB}") as s3:
        online.flushdb()
        try:
            _run_stages(tmp_path, monkeypatch, s3.endpoint)
        finally:
            online.flushdb()


def _run_stages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    settings = fresh_worker(monkeypatch, tmp_path / "upload")
    dataset = f"{storage.data_root(settings)}/datasets/panel.parquet"
    with storage.object_store(settings, "uploading the dataset"):
        storage.write_parquet(dataset, generate_panel(n_entities=40, n_periods=5, seed=8))
    spec = synthetic_spec(dataset, name="handover_panel")

    settings = fresh_worker(monkeypatch, tmp_path / "validate")
    validated = validate_stage(spec, settings)
    written = write_result(handover_root(settings), REF, Stage.VALIDATE, validated)
    assert written == f"s3://mlops/handover/{REF.run_id}/validate.json"

    settings = fresh_worker(monkeypatch, tmp_path / "features")
    data = read_result(handover_root(settings), REF, Stage.VALIDATE)
    assert data == validated
    features = features_stage(data, spec, settings)
    write_result(handover_root(settings), REF, Stage.FEATURES, features)

    # The tracking store stands apart from the workers (the platform's MLflow server): the
    # training is tracked there, and registration continues its run.
    monkeypatch.setenv("MLOPS_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    settings = fresh_worker(monkeypatch, tmp_path / "train")
    features = read_result(handover_root(settings), REF, Stage.FEATURES)
    trained = train_stage(features.training_path, spec, MODEL, settings)
    write_result(handover_root(settings), REF, Stage.TRAIN, trained)
    assert trained.model_path.startswith("s3://mlops/training/handover_panel/models/")
    assert not [p for p in (tmp_path / "train").rglob("*") if p.is_file()]

    settings = fresh_worker(monkeypatch, tmp_path / "export")
    trained = read_result(handover_root(settings), REF, Stage.TRAIN)
    exported = export_stage(trained.model_path, trained.test_path, spec, settings)
    write_result(handover_root(settings), REF, Stage.EXPORT, exported)
    assert exported.parity_rows == trained.test_rows and exported.max_abs_diff <= 1e-4
    assert exported.onnx_path == trained.model_path.replace("model.pt", "model.onnx")

    settings = fresh_worker(monkeypatch, tmp_path / "register")
    root = handover_root(settings)
    assert read_result(root, REF, Stage.EXPORT) == exported
    registered = register_stage(
        PipelineParams(spec=spec, model=MODEL, deploy=False),
        *(read_result(root, REF, stage) for stage in (Stage.VALIDATE, Stage.FEATURES,
                                                       Stage.TRAIN, Stage.EXPORT)),
        settings, REF.run_id)
    write_result(root, REF, Stage.REGISTER, registered)
    assert (registered.version, registered.sha256) == ("1", exported.sha256)
    keys = boto3.client("s3", endpoint_url=endpoint).list_objects_v2(
        Bucket="mlops", Prefix=f"handover/{REF.run_id}/")["Contents"]
    assert sorted(item["Key"].rsplit("/", 1)[1] for item in keys) == [
        "export.json", "features.json", "register.json", "train.json", "validate.json"]
    assert not (tmp_path / "validate" / "handover").exists()  # nothing handed over locally
    with storage.object_store(settings, "reading the trained model"):
        mlp, arch = load_model(trained.model_path)
        test = storage.read_parquet(trained.test_path)
    assert arch.feature_names == spec.features and len(test) == trained.test_rows
    assert isinstance(test, pd.DataFrame)

    # The deploy stage too: its service loads the champion from the registry and the
    # bucket, and answers with the network's own predictions.
    monkeypatch.setenv("MLOPS_SERVE_PORT", str(free_port()))
    settings = fresh_worker(monkeypatch, tmp_path / "deploy")
    service = deploy_stage(spec, settings, "default")
    try:
        assert service.model_version == registered.version
        rows = test[spec.features].head(5)
        answer = httpx.post(f"{service.url}/v1/predict", timeout=30,
                            json={"records": rows.to_dict("records")})
        assert answer.status_code == 200, answer.text
        np.testing.assert_allclose(answer.json()["predictions"],
                                   predict(mlp, arch.task, rows.to_numpy("float32")),
                                   rtol=1e-4, atol=1e-5)
    finally:
        assert stop_service(settings)
