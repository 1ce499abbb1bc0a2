"""``mlops_requests_in_flight`` on the real server stack (uvicorn with the service's
protocol, the fast lane, the gRPC endpoint): it reads the requests being handled while
concurrent clients load the service, exactly the requests held open, and 0 once they are
answered, whatever the answer; probes and scrapes are not counted.

The autoscaler scales on this gauge (``infra/k8s/serving/hpa.yaml``): a local load test
that shows it follows the load is what the issue asks for.
"""

from __future__ import annotations

import hashlib
import json
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import grpc
import httpx
import numpy as np
import onnx
import pytest
from grpc_serving import grpc_serving, infer_request, stub, tensor
from onnx import TensorProto, helper, numpy_helper
from onnx_models import FEATURES, WEIGHTS
from prometheus_client.parser import text_string_to_metric_families
from raw_http import INFER, PREDICT, RECORD, ROW, V2, serving, status_of

GAUGE = "mlops_requests_in_flight"
SCRAPER = httpx.Client(timeout=10)  # one connection pool: a client per scrape costs more


def in_flight(url: str) -> float:
    """The gauge, as Prometheus would scrape it from ``/metrics``."""
    text = SCRAPER.get(f"{url}/metrics").text
    family = next(f for f in text_string_to_metric_families(text) if f.name == GAUGE)
    assert family.type == "gauge"
    return family.samples[0].value


def wait_for(url: str, wanted: float, within_s: float = 5.0) -> None:
    """Until the gauge reads ``wanted`` (the last response may reach the client a moment
    before the server has finished the request)."""
    deadline = time.monotonic() + within_s
    while (value := in_flight(url)) != wanted:
        assert time.monotonic() < deadline, f"{GAUGE} stayed at {value}, not {wanted}"
        time.sleep(0.02)


def write_slow_model(path: Path, size: int = 512, steps: int = 4) -> tuple[Path, str]:
    """A model of the export contract (features [batch, 4] -> prediction [batch], a
    logistic regression) that also multiplies ``size`` x ``size`` matrices scaled by its
    input, adding nothing to the prediction: every call takes milliseconds, too long to run
    on the event loop or in the fast lane, so that concurrent requests queue for the
    inference thread."""
    init = [numpy_helper.from_array(np.eye(size, dtype=np.float32) * 0.5, "a"),
            numpy_helper.from_array(WEIGHTS.reshape(-1, 1), "w"),
            numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
            numpy_helper.from_array(np.array([-1], np.int64), "flat")]
    nodes = [helper.make_node("ReduceSum", ["features"], ["s"], keepdims=1),
             helper.make_node("Mul", ["a", "s"], ["m0"])]  # input-dependent: not folded
    nodes += [helper.make_node("MatMul", [f"m{i}", "a"], [f"m{i + 1}"]) for i in range(steps)]
    nodes += [helper.make_node("ReduceMean", [f"m{steps}"], ["r"], keepdims=0),
              helper.make_node("Mul", ["r", "zero"], ["z"]),
              helper.make_node("MatMul", ["features", "w"], ["xw"]),
              helper.make_node("Add", ["xw", "z"], ["logit"]),
              helper.make_node("Sigmoid", ["logit"], ["prob"]),
              helper.make_node("Reshape", ["prob", "flat"], ["prediction"])]
    graph = helper.make_graph(
        nodes, "slow", [helper.make_tensor_value_info("features", TensorProto.FLOAT,
                                                      ["batch", len(FEATURES)])],
        [helper.make_tensor_value_info("prediction", TensorProto.FLOAT, ["batch"])],
        initializer=init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    helper.set_model_props(model, {"feature_names": json.dumps(FEATURES),
                                   "task": "classification", "label": "label",
                                   "dataset": "synthetic"})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return write_slow_model(tmp_path_factory.mktemp("slow") / "model.onnx")


def looping(call: Callable[[], bool], stop: threading.Event, answers: list[bool]) -> None:
    """One client: a request, then the next as soon as it is answered, until ``stop``."""
    while not stop.is_set():
        answers.append(call())


def clients(url: str, target: str, closing: ExitStack, http_clients: int, grpc_clients: int
            ) -> Iterator[Callable[[], bool]]:
    """HTTP clients (v2 infer, v1 predict) and gRPC ModelInfer clients, each with its own
    connection; a call says whether its answer was a success."""
    for i in range(http_clients):
        http = closing.enter_context(httpx.Client(base_url=url, timeout=30))
        path, body = (INFER, V2) if i % 2 else (PREDICT, {"records": [RECORD]})
        yield lambda http=http, path=path, body=body: http.post(path, json=body).is_success
    message = infer_request(tensor("features", "FP32", [1, 4], fp32_contents=ROW))
    for _ in range(grpc_clients):
        client = closing.enter_context(stub(target))
        yield lambda client=client: len(client.ModelInfer(message, timeout=30).outputs) > 0


def samples(url: str, count: int, every_s: float) -> list[float]:
    values = []
    for _ in range(count):
        values.append(in_flight(url))
        time.sleep(every_s)
    return values


@pytest.mark.parametrize(("http_clients", "grpc_clients"), [(12, 4), (0, 8)],
                         ids=["http-and-grpc", "grpc-only"])
def test_the_gauge_tracks_concurrent_load(slow_model: tuple[Path, str], http_clients: int,
                                          grpc_clients: int) -> None:
    concurrency = http_clients + grpc_clients
    # One inference thread, no micro-batching: concurrent requests queue, as under load.
    with grpc_serving(slow_model, batch_window_ms=0, inference_threads=1) as served, \
            ExitStack() as closing:
        assert in_flight(served.url) == 0  # idle: the scrape itself is not counted
        stop, answers = threading.Event(), []
        threads = [threading.Thread(target=looping, args=(call, stop, answers), daemon=True)
                   for call in clients(served.url, served.target, closing, http_clients,
                                       grpc_clients)]
        for thread in threads:
            thread.start()
        while len(answers) < concurrency:  # the clients are past their connection set-up
            time.sleep(0.01)
        loaded = samples(served.url, 25, 0.02)
        stop.set()
        for thread in threads:
            thread.join(30)
        assert all(answers) and len(answers) > 2 * concurrency
        assert max(loaded) <= concurrency, loaded  # never more than the clients
        assert statistics.median(loaded) >= concurrency / 2, loaded
        wait_for(served.url, 0)


def _partial(port: int, path: str, body: bytes) -> socket.socket:
    """A request whose headers and half its body are sent: the app is handling it."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"POST {path} HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n"
                 f"content-length: {len(body)}\r\n\r\n".encode() + body[:len(body) // 2])
    return sock


def test_requests_held_open_are_counted_exactly(onnx_model: tuple[Path, str]) -> None:
    body = json.dumps({"records": [RECORD]}).encode()
    with serving(onnx_model) as (url, port):
        held = [_partial(port, PREDICT, body) for _ in range(5)]
        wait_for(url, 5)
        for sock in held[:2]:
            sock.sendall(body[len(body) // 2:])
            assert status_of(sock.recv(65536)) == 200
        wait_for(url, 3)
        for sock in held[2:]:
            sock.close()  # the client goes away: its request ends too
        wait_for(url, 0)
        for sock in held[:2]:
            sock.close()


def test_every_answer_gives_the_count_back(onnx_model: tuple[Path, str]) -> None:
    """Fast-lane answers, errors and refusals, REST and gRPC: back to 0 after each kind
    (a missing decrement leaves it above, a missing increment below)."""
    with grpc_serving(onnx_model, max_body_bytes=1024) as served:
        lane, url = served.app.state.lane, served.url
        before = lane.answered
        with httpx.Client(base_url=url) as http:
            for _ in range(20):
                assert http.post(INFER, content=json.dumps(V2)).status_code == 200
            assert lane.answered == before + 20  # the fast lane answered them
            assert http.post(INFER, json={"inputs": []}).status_code == 400
            assert http.post("/v2/models/other/infer", json=V2).status_code == 404
            assert http.post(PREDICT, content=b"x" * 4096).status_code == 413
            assert http.get("/nowhere").status_code == 404
            assert http.get("/v2/health/ready").status_code == 200
        wait_for(url, 0)
        with stub(served.target) as client:
            with pytest.raises(grpc.RpcError) as refused:
                client.ModelInfer(infer_request(model="other"))
            assert refused.value.code() == grpc.StatusCode.NOT_FOUND
            client.ModelInfer(infer_request(tensor("features", "FP32", [1, 4],
                                                   fp32_contents=ROW)))
        wait_for(url, 0)
