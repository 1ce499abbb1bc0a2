"""gRPC beside REST in the service as a process (``--grpc-port``), driven by
``tritonclient.grpc`` with its defaults, and over mutual TLS with the REST port's files."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from onnx_models import expected_scores
from test_tls import certs, client_options  # noqa: F401 - certs is a fixture
from tritonclient.utils import InferenceServerException

from mlops.processes import wait_until_ready


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


ROWS = np.array([[0.5, -1.0, 2.0, 0.1], [1.0, 0.0, -2.0, 3.0]], dtype=np.float32)


@contextmanager
def service(onnx_model: tuple[Path, str], log: Path, *flags: str,
            ready: dict | None = None) -> Iterator[tuple[str, int]]:
    """The service with REST and gRPC ports, ready: (REST base URL, gRPC port)."""
    rest, grpc_port = free_port(), free_port()
    path, sha = onnx_model
    with open(log, "wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "mlops.serving", "--onnx", str(path), "--sha256", sha,
             "--name", "synthetic", "--host", "127.0.0.1", "--port", str(rest),
             "--grpc-port", str(grpc_port), *flags],
            stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    scheme = "https" if flags else "http"
    try:
        wait_until_ready(f"{scheme}://127.0.0.1:{rest}/v2/health/ready", process, log, 60,
                         **(ready or {}))
        yield f"{scheme}://127.0.0.1:{rest}", grpc_port
    finally:
        process.terminate()
        process.wait(timeout=15)


def infer(client: grpcclient.InferenceServerClient) -> np.ndarray:
    tensor = grpcclient.InferInput("features", list(ROWS.shape), "FP32")
    tensor.set_data_from_numpy(ROWS)
    return client.infer("synthetic", [tensor]).as_numpy("prediction")


@pytest.mark.slow
def test_grpc_port_serves_beside_rest(onnx_model: tuple[Path, str], tmp_path: Path) -> None:
    log = tmp_path / "service.log"
    with service(onnx_model, log) as (_, grpc_port):
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        assert client.is_server_live() and client.is_model_ready("synthetic")
        np.testing.assert_allclose(infer(client), expected_scores(ROWS), rtol=1e-6)
    assert f"gRPC (Open Inference Protocol) on 127.0.0.1:{grpc_port}" in log.read_text()


@pytest.mark.slow
def test_grpc_over_mutual_tls_with_the_rest_ports_files(onnx_model: tuple[Path, str],
                                                        certs: Path, tmp_path: Path) -> None:  # noqa: F811
    flags = ["--ssl-certfile", str(certs / "server.pem"), "--ssl-keyfile",
             str(certs / "server.key"), "--ssl-ca-certs", str(certs / "ca.pem")]
    with service(onnx_model, tmp_path / "service.log", *flags,
                 ready={"verify": client_options(certs, True)["verify"]}) as (_, grpc_port):
        target = f"127.0.0.1:{grpc_port}"
        client = grpcclient.InferenceServerClient(
            target, ssl=True, root_certificates=str(certs / "ca.pem"),
            private_key=str(certs / "client.key"), certificate_chain=str(certs / "client.pem"))
        np.testing.assert_allclose(infer(client), expected_scores(ROWS), rtol=1e-6)
        anonymous = grpcclient.InferenceServerClient(
            target, ssl=True, root_certificates=str(certs / "ca.pem"))
        with pytest.raises(InferenceServerException):
            infer(anonymous)


def test_a_grpc_port_in_use_stops_the_service(onnx_model: tuple[Path, str],
                                              tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path, sha = onnx_model
        log = tmp_path / "service.log"
        with open(log, "wb") as handle:
            code = subprocess.run(
                [sys.executable, "-m", "mlops.serving", "--onnx", str(path), "--sha256", sha,
                 "--host", "127.0.0.1", "--port", str(free_port()), "--grpc-port", str(port)],
                stdout=handle, stderr=subprocess.STDOUT, timeout=60).returncode
    assert code == 2, log.read_text()
    assert str(port) in log.read_text()
