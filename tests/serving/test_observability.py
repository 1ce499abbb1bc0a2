"""Prometheus metrics, request ids, JSON access logs, admin security and the OpenAPI document."""

from __future__ import annotations

import io
import json
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from serving_setup import ADMIN_TOKEN, serving_manager

from mlops.serving.access_log import AccessLog
from mlops.serving.app import ServingConfig, create_app

INFER = "/v2/models/synthetic/infer"
BODY = {"inputs": [{"name": "features", "shape": [2, 4], "datatype": "FP32",
                    "data": [1, 2, 3, 4, 5, 6, 7, 8]}]}
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}


def samples(client: TestClient) -> dict[tuple[str, frozenset], float]:
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples}


def value(metrics: dict, metric: str, **labels: str) -> float:
    return metrics.get((metric, frozenset(labels.items())), 0.0)


def test_metrics_count_requests_latency_batches_and_model(client: TestClient,
                                                          onnx_model: tuple[Any, str]) -> None:
    before = samples(client)
    for _ in range(3):
        assert client.post(INFER, json=BODY).status_code == 200
    assert client.post(INFER, json={"inputs": []}).status_code == 400
    after = samples(client)
    route = "/v2/models/{name}/infer"
    ok = dict(route=route, method="POST", status="200")
    assert value(after, "mlops_requests_total", **ok) - value(
        before, "mlops_requests_total", **ok) == 3
    assert value(after, "mlops_requests_total", route=route, method="POST", status="400") >= 1
    assert value(after, "mlops_request_duration_seconds_count", route=route) - value(
        before, "mlops_request_duration_seconds_count", route=route) == 4
    calls = value(after, "mlops_inference_batch_rows_count") - value(
        before, "mlops_inference_batch_rows_count")
    assert calls == 3  # one ONNX Runtime call per valid request when requests come one by one
    assert value(after, "mlops_inference_batch_rows_sum") - value(
        before, "mlops_inference_batch_rows_sum") == 6
    assert value(after, "mlops_inference_duration_seconds_count") >= 3
    assert value(after, "mlops_model_info", name="synthetic", version="3",
                 sha256=onnx_model[1]) == 1


def test_unknown_paths_share_one_label(client: TestClient) -> None:
    for path in ("/nope/1", "/nope/2"):
        assert client.get(path).status_code == 404
    text = client.get("/metrics").text
    assert 'route="unmatched"' in text and "/nope" not in text


def test_request_id_is_echoed_or_created(client: TestClient) -> None:
    given = client.post(INFER, json=BODY, headers={"x-request-id": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    created = client.post(INFER, json=BODY).headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", created)
    hostile = client.get("/v2", headers={"x-request-id": "a b\tc" * 30}).headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", hostile)


def test_one_json_access_log_line_per_request(onnx_model: tuple[Any, str]) -> None:
    sink = io.BytesIO()
    app = create_app(serving_manager(*onnx_model), None, ServingConfig(),
                     AccessLog(sink, block_lines=1))
    client = TestClient(app)
    client.post(INFER, json=BODY, headers={"x-request-id": "log-me"})
    client.post("/v1/predict", json={"records": []})
    lines = [json.loads(line) for line in sink.getvalue().splitlines()]
    assert [line["status"] for line in lines] == [200, 400]
    assert lines[0]["request_id"] == "log-me" and lines[1]["request_id"] != "log-me"
    first = lines[0]
    assert first["route"] == "/v2/models/{name}/infer" and first["method"] == "POST"
    assert first["model_version"] == "3" and first["ms"] > 0
    assert first["ts"].endswith("+00:00")
    assert lines[1]["route"] == "/v1/predict" and lines[1]["model_version"] == "3"


def test_access_lines_wait_for_a_block_then_flush() -> None:
    sink = io.BytesIO()
    log = AccessLog(sink, block_lines=3)
    log.record({"n": 1})
    log.record({"n": 2})
    assert sink.getvalue() == b""
    log.record({"n": 3})
    assert [json.loads(line)["n"] for line in sink.getvalue().splitlines()] == [1, 2, 3]
    log.record({"n": 4})
    log.flush()
    assert json.loads(sink.getvalue().splitlines()[-1])["n"] == 4
    assert not AccessLog(None).enabled


@pytest.mark.parametrize("path", ["/admin/reload", "/admin/rollback"])
@pytest.mark.parametrize("headers", [
    {}, {"authorization": ADMIN_TOKEN}, {"authorization": f"Basic {ADMIN_TOKEN}"},
    {"authorization": "Bearer "},
], ids=["none", "no-scheme", "basic", "empty-bearer"])
def test_admin_without_a_bearer_token_is_401(client: TestClient, path: str,
                                             headers: dict[str, str]) -> None:
    response = client.post(path, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert ADMIN_TOKEN not in response.text


@pytest.mark.parametrize("path", ["/admin/reload", "/admin/rollback"])
def test_admin_with_a_wrong_bearer_token_is_403(client: TestClient, path: str) -> None:
    response = client.post(path, headers={"authorization": "Bearer wrong-token-wrong-token"})
    assert response.status_code == 403
    assert "www-authenticate" not in response.headers
    assert "not this service's admin token" in response.json()["detail"]
    assert ADMIN_TOKEN not in response.text


def test_admin_with_the_token(client: TestClient) -> None:
    assert client.post("/admin/reload", headers=ADMIN).json()["status"] == "unchanged"
    status = client.get("/admin/status", headers=ADMIN).json()
    assert status["serving"] == "3" and status["previous"] is None
    rollback = client.post("/admin/rollback", headers=ADMIN)
    assert rollback.status_code == 409 and "nothing to roll back" in rollback.json()["detail"]


def test_admin_is_off_without_a_configured_token(empty_client: TestClient) -> None:
    response = empty_client.post("/admin/reload", headers=ADMIN)
    assert response.status_code == 403
    assert "MLOPS_ADMIN_TOKEN" in response.json()["detail"]
    assert empty_client.post("/admin/reload").status_code == 401  # no token sent: 401 first


def test_openapi_documents_every_route_and_its_error_statuses(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    routes = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    served = {(m, r.path) for r in client.app.routes if hasattr(r, "methods")
              for m in r.methods if m != "HEAD" and not r.path.startswith(("/docs", "/redoc",
                                                                               "/openapi"))}
    assert routes == served
    infer = spec["paths"]["/v2/models/{name}/infer"]["post"]
    assert set(infer["responses"]) >= {"200", "400", "404", "413", "415", "422", "503"}
    schema = infer["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert schema.endswith("/InferRequest")
    ok = infer["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert ok.endswith("/InferResponse")
    error = spec["components"]["schemas"]["ErrorBody"]
    assert error["properties"] == {"error": {"title": "Error", "type": "string"}}
    v1 = spec["paths"]["/v1/predict"]["post"]["responses"]["400"]["content"]
    assert v1["application/json"]["schema"]["$ref"].endswith("/V1Error")
    for admin in ("/admin/reload", "/admin/rollback"):
        assert {"401", "403", "409"} <= set(spec["paths"][admin]["post"]["responses"])
