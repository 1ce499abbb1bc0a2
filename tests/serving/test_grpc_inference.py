"""The Open Inference Protocol over gRPC, driven by tritonclient.grpc with its defaults and
by the generated stub for what tritonclient would not send: health, metadata, inference
(raw and typed contents, every numeric datatype), errors as status codes with REST's
messages, undecodable messages, hot swap and metrics."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from grpc_serving import SERVICE_PATH, Served, grpc_serving, infer_request, stub, tensor
from onnx_models import write_model
from tritonclient.utils import InferenceServerException

from mlops.serving.grpc import grpc_predict_v2_pb2 as pb
from mlops.serving.model_manager import FileSource, ModelManager
from mlops.serving.predictor import OnnxPredictor

MAX_BATCH = 100
INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
RNG = np.random.default_rng(7)


@pytest.fixture(scope="module")
def served(onnx_model: tuple[Path, str]) -> Iterator[Served]:
    with grpc_serving(onnx_model, max_batch=MAX_BATCH) as running:
        yield running


@pytest.fixture(scope="module")
def client(served: Served) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(served.target) as triton_client:
        yield triton_client


def rows(n: int) -> np.ndarray:
    return RNG.normal(size=(n, 4)).astype(np.float32)


def test_health_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("synthetic") and client.is_model_ready("synthetic", "3")
    server = client.get_server_metadata(as_json=True)
    assert (server["name"], server["version"]) == ("mlops-inference", "2")
    model = client.get_model_metadata("synthetic", as_json=True)
    assert (model["name"], model["versions"], model["platform"]) == (
        "synthetic", ["3"], "onnxruntime_onnx")
    assert model["inputs"] == [{"name": "features", "datatype": "FP32", "shape": ["-1", "4"]}]
    assert [(o["name"], o["datatype"]) for o in model["outputs"]] == [
        ("prediction", "FP32"), ("label", "INT64")]


@pytest.mark.parametrize("n", [1, 64])
def test_infer_features_matches_onnx_runtime(client: triton.InferenceServerClient,
                                             predictor: OnnxPredictor, n: int) -> None:
    matrix = rows(n)
    features = triton.InferInput("features", [n, 4], "FP32")
    features.set_data_from_numpy(matrix)
    result = client.infer("synthetic", [features], request_id="r-1")
    expected = predictor.predict(matrix)
    np.testing.assert_allclose(result.as_numpy("prediction"), expected, rtol=1e-6)
    np.testing.assert_array_equal(result.as_numpy("label"), (expected >= 0.5).astype(np.int64))
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == ("synthetic", "3",
                                                                          "r-1")


def test_per_feature_inputs_of_other_datatypes(client: triton.InferenceServerClient,
                                               predictor: OnnxPredictor) -> None:
    columns = {"f0": np.array([3, -2, 7], dtype=np.int64),
               "f1": np.array([[0.25], [-1.5], [2.0]], dtype=np.float64),
               "f2": np.array([True, False, True]),
               "f3": np.array([-4, 0, 9], dtype=np.int8)}
    datatypes = {"f0": "INT64", "f1": "FP64", "f2": "BOOL", "f3": "INT8"}
    inputs = []
    for name, values in columns.items():
        inputs.append(triton.InferInput(name, list(values.shape), datatypes[name]))
        inputs[-1].set_data_from_numpy(values)
    result = client.infer("synthetic", inputs, outputs=[triton.InferRequestedOutput("prediction")])
    matrix = np.column_stack([v.reshape(-1).astype(np.float32) for v in columns.values()])
    np.testing.assert_allclose(result.as_numpy("prediction"), predictor.predict(matrix),
                               rtol=1e-6)
    assert result.as_numpy("label") is None  # only the requested output comes back


@pytest.mark.parametrize("datatype,field,values", [
    ("FP32", "fp32_contents", [0.5, -1.0, 2.0]), ("FP64", "fp64_contents", [0.5, -1.0, 2.0]),
    ("INT8", "int_contents", [1, -2, 3]), ("INT16", "int_contents", [1, -2, 3]),
    ("INT32", "int_contents", [1, -2, 3]), ("INT64", "int64_contents", [1, -2, 3]),
    ("UINT8", "uint_contents", [1, 2, 3]), ("UINT16", "uint_contents", [1, 2, 3]),
    ("UINT32", "uint_contents", [1, 2, 3]), ("UINT64", "uint64_contents", [1, 2, 3]),
    ("BOOL", "bool_contents", [True, False, True]),
])
def test_typed_contents_are_answered_typed(served: Served, predictor: OnnxPredictor,
                                           datatype: str, field: str, values: list[Any]) -> None:
    inputs = [tensor(f"f{i}", datatype, [3], **{field: values}) for i in range(4)]
    with stub(served.target) as service:
        response = service.ModelInfer(infer_request(*inputs), timeout=10)
    assert not response.raw_output_contents
    matrix = np.tile(np.array(values, dtype=np.float32).reshape(-1, 1), (1, 4))
    expected = predictor.predict(matrix)
    prediction, label = response.outputs
    np.testing.assert_allclose(prediction.contents.fp32_contents, expected, rtol=1e-6)
    assert list(label.contents.int64_contents) == (expected >= 0.5).astype(int).tolist()
    assert (list(prediction.shape), label.datatype) == ([3], "INT64")


def raw(*values: float, dtype: str = "<f4") -> bytes:
    return np.array(values, dtype=dtype).tobytes()


FEATURES_RAW = [raw(0.5, -1.0, 2.0, 0.1)]
ERRORS = [  # (request, status code, a fragment of the details)
    (infer_request(tensor("features", "FP8", [1, 4]), raw=FEATURES_RAW), INVALID,
     "datatype 'FP8' is not accepted"),
    (infer_request(tensor("features", "BYTES", [1, 4], bytes_contents=[b"a"] * 4)), INVALID,
     "datatype 'BYTES' is not accepted"),
    (infer_request(tensor("features", "FP32", [1, 4], fp32_contents=[1, 2, 3])), INVALID,
     "shape [1, 4] holds 4 values, contents.fp32_contents has 3"),
    (infer_request(tensor("features", "FP32", [1, 4], int64_contents=[1, 2, 3, 4])), INVALID,
     "FP32 values go in contents.fp32_contents; int64_contents was sent"),
    (infer_request(tensor("features", "FP32", [1, 4])), INVALID, "contents.fp32_contents has 0"),
    (infer_request(tensor("features", "FP16", [1, 4], fp32_contents=[1, 2, 3, 4])), INVALID,
     "FP16 values have no contents field"),
    (infer_request(tensor("features", "FP32", [1, 4]), raw=[raw(1, 2, 3)]), INVALID,
     "takes 16 bytes, 12 were sent"),
    (infer_request(tensor("features", "FP32", [1, 4]), raw=FEATURES_RAW * 2), INVALID,
     "raw_input_contents has 2 entries for 1 inputs"),
    (infer_request(tensor("features", "FP32", [1, 4], fp32_contents=[1, 2, 3, 4]),
                   raw=FEATURES_RAW), INVALID, "send every input one way"),
    (infer_request(tensor("features", "FP32", [1, 3], fp32_contents=[1, 2, 3])), INVALID,
     "shape must be [batch, 4], is [1, 3]"),
    (infer_request(tensor("features", "FP32", [-1, 4]), raw=[b""]), INVALID,
     "negative dimension"),
    (infer_request(), INVALID, "inputs is empty"),
    (infer_request(tensor("features", "FP32", [0, 4]), raw=[b""]), INVALID, "batch is empty"),
    (infer_request(tensor("features", "FP32", [1, 4]), raw=[raw(1, 2, float("nan"), 4)]),
     INVALID, "finite float32"),
    (infer_request(*[tensor(f"f{i}", "BOOL", [1]) for i in range(4)], raw=[b"\x02"] * 4),
     INVALID, "BOOL bytes must be 0 or 1"),
    (infer_request(*[tensor(f"f{i}", "INT8", [1], int_contents=[300]) for i in range(4)]),
     INVALID, "out of the range of INT8"),
    (infer_request(tensor("x", "FP32", [1], fp32_contents=[1])), INVALID, "unknown ['x']"),
    (infer_request(tensor("features", "FP32", [1, 4], fp32_contents=[1, 2, 3, 4]),
                   outputs=("proba",)), INVALID, "unknown output(s) ['proba']"),
    (infer_request(tensor("features", "FP32", [MAX_BATCH + 1, 4]),
                   raw=[bytes(16 * (MAX_BATCH + 1))]), INVALID, "101 rows; at most 100"),
    (infer_request(tensor("features", "FP32", [1, 4]), raw=FEATURES_RAW, model="other"),
     NOT_FOUND, "model 'other' is not served here"),
    (infer_request(tensor("features", "FP32", [1, 4]), raw=FEATURES_RAW, version="9"),
     NOT_FOUND, "version '9' of 'synthetic' is not served; serving version 3"),
]


@pytest.mark.parametrize("request_, code, fragment", ERRORS,
                         ids=[f"{i}-{e[2][:30]}" for i, e in enumerate(ERRORS)])
def test_malformed_requests_get_status_codes(served: Served, request_: pb.ModelInferRequest,
                                             code: grpc.StatusCode, fragment: str) -> None:
    with stub(served.target) as service, pytest.raises(grpc.RpcError) as caught:
        service.ModelInfer(request_, timeout=10)
    assert caught.value.code() == code, caught.value.details()
    assert fragment in caught.value.details()


def test_metadata_and_readiness_of_other_models_are_not_found(served: Served) -> None:
    with stub(served.target) as service:
        for call, message in [(service.ModelMetadata, pb.ModelMetadataRequest(name="other")),
                              (service.ModelReady, pb.ModelReadyRequest(name="synthetic",
                                                                        version="9"))]:
            with pytest.raises(grpc.RpcError) as caught:
                call(message, timeout=10)
            assert caught.value.code() == NOT_FOUND


def test_bad_input_details_are_rest_error_messages(served: Served) -> None:
    body = {"inputs": [{"name": "features", "shape": [1, 3], "datatype": "FP32",
                        "data": [1, 2, 3]}]}
    rest = httpx.post(f"{served.url}/v2/models/synthetic/infer", json=body).json()
    request = infer_request(tensor("features", "FP32", [1, 3], fp32_contents=[1, 2, 3]))
    with stub(served.target) as service, pytest.raises(grpc.RpcError) as caught:
        service.ModelInfer(request, timeout=10)
    assert caught.value.details() == rest["error"]
    assert rest["error"].startswith("BadInput: inputs[0] ('features'): shape must be")


def test_undecodable_and_mutated_messages_are_never_internal(served: Served) -> None:
    valid = infer_request(tensor("features", "FP32", [1, 4]), raw=FEATURES_RAW,
                          outputs=("prediction",)).SerializeToString()
    fuzz = random.Random(11)
    bodies = [bytes(fuzz.getrandbits(8) for _ in range(fuzz.randrange(1, 64)))
              for _ in range(150)]
    for _ in range(150):
        mutated = bytearray(valid)
        for _ in range(fuzz.randrange(1, 4)):
            mutated[fuzz.randrange(len(mutated))] = fuzz.getrandbits(8)
        bodies.append(bytes(mutated))
    codes: dict[str, int] = {}
    with grpc.insecure_channel(served.target) as channel:
        call = channel.unary_unary(f"{SERVICE_PATH}/ModelInfer")  # bytes as they are
        for body in bodies:
            try:
                call(body, timeout=10)
                code, details = grpc.StatusCode.OK, ""
            except grpc.RpcError as exc:
                code, details = exc.code(), exc.details()
            assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), details
            codes[code.name] = codes.get(code.name, 0) + 1
        with pytest.raises(grpc.RpcError) as caught:
            call(b"\xff\xff\xff", timeout=10)
    assert caught.value.code() == INVALID
    assert caught.value.details() == ("BadInput: the request is not a valid "
                                      "inference.ModelInferRequest message")
    assert codes.get("INVALID_ARGUMENT", 0) > 0 and codes.get("NOT_FOUND", 0) > 0, codes


def test_triton_errors_carry_the_status(client: triton.InferenceServerClient) -> None:
    features = triton.InferInput("features", [1, 4], "FP32")
    features.set_data_from_numpy(rows(1))
    with pytest.raises(InferenceServerException) as caught:
        client.infer("synthetic", [features], model_version="9")
    assert caught.value.status() == "StatusCode.NOT_FOUND"


def test_grpc_calls_are_counted_in_metrics(served: Served,
                                           client: triton.InferenceServerClient) -> None:
    client.is_server_live()
    with stub(served.target) as service, pytest.raises(grpc.RpcError):
        service.ModelInfer(infer_request(), timeout=10)
    text = httpx.get(f"{served.url}/metrics").text
    assert 'mlops_grpc_requests_total{code="OK",method="ServerLive"}' in text
    assert 'mlops_grpc_requests_total{code="INVALID_ARGUMENT",method="ModelInfer"}' in text
    assert 'mlops_grpc_request_duration_seconds_count{method="ModelInfer"}' in text


def test_hot_swap_is_seen_by_the_next_call(onnx_model: tuple[Path, str],
                                           tmp_path: Path) -> None:
    second = write_model(tmp_path / "second.onnx", bias=2.0)
    with grpc_serving(onnx_model) as running, triton.InferenceServerClient(
            running.target) as client:
        source = running.manager.source
        assert isinstance(source, FileSource)
        source.path, source.sha256, source.version = second[0], second[1], "4"
        assert running.manager.refresh().status == "loaded"
        features = triton.InferInput("features", [1, 4], "FP32")
        matrix = rows(1)
        features.set_data_from_numpy(matrix)
        result = client.infer("synthetic", [features])
        assert result.get_response().model_version == "4"
        swapped = OnnxPredictor.load(str(second[0]), second[1], "synthetic", "4")
        np.testing.assert_allclose(result.as_numpy("prediction"), swapped.predict(matrix),
                                   rtol=1e-6)
        assert client.get_model_metadata("synthetic", as_json=True)["versions"] == ["4"]
        with pytest.raises(InferenceServerException) as caught:
            client.infer("synthetic", [features], model_version="3")
        assert caught.value.status() == "StatusCode.NOT_FOUND"


def test_without_a_model_the_service_is_unavailable(onnx_model: tuple[Path, str]) -> None:
    empty = ModelManager(FileSource(onnx_model[0], onnx_model[1], "synthetic", "3"))
    with grpc_serving(onnx_model, manager=empty) as running, stub(running.target) as service:
        assert service.ServerLive(pb.ServerLiveRequest(), timeout=10).live
        assert not service.ServerReady(pb.ServerReadyRequest(), timeout=10).ready
        with pytest.raises(grpc.RpcError) as caught:
            service.ModelInfer(infer_request(tensor("features", "FP32", [1, 4]),
                                             raw=FEATURES_RAW), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert caught.value.details() == "NotReady: no model loaded"
