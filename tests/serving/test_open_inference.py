"""The Open Inference Protocol (KServe v2) routes: metadata, readiness and inference."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from onnx_models import FEATURES, expected_scores

MATRIX = np.array([[1.5, -2.0, 0.25, 0.75], [0.0, 1.0, -1.0, 3.0], [2.0, 2.0, 2.0, 2.0]])
INFER = "/v2/models/synthetic/infer"


def tensor(data: Any, shape: list[int], datatype: str = "FP32",
           name: str = "features") -> dict[str, Any]:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


def outputs(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {output["name"]: output for output in body["outputs"]}


def test_server_metadata(client: TestClient) -> None:
    assert client.get("/v2").json() == {"name": "mlops-inference", "version": "2",
                                        "extensions": ["binary_tensor_data"]}


@pytest.mark.parametrize("path", ["/v2/models/synthetic", "/v2/models/synthetic/versions/3"])
def test_model_metadata_names_tensors_and_features(client: TestClient, path: str,
                                                   onnx_model: tuple[Any, str]) -> None:
    body = client.get(path).json()
    assert body["name"] == "synthetic" and body["versions"] == ["3"]
    assert body["platform"] == "onnxruntime_onnx"
    assert body["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}]
    assert [o["name"] for o in body["outputs"]] == ["prediction", "label"]
    assert body["parameters"] == {"feature_names": FEATURES, "task": "classification",
                                  "sha256": onnx_model[1]}


@pytest.mark.parametrize("path", ["/v2/models/synthetic/ready",
                                  "/v2/models/synthetic/versions/3/ready"])
def test_model_ready(client: TestClient, path: str) -> None:
    assert client.get(path).json() == {"name": "synthetic", "ready": True}


@pytest.mark.parametrize("path", [INFER, "/v2/models/synthetic/versions/3/infer"])
def test_infer_features_tensor_matches_the_model(client: TestClient, path: str) -> None:
    response = client.post(path, json={"id": "req-1", "inputs": [
        tensor(MATRIX.reshape(-1).tolist(), [3, 4])]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model_name"], body["model_version"], body["id"]) == ("synthetic", "3", "req-1")
    out = outputs(body)
    expected = expected_scores(MATRIX)
    assert out["prediction"]["datatype"] == "FP32" and out["prediction"]["shape"] == [3]
    np.testing.assert_allclose(out["prediction"]["data"], expected, rtol=1e-5)
    assert out["label"] == {"name": "label", "datatype": "INT64", "shape": [3],
                            "data": (expected >= 0.5).astype(int).tolist()}


@pytest.mark.parametrize("datatype", ["FP32", "FP64", "FP16", "INT32", "INT64", "UINT8"])
def test_numeric_datatypes_are_cast_to_the_models_float32(client: TestClient,
                                                          datatype: str) -> None:
    ints = np.array([[1, 0, 3, 2], [4, 1, 0, 0]])
    response = client.post(INFER, json={"inputs": [tensor(ints.reshape(-1).tolist(), [2, 4],
                                                          datatype)]})
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(outputs(response.json())["prediction"]["data"],
                               expected_scores(ints), rtol=1e-5)


def test_uint64_values_beyond_int64_are_integers_not_floats(client: TestClient) -> None:
    """numpy reads [1, 2**64 - 2] as float64; the route keeps UINT64 values exact (the
    OpenAPI fuzz found the refusal)."""
    values = [30302331946, 6359385269, 1, 2**64 - 2]
    response = client.post(INFER, json={"inputs": [tensor(values, [1, 4], "UINT64")]})
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(outputs(response.json())["prediction"]["data"],
                               expected_scores(np.array([values], dtype=np.float64)),
                               rtol=1e-5)
    beyond = client.post(INFER, json={"inputs": [tensor([1, 2, 3, 2**64], [1, 4], "UINT64")]})
    assert beyond.status_code == 400 and "out of the range of UINT64" in beyond.text


def test_bool_tensor_counts_as_zero_and_one(client: TestClient) -> None:
    flags = [True, False, True, True]
    response = client.post(INFER, json={"inputs": [tensor(flags, [1, 4], "BOOL")]})
    np.testing.assert_allclose(outputs(response.json())["prediction"]["data"],
                               expected_scores(np.array([[1, 0, 1, 1]])), rtol=1e-5)


def test_nested_data_is_accepted_in_row_major_order(client: TestClient) -> None:
    response = client.post(INFER, json={"inputs": [tensor(MATRIX.tolist(), [3, 4])]})
    np.testing.assert_allclose(outputs(response.json())["prediction"]["data"],
                               expected_scores(MATRIX), rtol=1e-5)


def test_one_input_per_feature_in_any_order(client: TestClient) -> None:
    columns = [tensor(MATRIX[:, i].tolist(), [3] if i % 2 else [3, 1], "FP64", name)
               for i, name in enumerate(FEATURES)]
    response = client.post(INFER, json={"inputs": list(reversed(columns))})
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(outputs(response.json())["prediction"]["data"],
                               expected_scores(MATRIX), rtol=1e-5)


def test_requested_outputs_only(client: TestClient) -> None:
    response = client.post(INFER, json={"inputs": [tensor([1, 2, 3, 4], [1, 4])],
                                        "outputs": [{"name": "label"}]})
    body = response.json()
    assert [o["name"] for o in body["outputs"]] == ["label"] and "id" not in body


def test_records_and_tensor_routes_agree(client: TestClient) -> None:
    records = [dict(zip(FEATURES, row, strict=True)) for row in MATRIX.tolist()]
    plain = client.post("/v1/predict", json={"records": records}).json()["predictions"]
    v2 = client.post(INFER, json={"inputs": [tensor(MATRIX.tolist(), [3, 4])]}).json()
    assert outputs(v2)["prediction"]["data"] == plain
