"""The OpenAPI document: valid OpenAPI, as strict as the routes, for the model serving now.

Requests the routes refuse are invalid for the document (the issue's ``{"records": [{}]}``,
``{"entity_ids": []}``, an output named ``""``), requests it accepts are answered 2xx,
the admin operations declare their bearer scheme, and a hot swap changes the document.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator
from onnx_models import FEATURES, ModelFactory
from openapi_spec_validator import validate
from serving_setup import ADMIN_TOKEN, serving_manager

from mlops.serving.app import ServingConfig, create_app
from mlops.serving.model_manager import FileSource, ModelBytes, ModelManager

MAX_BATCH = 8
ROW = dict.fromkeys(FEATURES, 0.5)


@pytest.fixture(scope="module")
def client(onnx_model: tuple[Path, str]) -> TestClient:
    config = ServingConfig(max_batch=MAX_BATCH, admin_token=ADMIN_TOKEN, access_log=False)
    return TestClient(create_app(serving_manager(*onnx_model), None, config))


@pytest.fixture(scope="module")
def spec(client: TestClient) -> dict[str, Any]:
    return client.get("/openapi.json").json()


def valid(spec: dict[str, Any], component: str, body: Any) -> bool:
    """Whether ``body`` is valid for the document's schema ``component``."""
    schema = {"$ref": f"#/components/schemas/{component}", "components": spec["components"]}
    return Draft202012Validator(schema).is_valid(body)


def test_the_document_is_valid_openapi(spec: dict[str, Any]) -> None:
    validate(spec)


def test_the_issue_requests_are_invalid_for_the_document(spec: dict[str, Any]) -> None:
    assert not valid(spec, "PredictRequest", {"records": [{}]})
    assert not valid(spec, "PredictRequest", {"records": []})
    assert not valid(spec, "PredictRequest", {"records": [ROW] * (MAX_BATCH + 1)})
    assert not valid(spec, "PredictRequest", {"records": [{**ROW, "extra": 1.0}]})
    assert not valid(spec, "EntityRequest", {"entity_ids": []})
    assert not valid(spec, "EntityRequest", {"entity_ids": [1] * (MAX_BATCH + 1)})
    features = {"name": "features", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}
    assert not valid(spec, "InferRequest", {"inputs": [features], "outputs": [{"name": ""}]})
    assert not valid(spec, "InferRequest", {"inputs": []})
    assert not valid(spec, "InferRequest", {"inputs": [{**features, "shape": [1, 3]}]})
    assert not valid(spec, "InferRequest", {"inputs": [{**features, "datatype": "BYTES"}]})
    assert not valid(spec, "InferRequest", {"inputs": [{**features, "datatype": "INT8",
                                                        "data": [1, 2, 3, 300]}]})
    no_data = {key: value for key, value in features.items() if key != "data"}
    assert not valid(spec, "InferRequest", {"inputs": [no_data]})  # JSON-only: data needed


def test_requests_valid_for_the_document_are_accepted(client: TestClient,
                                                      spec: dict[str, Any]) -> None:
    records = {"records": [ROW, ROW]}
    matrix = {"inputs": [{"name": "features", "shape": [2, 4], "datatype": "FP32",
                          "data": [[1, 2, 3, 4], [5, 6, 7, 8]]}],
              "outputs": [{"name": "label"}]}
    columns = {"inputs": [{"name": name, "shape": [1], "datatype": "INT16", "data": [3]}
                          for name in reversed(FEATURES)]}
    assert valid(spec, "PredictRequest", records)
    assert client.post("/v1/predict", json=records).status_code == 200
    for body in (matrix, columns):
        assert valid(spec, "InferRequest", body)
        assert client.post("/v2/models/synthetic/infer", json=body).status_code == 200


def test_records_and_outputs_follow_the_model(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    records = schemas["PredictRequest"]["properties"]["records"]
    assert (records["minItems"], records["maxItems"]) == (1, MAX_BATCH)
    assert records["items"]["required"] == FEATURES
    assert records["items"]["additionalProperties"] is False
    ids = schemas["EntityRequest"]["properties"]["entity_ids"]
    assert (ids["minItems"], ids["maxItems"]) == (1, MAX_BATCH)
    assert schemas["RequestOutput"]["properties"]["name"] == {"enum": ["prediction", "label"]}
    assert schemas["FeatureTensor"]["properties"]["name"] == {"enum": FEATURES}
    for path, name, version in (("/v2/models/{name}/versions/{version}/infer", True, True),
                                ("/v2/models/{name}/ready", True, False)):
        operation = next(iter(spec["paths"][path].values()))
        pinned = {p["name"]: p["schema"]["enum"] for p in operation["parameters"]}
        assert pinned == {**({"name": ["synthetic"]} if name else {}),
                          **({"version": ["3"]} if version else {})}


def test_admin_operations_declare_the_bearer_scheme(client: TestClient,
                                                    spec: dict[str, Any]) -> None:
    assert spec["components"]["securitySchemes"]["AdminToken"]["scheme"] == "bearer"
    assert spec["components"]["securitySchemes"]["AdminToken"]["type"] == "http"
    for path in ("/admin/status", "/admin/reload", "/admin/rollback"):
        for operation in spec["paths"][path].values():
            assert operation["security"] == [{"AdminToken": []}]
            assert not operation.get("parameters")  # the token is not a header parameter
    missing = client.get("/admin/status")
    assert (missing.status_code, missing.headers["www-authenticate"]) == (401, "Bearer")
    wrong = client.get("/admin/status", headers={"Authorization": "Bearer wrong"})
    assert wrong.status_code == 403
    right = client.get("/admin/status", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert right.status_code == 200


class MovingSource:
    """Local model files by version; the test says which version is designated."""

    uri = "test:moving"

    def __init__(self, files: dict[str, tuple[Path, str]], version: str) -> None:
        self.files, self.version = files, version

    def resolve(self) -> str:
        return self.version

    def fetch(self, version: str) -> ModelBytes:
        path, sha = self.files[version]
        return ModelBytes("synthetic", version, path.read_bytes(), sha, str(path))


def test_a_hot_swap_changes_the_document(model_factory: ModelFactory,
                                         onnx_model: tuple[Path, str], tmp_path: Path) -> None:
    regression = model_factory(tmp_path / "r.onnx", features=["a", "b"], task="regression",
                               weights=np.array([1.0, 2.0], dtype=np.float32))
    source = MovingSource({"3": onnx_model, "4": regression}, "3")
    manager = ModelManager(source)
    app = create_app(manager, None, ServingConfig(access_log=False))
    before = TestClient(app).get("/openapi.json").json()  # no model yet: still valid
    validate(before)
    assert manager.refresh().status == "loaded"
    source.version = "4"
    assert manager.refresh().status == "loaded"
    after = TestClient(app).get("/openapi.json").json()
    validate(after)
    schemas = after["components"]["schemas"]
    assert schemas["PredictRequest"]["properties"]["records"]["items"]["required"] == ["a", "b"]
    assert schemas["RequestOutput"]["properties"]["name"] == {"enum": ["prediction"]}
    infer = after["paths"]["/v2/models/{name}/versions/{version}/infer"]["post"]
    assert {p["name"]: p["schema"]["enum"] for p in infer["parameters"]}["version"] == ["4"]
    assert app.state.metrics.models[("synthetic", "4", regression[1])] == 1  # still told


def test_without_a_model_the_document_keeps_the_service_limits(
        onnx_model: tuple[Path, str]) -> None:
    manager = ModelManager(FileSource(onnx_model[0], onnx_model[1], "synthetic", "3"))
    spec = create_app(manager, None, ServingConfig(max_batch=5, access_log=False)).openapi()
    validate(spec)
    records = spec["components"]["schemas"]["PredictRequest"]["properties"]["records"]
    assert (records["minItems"], records["maxItems"]) == (1, 5)
