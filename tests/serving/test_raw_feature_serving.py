"""Serving a model that encodes its own features: raw strings, integer codes and nulls in,
over the v1 records route and v2 per-feature tensors (BYTES), on both inference runners."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient
from grpc_serving import grpc_serving, infer_request, stub, tensor
from serving_setup import serving_manager

from benchmarks.synthetic import generate_mixed_panel, mixed_spec
from mlops.atomic_files import sha256_file
from mlops.config import ModelSettings, TaskType
from mlops.data.encoding import raw_inputs
from mlops.serving.app import ServingConfig, create_app
from mlops.serving.predictor import ModelContractError, OnnxPredictor
from mlops.training.export import export_onnx
from mlops.training.train import train_model

RECORDS = [
    {"continent": "Asia", "occupation": 3, "hours": 40.0, "f0": 0.5, "f1": -1.0},
    {"continent": "Atlantis", "occupation": None, "hours": None, "f0": 0.0, "f1": 0.0},
    {"continent": "Europe", "occupation": "7", "hours": 20, "f0": -1.5, "f1": 2.0},
]


@pytest.fixture(scope="module")
def mixed_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("mixed-serving")
    path = folder / "mixed.parquet"
    generate_mixed_panel(n_entities=60).to_parquet(path, index=False)
    spec = mixed_spec(str(path), TaskType.classification)
    trained = train_model(str(path), spec, ModelSettings(hidden=[16], epochs=3), folder / "t")
    onnx_path = Path(export_onnx(trained.model_path, trained.test_path, folder / "o").onnx_path)
    return onnx_path, sha256_file(onnx_path)


@pytest.fixture(scope="module", params=[2.0, 0.0], ids=["micro-batching", "direct"])
def client(request: pytest.FixtureRequest, mixed_model: tuple[Path, str]) -> TestClient:
    config = ServingConfig(max_batch=100, batch_window_ms=request.param)
    return TestClient(create_app(serving_manager(*mixed_model, name="mixed"), None, config))


def _direct(mixed_model: tuple[Path, str], records: list[dict]) -> np.ndarray:
    """ONNX Runtime on the same raw values, with no service in between."""
    predictor = OnnxPredictor.load(str(mixed_model[0]), mixed_model[1])
    rows = np.array([[r[name] for name in predictor.feature_names] for r in records],
                    dtype=object)
    session = ort.InferenceSession(str(mixed_model[0]), providers=["CPUExecutionProvider"])
    return session.run(["prediction"], raw_inputs(rows, predictor.encoding))[0]


def test_v1_records_take_raw_strings_codes_and_nulls(client, mixed_model) -> None:
    answer = client.post("/v1/predict", json={"records": RECORDS})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    np.testing.assert_allclose(body["predictions"], _direct(mixed_model, RECORDS), atol=1e-6)
    assert body["labels"] == [int(p >= 0.5) for p in body["predictions"]]


def test_v2_per_feature_tensors_take_bytes_for_categories(client, mixed_model) -> None:
    inputs = [
        {"name": "continent", "datatype": "BYTES", "shape": [3],
         "data": [r["continent"] for r in RECORDS]},
        {"name": "occupation", "datatype": "INT64", "shape": [3, 1],
         "data": [[3], [None], [7]]},
        {"name": "hours", "datatype": "FP32", "shape": [3], "data": [40.0, None, 20.0]},
        {"name": "f0", "datatype": "FP32", "shape": [3], "data": [r["f0"] for r in RECORDS]},
        {"name": "f1", "datatype": "FP64", "shape": [3], "data": [r["f1"] for r in RECORDS]},
    ]
    answer = client.post("/v2/models/mixed/infer", json={"inputs": inputs})
    assert answer.status_code == 200, answer.text
    prediction = next(o for o in answer.json()["outputs"] if o["name"] == "prediction")
    np.testing.assert_allclose(prediction["data"], _direct(mixed_model, RECORDS), atol=1e-6)


def test_model_description_names_categorical_and_nullable_features(client) -> None:
    described = client.get("/v1/model").json()
    assert described["categorical"] == ["continent", "occupation"]
    assert described["nullable"] == ["hours", "occupation"]


@pytest.mark.parametrize(("record", "message"), [
    ({"f0": None}, "records[0].f0: 'f0' is null, and this model's spec does not list it "
     "under nullable"),
    ({"f1": "high"}, "records[0].f1: 'high' is not a number ('f1' is numeric)"),
    ({"continent": 2.5}, "records[0].continent: 2.5 is not a category of 'continent'"),
    ({"continent": True}, "records[0].continent: True is neither a number nor a category"),
    ({"hours": 1e39}, "records[0].hours: 1e+39 is not a finite float32 value"),
])
def test_bad_raw_values_name_the_row_and_feature(client, record, message) -> None:
    answer = client.post("/v1/predict", json={"records": [{**RECORDS[0], **record}]})
    assert answer.status_code == 400
    assert message in answer.json()["detail"]


@pytest.mark.parametrize(("change", "message"), [
    ({"name": "f0", "datatype": "BYTES", "data": ["a"]}, "'f0' is numeric; declare a numeric"),
    ({"name": "continent", "datatype": "FP32", "data": ["Asia"]}, "declare BYTES"),
    ({"name": "continent", "datatype": "BYTES", "data": [3]}, "3 is not a string (BYTES)"),
    ({"name": "continent", "datatype": "BYTES", "data": ["Asia", "Asia"]}, "holds 1 values"),
])
def test_bad_v2_tensors_are_named(client, change, message) -> None:
    inputs = [{"name": name, "datatype": "BYTES" if name == "continent" else "FP32",
               "shape": [1], "data": [RECORDS[0][name]]}
              for name in ["continent", "occupation", "hours", "f0", "f1"]]
    inputs = [{**tensor, **change} if tensor["name"] == change["name"] else tensor
              for tensor in inputs]
    answer = client.post("/v2/models/mixed/infer", json={"inputs": inputs})
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["error"]


def test_v2_needs_one_tensor_per_feature(client) -> None:
    answer = client.post("/v2/models/mixed/infer", json={"inputs": [
        {"name": "features", "datatype": "FP32", "shape": [1, 5], "data": [1, 2, 3, 4, 5]}]})
    assert answer.status_code == 400
    assert "one input per feature" in answer.json()["error"]


def test_a_model_whose_inputs_disagree_with_its_encoding_is_refused(mixed_model,
                                                                   tmp_path: Path) -> None:
    import onnx

    model = onnx.load(str(mixed_model[0]))
    entry = next(e for e in model.metadata_props if e.key == "encoding")
    entry.value = entry.value.replace('"continent","occupation"]', '"continent"]', 1)
    broken = tmp_path / "broken.onnx"
    onnx.save(model, str(broken))
    with pytest.raises(ModelContractError, match="encoding"):
        OnnxPredictor.load(str(broken))


def test_the_openapi_document_describes_raw_records(client) -> None:
    record = client.get("/openapi.json").json()["components"]["schemas"]["PredictRequest"][
        "properties"]["records"]["items"]
    kinds = {name: [k.get("type") for k in schema["anyOf"]]
             for name, schema in record["properties"].items()}
    assert kinds == {"continent": ["string", "integer"],
                     "occupation": ["string", "integer", "null"],
                     "hours": ["number", "null"], "f0": ["number"], "f1": ["number"]}


@pytest.mark.parametrize("raw", [True, False], ids=["raw contents", "typed contents"])
def test_grpc_takes_bytes_categories_and_nan_as_null(mixed_model, raw: bool) -> None:
    """A NaN is the only null a numeric gRPC tensor can carry: null where nullable."""
    inputs = []
    for name in ("continent", "occupation", "hours", "f0", "f1"):
        values = [r[name] for r in RECORDS]
        if name == "continent":
            contents = {"bytes_contents": [v.encode() for v in values]}
            data = b"".join(len(v.encode()).to_bytes(4, "little") + v.encode() for v in values)
            inputs.append((tensor(name, "BYTES", [3], **({} if raw else contents)), data))
        else:
            numbers = np.array([np.nan if v is None else float(v) for v in values],
                               dtype=np.float32)
            typed = {} if raw else {"fp32_contents": numbers.tolist()}
            inputs.append((tensor(name, "FP32", [3], **typed), numbers.tobytes()))
    request = infer_request(*(t for t, _ in inputs), model="mixed",
                            raw=[d for _, d in inputs] if raw else None)
    with grpc_serving(mixed_model, manager=serving_manager(*mixed_model, name="mixed")) as \
            served, stub(served.target) as grpc_stub:
        response = grpc_stub.ModelInfer(request)
        bad = infer_request(*(t for t, _ in inputs[:2]), model="mixed",
                            raw=[d for _, d in inputs[:2]] if raw else None)
        with pytest.raises(grpc.RpcError) as refused:
            grpc_stub.ModelInfer(bad)
    prediction = (np.frombuffer(response.raw_output_contents[0], dtype="<f4") if raw
                  else np.array(response.outputs[0].contents.fp32_contents))
    np.testing.assert_allclose(prediction, _direct(mixed_model, RECORDS), atol=1e-6)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "this model takes one input per feature" in refused.value.details()


def test_the_openapi_document_asks_one_tensor_per_feature(client) -> None:
    from jsonschema import Draft202012Validator
    from openapi_spec_validator import validate

    doc = client.get("/openapi.json").json()
    validate(doc)
    schema = {"$ref": "#/components/schemas/InferRequest", "components": doc["components"]}
    good = [{"name": name, "datatype": "BYTES" if name == "continent" else "FP32",
             "shape": [1], "data": [RECORDS[1][name]]}
            for name in ("continent", "occupation", "hours", "f0", "f1")]
    assert Draft202012Validator(schema).is_valid({"inputs": good})
    features = {"name": "features", "shape": [1, 5], "datatype": "FP32", "data": [1] * 5}
    assert not Draft202012Validator(schema).is_valid({"inputs": [features]})
    assert not Draft202012Validator(schema).is_valid({"inputs": good[:4]})
