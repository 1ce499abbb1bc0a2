"""The fast lane (``mlops.serving.fast_lane``) on the real server stack: it answers the
common v2 infer request byte for byte as the app does, keeps order on a connection, counts
and logs what it answers, and hands every other request to the app."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from onnx_models import expected_scores
from raw_http import exchange, in_thread, request
from serving_setup import serving_manager

from mlops.serving.access_log import AccessLog
from mlops.serving.app import ServingConfig, create_app

ROW = [0.5, -1.0, 2.0, 0.1]
INFER = "/v2/models/synthetic/infer"


@pytest.fixture()
def served(onnx_model: tuple[Path, str]) -> Iterator[tuple[FastAPI, str, io.BytesIO]]:
    log = io.BytesIO()
    app = create_app(serving_manager(*onnx_model), None, ServingConfig(), AccessLog(log))
    with in_thread(app, ServingConfig(access_log=False)) as port:
        yield app, f"http://127.0.0.1:{port}", log


def v2(rows: int = 1, **extra: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "features", "shape": [rows, 4], "datatype": "FP32",
                        "data": ROW * rows}], **extra}


@pytest.mark.parametrize(("path", "body"), [
    (INFER, v2()),
    (INFER, v2(5, id="req-1")),
    (INFER, v2(2, outputs=[{"name": "prediction"}])),
    ("/v2/models/synthetic/versions/3/infer", v2(3, parameters={"note": "x"})),
], ids=["one-row", "five-rows-with-id", "one-output", "version-route"])
def test_the_lane_answers_as_the_app_does(served: tuple, onnx_model: tuple[Path, str],
                                          path: str, body: dict[str, Any]) -> None:
    app, url, _ = served
    before = app.state.lane.answered
    through_lane = httpx.post(url + path, content=json.dumps(body))  # no Content-Type
    assert app.state.lane.answered == before + 1
    through_app = TestClient(app).post(path, json=body)
    assert through_lane.status_code == through_app.status_code == 200
    assert through_lane.content == through_app.content
    assert through_lane.headers["content-type"] == "application/json"
    assert through_lane.headers["x-request-id"]


def test_binary_tensors_in_and_out_as_the_app_answers_them(served: tuple) -> None:
    app, url, _ = served
    rows = np.array([ROW, ROW[::-1]], dtype=np.float32)
    header = json.dumps({"inputs": [{"name": "features", "shape": [2, 4], "datatype": "FP32",
                                     "parameters": {"binary_data_size": rows.nbytes}}],
                         "parameters": {"binary_data_output": True}}).encode()
    content = header + rows.tobytes()
    headers = {"inference-header-content-length": str(len(header))}
    through_lane = httpx.post(url + INFER, content=content, headers=headers)
    assert app.state.lane.answered == 1
    through_app = TestClient(app).post(INFER, content=content, headers=headers)
    assert through_lane.status_code == through_app.status_code == 200
    assert through_lane.content == through_app.content
    assert through_lane.headers["content-type"] == "application/octet-stream"
    length = int(through_lane.headers["inference-header-content-length"])
    scores = np.frombuffer(through_lane.content[length:length + 8], dtype="<f4")
    np.testing.assert_allclose(scores, expected_scores(rows), rtol=1e-6)


def test_what_the_lane_does_not_take_the_app_answers(served: tuple) -> None:
    app, url, _ = served
    cases = [  # (body, headers, status): each goes to the app, which answers as always
        (json.dumps(v2()), {"content-type": "text/csv"}, 415),
        (json.dumps({"inputs": []}), {}, 400),
        ("{", {}, 422),
        (json.dumps(v2()), {"x-request-id": "given-1", "content-type": "application/json;"
                            " charset=utf-8"}, 200),
    ]
    for content, headers, status in cases:
        response = httpx.post(url + INFER, content=content, headers=headers)
        assert response.status_code == status, response.text
    assert httpx.post(url + "/v2/models/other/infer", json=v2()).status_code == 404
    assert app.state.lane.answered == 0


def test_pipelined_requests_are_answered_in_order(served: tuple) -> None:
    _, url, _ = served
    port = int(url.rsplit(":", 1)[1])
    first, second = json.dumps(v2(1, id="a")).encode(), json.dumps(v2(2, id="b")).encode()
    received, _, _ = exchange(port, request(INFER, first) + request(INFER, second), wait_s=2)
    heads = received.split(b"HTTP/1.1 ")[1:]
    assert [head[:3] for head in heads] == [b"200", b"200"]
    assert heads[0].index(b'"id":"a"') and heads[1].index(b'"id":"b"')


def test_lane_requests_are_counted_and_logged(served: tuple) -> None:
    app, url, log = served
    for _ in range(3):
        assert httpx.post(url + INFER, json=v2(), headers={"x-request-id": "mine-7"}
                          ).status_code == 200
    metrics = httpx.get(url + "/metrics").text
    assert ('mlops_requests_total{method="POST",route="/v2/models/{name}/infer",'
            'status="200"} 3.0') in metrics
    app.state.lane.access_log.flush()
    lines = [json.loads(line) for line in log.getvalue().splitlines()]
    infer = [line for line in lines if line["route"] == "/v2/models/{name}/infer"]
    assert len(infer) == 3 and {line["request_id"] for line in infer} == {"mine-7"}
    assert {line["model_version"] for line in infer} == {"3"}


def test_a_failing_model_call_is_a_logged_500(served: tuple,
                                              caplog: pytest.LogCaptureFixture) -> None:
    app, url, _ = served
    predictor = app.state.manager.current

    class Broken:  # fault injection: the model's session fails at run time
        def run(self, *args: Any) -> None:
            raise RuntimeError("onnxruntime failed")

    predictor.session = Broken()
    response = httpx.post(url + INFER, json=v2())
    assert response.status_code == 500
    assert response.json() == {"error": "InternalError: internal error"}
    assert "onnxruntime failed" in caplog.text


@pytest.mark.parametrize(("window_ms", "calls"), [(2.0, 1), (0.0, 3)],
                         ids=["batching-on", "batching-off"])
def test_requests_of_one_iteration_share_a_call_only_with_batching_on(
        onnx_model: tuple[Path, str], window_ms: float, calls: int) -> None:
    app = create_app(serving_manager(*onnx_model), None,
                     ServingConfig(batch_window_ms=window_ms), AccessLog(None))
    lane, replies = app.state.lane, []
    route = lane.route(b"POST", INFER.encode())[1]

    async def three_at_once() -> None:
        for rows in (1, 2, 3):
            scope = {"path": INFER, "headers": [], "client": ("127.0.0.1", 1)}
            body = json.dumps(v2(rows)).encode()
            assert lane.take(scope, route, body, lambda status, rest: replies.append(rest))
        while len(replies) < 3:
            await asyncio.sleep(0)

    asyncio.run(three_at_once())
    assert sum(app.state.metrics.batch_rows.counts) == calls
    assert app.state.metrics.batch_rows.sum == 6
    assert [json.loads(rest.split(b"\r\n\r\n", 1)[1])["outputs"][0]["shape"]
            for rest in replies] == [[1], [2], [3]]
