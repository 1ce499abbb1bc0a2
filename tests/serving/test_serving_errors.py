"""Every bad request gets a 4xx (or 503 when not ready) naming the problem, never a 5xx."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

GOOD = {"f0": 1.0, "f1": 2.0, "f2": 3.0, "f3": 4.0}
JSON = {"content-type": "application/json"}


def _check(response: Any, status: int, *named: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["detail"], "every error carries a message"
    for text in named:
        assert text in body["detail"], body["detail"]
    assert "Traceback" not in response.text and 'File "' not in response.text
    return body


@pytest.mark.parametrize(("records", "named"), [
    ([GOOD, {"f0": 1, "f1": 2, "f2": 3}], ["records[1]", "missing", "f3"]),
    ([{**GOOD, "f9": 1}], ["records[0]", "unknown field", "f9"]),
    ([GOOD, {**GOOD, "f2": "high"}], ["records[1].f2", "'high'", "not a number"]),
    ([{**GOOD, "f1": None}], ["records[0].f1", "not a number"]),
    ([{**GOOD, "f1": True}], ["records[0].f1", "not a number"]),
    ([{**GOOD, "f0": [1.0]}], ["records[0].f0", "not a number"]),
    ([{**GOOD, "f3": 1e39}], ["records[0].f3", "finite float32"]),
    ([GOOD, 5], ["records[1] must be an object"]),
    ([], ["records is empty"]),
], ids=["missing", "extra", "string", "null", "bool", "list", "float32-overflow",
        "row-not-object", "empty"])
def test_bad_records_are_400(client: TestClient, records: list[Any], named: list[str]) -> None:
    body = _check(client.post("/v1/predict", json={"records": records}), 400, *named)
    assert body["error"] == "BadInput"


@pytest.mark.parametrize(("literal", "field"), [("NaN", "f0"), ("Infinity", "f2"),
                                                ("-Infinity", "f3")])
def test_non_finite_numbers_are_400(client: TestClient, literal: str, field: str) -> None:
    raw = json.dumps({"records": [GOOD]}).replace(f'"{field}": {GOOD[field]}',
                                                  f'"{field}": {literal}')
    assert literal in raw
    _check(client.post("/v1/predict", content=raw, headers=JSON), 400,
           f"records[0].{field}", "finite")


@pytest.mark.parametrize("literal", ["1" + "0" * 400, "-" + "9" * 320,
                                     "340282350000000000000000000000000000001"])
def test_integers_beyond_float32_are_400_and_not_echoed_whole(client: TestClient,
                                                               literal: str) -> None:
    """Python parses any JSON integer exactly; one beyond float64 must not reach float()."""
    raw = json.dumps({"records": [GOOD]}).replace('"f1": 2.0', f'"f1": {literal}')
    body = _check(client.post("/v1/predict", content=raw, headers=JSON), 400,
                  "records[0].f1", "not a finite float32 value")
    assert len(body["detail"]) < 200, body["detail"]


@pytest.mark.parametrize(("content", "named"), [
    ('{"records": [', ["not valid JSON"]),
    ("[1, 2]", ["body: Input should be an object"]),
    ('{"records": {"f0": 1}}', ["records", "valid array"]),
    ('{"rows": []}', ["records", "Field required"]),
    ('{"records": [], "threshold": 0.9}', ["threshold", "Extra inputs"]),
], ids=["not-json", "body-not-object", "records-not-list", "no-records", "extra-key"])
def test_malformed_bodies_are_422(client: TestClient, content: str, named: list[str]) -> None:
    _check(client.post("/v1/predict", content=content, headers=JSON), 422, *named)


def test_wrong_content_type_is_415(client: TestClient) -> None:
    response = client.post("/v1/predict", content=json.dumps({"records": [GOOD]}),
                           headers={"content-type": "text/plain"})
    _check(response, 415, "application/json", "text/plain")


def test_batch_over_the_limit_is_413(client: TestClient) -> None:
    _check(client.post("/v1/predict", json={"records": [GOOD] * 101}), 413, "101", "100")
    assert client.post("/v1/predict", json={"records": [GOOD] * 100}).status_code == 200


def test_entity_route_without_feature_store_is_503(client: TestClient) -> None:
    _check(client.post("/v1/predict/entity", json={"entity_ids": [1]}), 503, "feature store")


def test_without_a_model_alive_but_not_ready(empty_client: TestClient) -> None:
    assert empty_client.get("/v2/health/live").status_code == 200
    ready = empty_client.get("/v2/health/ready")
    assert ready.status_code == 503 and ready.json() == {"ready": False,
                                                         "error": "no model loaded"}
    _check(empty_client.get("/v1/model"), 503, "no model loaded")
    _check(empty_client.post("/v1/predict", json={"records": [GOOD]}), 503, "no model loaded")
    _check(empty_client.post("/v1/predict/entity", json={"entity_ids": [1]}), 503, "no model")


def test_unknown_route_and_method(client: TestClient) -> None:
    assert client.get("/v2/predict").status_code == 404
    assert client.get("/v1/predict").status_code == 405
