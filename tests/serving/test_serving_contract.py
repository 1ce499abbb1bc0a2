"""The contract of every route, with a real ONNX Runtime session, and model verification."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from onnx_models import FEATURES, ModelFactory, expected_scores
from serving_setup import serving_manager

from mlops.serving.app import create_app
from mlops.serving.predictor import ModelContractError, ModelIntegrityError, OnnxPredictor
from mlops.serving.v1_payloads import records_to_matrix


def test_live_and_ready(client: TestClient) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    ready = client.get("/v2/health/ready")
    assert ready.status_code == 200 and ready.json() == {"ready": True}


def test_model_describes_the_loaded_file(client: TestClient, onnx_model: tuple[Path, str]) -> None:
    body = client.get("/v1/model").json()
    assert body["name"] == "synthetic" and body["version"] == "3"
    assert body["task"] == "classification"
    assert body["feature_names"] == FEATURES
    assert body["sha256"] == onnx_model[1]
    assert body["max_batch"] == 100 and body["entity_lookup"] is False


def test_predict_one_record_matches_the_model(client: TestClient) -> None:
    record = {"f0": 1.5, "f1": -2, "f2": 0.25, "f3": 0.75}
    body = client.post("/v1/predict", json={"records": [record]}).json()
    expected = expected_scores(np.array([[1.5, -2, 0.25, 0.75]]))
    assert body["model"] == "synthetic" and body["version"] == "3"
    np.testing.assert_allclose(body["predictions"], expected, rtol=1e-5)
    assert body["labels"] == [int(expected[0] >= 0.5)]
    assert "entity_ids" not in body


def test_predict_many_keeps_row_order_and_ignores_key_order(client: TestClient) -> None:
    matrix = np.random.default_rng(0).normal(size=(64, 4)) * 3
    records = [dict(reversed(list(zip(FEATURES, row.tolist(), strict=True)))) for row in matrix]
    body = client.post("/v1/predict", json={"records": records}).json()
    expected = expected_scores(matrix)
    np.testing.assert_allclose(body["predictions"], expected, rtol=1e-5, atol=1e-7)
    assert body["labels"] == (expected >= 0.5).astype(int).tolist()
    assert 0 < sum(body["labels"]) < 64  # both classes occur, so the threshold is exercised


def test_regression_model_returns_values_without_labels(
        tmp_path: Path, model_factory: ModelFactory) -> None:
    path, sha = model_factory(tmp_path / "reg.onnx", task="regression")
    app = create_app(serving_manager(path, sha, "reg", "1"))
    body = TestClient(app).post("/v1/predict", json={"records": [
        {"f0": 1, "f1": 2, "f2": 3, "f3": 4}]}).json()
    np.testing.assert_allclose(body["predictions"],
                               expected_scores(np.array([[1, 2, 3, 4]]), "regression"), rtol=1e-5)
    assert "labels" not in body


def test_records_to_matrix_orders_columns_by_the_model() -> None:
    matrix = records_to_matrix([{"f3": 4, "f1": 2, "f0": 1, "f2": 3}], FEATURES)
    assert matrix.dtype == np.float32
    assert matrix.tolist() == [[1, 2, 3, 4]]


def test_predictor_rejects_a_matrix_of_the_wrong_width(predictor: OnnxPredictor) -> None:
    with pytest.raises(ValueError, match=r"expected shape \[batch, 4\], got \[2, 3\]"):
        predictor.predict(np.zeros((2, 3)))


def test_tampered_file_is_refused_naming_both_hashes(
        tmp_path: Path, model_factory: ModelFactory) -> None:
    path, sha = model_factory(tmp_path / "model.onnx")
    tampered, _ = model_factory(tmp_path / "model.onnx", bias=5.0)  # same path, new bytes
    actual = OnnxPredictor.load(str(tampered), None).sha256
    with pytest.raises(ModelIntegrityError) as info:
        OnnxPredictor.load(str(path), sha, "m", "1")
    assert sha in str(info.value) and actual in str(info.value)


def test_hash_is_checked_before_the_session_is_built(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not an onnx model at all")
    # Building a session from these bytes would raise ModelContractError; the hash comes first.
    with pytest.raises(ModelIntegrityError):
        OnnxPredictor.load(str(junk), "0" * 64, "m", "1")
    with pytest.raises(ModelContractError, match="not a loadable ONNX model"):
        OnnxPredictor.load(str(junk), None, "m", "1")


def test_expected_hash_is_case_insensitive(onnx_model: tuple[Path, str]) -> None:
    path, sha = onnx_model
    assert OnnxPredictor.load(str(path), sha.upper(), "m", "1").sha256 == sha


@pytest.mark.parametrize(("metadata", "message"), [
    ({"feature_names": "f0,f1"}, "must be a JSON list"),
    ({"feature_names": json.dumps(["f0", "f1"])}, "input width 4 != 2 feature names"),
    ({"task": "ranking"}, "metadata 'task'"),
])
def test_models_breaking_the_contract_are_refused(
        tmp_path: Path, model_factory: ModelFactory, metadata: dict[str, str],
        message: str) -> None:
    path, sha = model_factory(tmp_path / "bad.onnx", metadata=metadata)
    with pytest.raises(ModelContractError, match=message):
        OnnxPredictor.load(str(path), sha, "m", "1")


def test_missing_model_file_is_a_contract_error(tmp_path: Path) -> None:
    with pytest.raises(ModelContractError, match="cannot read model file"):
        OnnxPredictor.load(str(tmp_path / "absent.onnx"), None, "m", "1")
