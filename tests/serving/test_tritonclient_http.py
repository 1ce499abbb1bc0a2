"""A standard Open Inference Protocol client against the service: ``tritonclient.http`` with
its defaults (no Content-Type, binary tensors in and out) and with JSON tensors, on the
real server stack (uvicorn with the service's protocol). Predictions are compared with
ONNX Runtime run directly on the same rows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient
from onnx_models import FEATURES
from raw_http import serving
from tritonclient.utils import InferenceServerException

MODEL = "synthetic"
RNG = np.random.default_rng(14)


@pytest.fixture(scope="module")
def client(onnx_model: tuple[Path, str]) -> Iterator[httpclient.InferenceServerClient]:
    with serving(onnx_model, max_batch=256) as (_, port):
        triton = httpclient.InferenceServerClient(url=f"127.0.0.1:{port}")
        yield triton
        triton.close()


@pytest.fixture(scope="module")
def direct(onnx_model: tuple[Path, str]) -> ort.InferenceSession:
    return ort.InferenceSession(str(onnx_model[0]), providers=["CPUExecutionProvider"])


def expected(direct: ort.InferenceSession, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = direct.run(["prediction"], {"features": rows.astype(np.float32)})[0]
    return scores, (scores >= 0.5).astype(np.int64)


def features_input(rows: np.ndarray, binary: bool = True) -> httpclient.InferInput:
    tensor = httpclient.InferInput("features", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows.astype(np.float32), binary_data=binary)
    return tensor


def test_health_and_metadata(client: httpclient.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, "3")
    server = client.get_server_metadata()
    assert server["name"] == "mlops-inference"
    assert "binary_tensor_data" in server["extensions"]
    model = client.get_model_metadata(MODEL)
    assert model["name"] == MODEL and model["versions"] == ["3"]
    assert model["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}]
    assert [o["name"] for o in model["outputs"]] == ["prediction", "label"]


@pytest.mark.parametrize("rows", [1, 64, 256])
def test_defaults_binary_in_and_out(client: httpclient.InferenceServerClient,
                                    direct: ort.InferenceSession, rows: int) -> None:
    """tritonclient's defaults: binary input, every output asked for in binary."""
    matrix = RNG.normal(size=(rows, 4)).astype(np.float32)
    result = client.infer(MODEL, [features_input(matrix)])
    scores, labels = expected(direct, matrix)
    assert result.as_numpy("prediction").dtype == np.float32
    np.testing.assert_allclose(result.as_numpy("prediction"), scores, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(result.as_numpy("label"), labels)
    response = result.get_response()
    assert response["model_name"] == MODEL and response["model_version"] == "3"
    assert all("data" not in out for out in response["outputs"])  # both came as binary


def test_json_tensors_and_chosen_outputs(client: httpclient.InferenceServerClient,
                                         direct: ort.InferenceSession) -> None:
    matrix = RNG.normal(size=(8, 4)).astype(np.float32)
    outputs = [httpclient.InferRequestedOutput("prediction", binary_data=False)]
    result = client.infer(MODEL, [features_input(matrix, binary=False)], outputs=outputs,
                          request_id="req-7", model_version="3")
    response = result.get_response()
    assert response["id"] == "req-7"
    assert [out["name"] for out in response["outputs"]] == ["prediction"]
    np.testing.assert_allclose(result.as_numpy("prediction"), expected(direct, matrix)[0],
                               rtol=1e-6, atol=1e-7)


def test_binary_input_json_output_and_the_reverse(client: httpclient.InferenceServerClient,
                                                  direct: ort.InferenceSession) -> None:
    matrix = RNG.normal(size=(5, 4)).astype(np.float32)
    scores, labels = expected(direct, matrix)
    for binary_in, binary_out in [(True, False), (False, True)]:
        outputs = [httpclient.InferRequestedOutput("prediction", binary_data=binary_out),
                   httpclient.InferRequestedOutput("label", binary_data=not binary_out)]
        result = client.infer(MODEL, [features_input(matrix, binary_in)], outputs=outputs)
        np.testing.assert_allclose(result.as_numpy("prediction"), scores, rtol=1e-6,
                                   atol=1e-7)
        np.testing.assert_array_equal(result.as_numpy("label"), labels)


@pytest.mark.parametrize("datatype", ["FP16", "FP64", "INT32", "INT64", "UINT8", "BOOL"])
def test_one_binary_tensor_per_feature_in_each_datatype(
        client: httpclient.InferenceServerClient, direct: ort.InferenceSession,
        datatype: str) -> None:
    dtype = {"FP16": np.float16, "FP64": np.float64, "INT32": np.int32, "INT64": np.int64,
             "UINT8": np.uint8, "BOOL": np.bool_}[datatype]
    values = RNG.integers(0, 2 if datatype == "BOOL" else 5, size=(6, 4)).astype(dtype)
    inputs = []
    for column, name in enumerate(FEATURES):
        tensor = httpclient.InferInput(name, [6], datatype)
        tensor.set_data_from_numpy(values[:, column].copy())
        inputs.append(tensor)
    result = client.infer(MODEL, inputs[::-1])  # any order: matched by name
    np.testing.assert_allclose(result.as_numpy("prediction"),
                               expected(direct, values.astype(np.float32))[0], rtol=1e-6,
                               atol=1e-7)


def test_errors_reach_the_client_with_their_message(
        client: httpclient.InferenceServerClient) -> None:
    matrix = np.ones((2, 4), dtype=np.float32)
    with pytest.raises(InferenceServerException, match="version '9' of 'synthetic'"):
        client.infer(MODEL, [features_input(matrix)], model_version="9")
    with pytest.raises(InferenceServerException, match="not served here"):
        client.infer("other", [features_input(matrix)])
    wrong = httpclient.InferInput("features", [2, 3], "FP32")
    wrong.set_data_from_numpy(np.ones((2, 3), dtype=np.float32))
    with pytest.raises(InferenceServerException, match=r"shape must be \[batch, 4\]"):
        client.infer(MODEL, [wrong])
    nan = matrix.copy()
    nan[0, 0] = np.nan
    with pytest.raises(InferenceServerException, match="finite float32"):
        client.infer(MODEL, [features_input(nan)])
    with pytest.raises(InferenceServerException, match="unknown output"):
        client.infer(MODEL, [features_input(matrix)],
                     outputs=[httpclient.InferRequestedOutput("proba")])
