"""Serving a multiclass model: a probability per class and the most probable class's name,
over v1, v2 (JSON and the binary extension, BYTES labels) and gRPC, its metadata naming
the classes."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as triton
from fastapi.testclient import TestClient
from grpc_serving import grpc_serving
from serving_setup import serving_manager

from benchmarks.synthetic import GRADES, generate_mixed_panel, mixed_spec
from mlops.atomic_files import sha256_file
from mlops.config import ModelSettings, TaskType
from mlops.serving.app import ServingConfig, create_app
from mlops.serving.body import BINARY_HEADER
from mlops.training.export import export_onnx
from mlops.training.train import train_model

CLASSES = sorted(GRADES)
RECORDS = [
    {"continent": "Asia", "occupation": 3, "hours": 40.0, "f0": 2.5, "f1": -1.0},
    {"continent": "Africa", "occupation": 1, "hours": None, "f0": -2.0, "f1": 1.5},
]


@pytest.fixture(scope="module")
def multiclass_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("multiclass-serving")
    path = folder / "grades.parquet"
    generate_mixed_panel(n_entities=60, task=TaskType.multiclass).to_parquet(path, index=False)
    spec = mixed_spec(str(path), TaskType.multiclass)
    trained = train_model(str(path), spec, ModelSettings(hidden=[16], epochs=3), folder / "t")
    onnx_path = Path(export_onnx(trained.model_path, trained.test_path, folder / "o").onnx_path)
    return onnx_path, sha256_file(onnx_path)


@pytest.fixture(scope="module")
def client(multiclass_model: tuple[Path, str]) -> TestClient:
    manager = serving_manager(*multiclass_model, name="grades")
    return TestClient(create_app(manager, None, ServingConfig(max_batch=100)))


def _inputs() -> list[dict]:
    return [{"name": name, "datatype": "BYTES" if name == "continent" else "FP32",
             "shape": [2], "data": [r[name] for r in RECORDS]}
            for name in ("continent", "occupation", "hours", "f0", "f1")]


def test_v1_answers_class_probabilities_and_names(client) -> None:
    body = client.post("/v1/predict", json={"records": RECORDS}).json()
    probabilities = np.array(body["predictions"])
    assert probabilities.shape == (2, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert body["labels"] == [CLASSES[i] for i in probabilities.argmax(axis=1)]
    assert client.get("/v1/model").json()["classes"] == CLASSES


def test_v2_json_answers_a_matrix_and_bytes_labels(client) -> None:
    answer = client.post("/v2/models/grades/infer", json={"inputs": _inputs()})
    assert answer.status_code == 200, answer.text
    outputs = {o["name"]: o for o in answer.json()["outputs"]}
    assert outputs["prediction"]["shape"] == [2, 3]
    assert np.array(outputs["prediction"]["data"]).shape == (2, 3)
    assert outputs["label"]["datatype"] == "BYTES"
    assert outputs["label"]["data"] == [CLASSES[i] for i in
                                        np.argmax(outputs["prediction"]["data"], axis=1)]


def test_v2_binary_outputs_follow_the_extension(client) -> None:
    answer = client.post("/v2/models/grades/infer", json={
        "inputs": _inputs(), "parameters": {"binary_data_output": True}})
    assert answer.status_code == 200, answer.text
    length = int(answer.headers[BINARY_HEADER.decode()])
    header, data = json.loads(answer.content[:length]), answer.content[length:]
    prediction, label = header["outputs"]
    size = prediction["parameters"]["binary_data_size"]
    probabilities = np.frombuffer(data[:size], dtype="<f4").reshape(prediction["shape"])
    names, rest = [], data[size:]
    while rest:  # each element: its 4-byte little-endian length, then its bytes
        (n,) = struct.unpack("<I", rest[:4])
        names.append(rest[4:4 + n].decode())
        rest = rest[4 + n:]
    assert label["datatype"] == "BYTES" and label["parameters"]["binary_data_size"] == len(
        data) - size
    assert names == [CLASSES[i] for i in probabilities.argmax(axis=1)]


def test_v2_metadata_names_the_classes(client) -> None:
    meta = client.get("/v2/models/grades").json()
    outputs = {o["name"]: o for o in meta["outputs"]}
    assert outputs["prediction"]["shape"] == [-1, 3]
    assert outputs["label"]["datatype"] == "BYTES"
    assert meta["parameters"]["classes"] == CLASSES and meta["parameters"]["task"] == (
        "multiclass")


def test_grpc_answers_probabilities_and_class_names(multiclass_model) -> None:
    """tritonclient.grpc with its defaults: raw BYTES in, raw outputs back."""
    manager = serving_manager(*multiclass_model, name="grades")
    with grpc_serving(multiclass_model, manager=manager) as served, \
            triton.InferenceServerClient(served.target) as client:
        inputs = []
        for name in ("continent", "occupation", "hours", "f0", "f1"):
            values = [r[name] for r in RECORDS]
            if name == "continent":
                tensor = triton.InferInput(name, [2], "BYTES")
                tensor.set_data_from_numpy(np.array(values, dtype=object))
            else:
                tensor = triton.InferInput(name, [2], "FP32")
                tensor.set_data_from_numpy(np.array(
                    [np.nan if v is None else v for v in values], dtype=np.float32))
            inputs.append(tensor)
        result = client.infer("grades", inputs)
    probabilities = result.as_numpy("prediction")
    assert probabilities.shape == (2, 3)
    labels = [label.decode() for label in result.as_numpy("label")]
    assert labels == [CLASSES[i] for i in probabilities.argmax(axis=1)]
    rest = TestClient(create_app(serving_manager(*multiclass_model, name="grades"), None,
                                 ServingConfig(max_batch=100)))
    np.testing.assert_allclose(
        probabilities, rest.post("/v1/predict", json={"records": RECORDS}).json()[
            "predictions"], atol=1e-6)
