"""The challenger as a canary: a share of entities answered by it, sticky by entity id,
per-version request series to compare the two, and started and rolled back under load
without a failed request."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from grpc_serving import grpc_serving, infer_request, stub, tensor
from onnx_models import FEATURES, WEIGHTS, write_model
from serving_setup import ADMIN_TOKEN, serving_manager

from mlops.serving.app import ServingConfig, create_app
from mlops.serving.canary import BUCKETS, bucket
from mlops.serving.model_manager import FileSource, ModelManager

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
RECORD = {"records": [dict(zip(FEATURES, [0.5, -1.0, 2.0, 0.1], strict=True))]}
V2 = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4],
                  "data": [0.5, -1.0, 2.0, 0.1]}]}
ENTITIES = [str(n) for n in range(300)]


@pytest.fixture(params=[2.0, 0.0], ids=["micro-batching", "direct"])
def canaried(request: pytest.FixtureRequest, onnx_model, tmp_path: Path):
    other = write_model(tmp_path / "challenger.onnx", weights=WEIGHTS * 2)
    challenger = ModelManager(FileSource(other[0], other[1], "synthetic", "4"))
    config = ServingConfig(admin_token=ADMIN_TOKEN, batch_window_ms=request.param)
    with TestClient(create_app(serving_manager(*onnx_model), None, config,
                               challenger=challenger)) as client:
        yield client


def answered_by(client: TestClient, entity: str | None, v2: bool = False) -> str:
    headers = {"X-Entity-Id": entity} if entity is not None else {}
    if v2:
        answer = client.post("/v2/models/synthetic/infer", json=V2, headers=headers)
        assert answer.status_code == 200, answer.text
        return answer.json()["model_version"]
    answer = client.post("/v1/predict", json=RECORD, headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()["version"]


def metric(client: TestClient, line: str) -> float:
    rows = [r for r in client.get("/metrics").text.splitlines() if r.startswith(line + " ")]
    return float(rows[0].rsplit(" ", 1)[1]) if rows else 0.0


def test_a_share_of_entities_goes_to_the_challenger_always_the_same(canaried) -> None:
    client = canaried
    assert {answered_by(client, e) for e in ENTITIES[:20]} == {"3"}  # no canary yet
    answer = client.post("/admin/canary", json={"share": 0.3}, headers=ADMIN)
    assert answer.status_code == 200 and answer.json()["challenger"] == "4", answer.text
    expected = {e: "4" if bucket(e) < 0.3 * BUCKETS else "3" for e in ENTITIES}
    first = {e: answered_by(client, e) for e in ENTITIES}
    assert first == expected and 60 <= list(first.values()).count("4") <= 120
    assert {e: answered_by(client, e, v2=True) for e in ENTITIES[:50]} == {
        e: expected[e] for e in ENTITIES[:50]}  # the v2 route (and its fast lane) too
    assert answered_by(client, None) == "3"  # no entity: the champion's
    # Raising the share keeps every entity that was in the canary there.
    client.post("/admin/canary", json={"share": 0.6}, headers=ADMIN)
    wider = {e: answered_by(client, e) for e in ENTITIES}
    assert all(wider[e] == "4" for e, v in first.items() if v == "4")
    # The two variants' requests, errors and latency, as the promotion reads them.
    challenger_ok = metric(client, 'mlops_model_requests_total{outcome="ok",version="4"}')
    assert challenger_ok == (list(first.values()).count("4") + list(wider.values()).count("4")
                             + [expected[e] for e in ENTITIES[:50]].count("4"))
    assert metric(client, 'mlops_model_request_duration_seconds_count{version="4"}') \
        == challenger_ok


def test_a_canary_started_and_rolled_back_under_load_fails_no_request(canaried) -> None:
    client = canaried
    failures, versions, done = [], set(), threading.Event()

    def load(entity: str) -> None:
        while not done.is_set():
            answer = client.post("/v1/predict", json=RECORD, headers={"X-Entity-Id": entity})
            if answer.status_code != 200:
                failures.append(answer.status_code)
            else:
                versions.add(answer.json()["version"])

    inside = next(e for e in ENTITIES if bucket(e) < 0.5 * BUCKETS)
    clients = [threading.Thread(target=load, args=(e,)) for e in (inside, *ENTITIES[:3])]
    for thread in clients:
        thread.start()
    for share in (0.5, 0.0, 0.5, 0.0):
        assert client.post("/admin/canary", json={"share": share},
                           headers=ADMIN).status_code == 200
    done.set()
    for thread in clients:
        thread.join()
    assert failures == [] and versions == {"3", "4"}
    assert answered_by(client, inside) == "3"  # rolled back: the champion answers


def test_grpc_calls_follow_the_canary_by_their_entity_id_parameter(onnx_model,
                                                                  tmp_path: Path) -> None:
    other = write_model(tmp_path / "challenger.onnx", weights=WEIGHTS * 2)
    challenger = ModelManager(FileSource(other[0], other[1], "synthetic", "4"))
    challenger.refresh()
    with grpc_serving(onnx_model, challenger=challenger, canary_share=0.3) as served, \
            stub(served.target) as grpc_stub:
        def version(entity: str | None) -> str:
            request = infer_request(tensor("features", "FP32", [1, 4],
                                           fp32_contents=[0.5, -1.0, 2.0, 0.1]))
            if entity is not None:
                request.parameters["entity_id"].string_param = entity
            return grpc_stub.ModelInfer(request).model_version

        answered = {e: version(e) for e in ENTITIES[:60]}
        assert version(None) == "3"
    assert answered == {e: "4" if bucket(e) < 0.3 * BUCKETS else "3" for e in ENTITIES[:60]}
    assert "4" in answered.values()


def test_a_bad_share_and_no_challenger_are_refused(canaried, client: TestClient) -> None:
    assert canaried.post("/admin/canary", json={"share": 1.5},
                         headers=ADMIN).status_code == 422
    assert canaried.post("/admin/canary", json={"share": 0.5}).status_code == 401
    answer = client.post("/admin/canary", json={"share": 0.5}, headers=ADMIN)
    assert answer.status_code == 409 and "no challenger" in answer.text


def test_buckets_are_stable_and_spread() -> None:
    counts = np.bincount([bucket(str(n)) * 10 // BUCKETS for n in range(10_000)], minlength=10)
    assert counts.min() > 900 and bucket("42") == bucket("42")
