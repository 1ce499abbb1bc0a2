"""The gRPC endpoint alone: TLS and mutual TLS, and how failures the REST tests cannot
provoke on demand (a full queue, an unexpected error) reach a client."""

from __future__ import annotations

import asyncio
import datetime
import logging
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_serving import grpc_serving, infer_request, tensor

from mlops.serving.app import SERVER, ServingConfig
from mlops.serving.batching import Overloaded
from mlops.serving.grpc import ServiceParts, start_grpc
from mlops.serving.grpc import grpc_predict_v2_pb2 as pb
from mlops.serving.grpc import grpc_predict_v2_pb2_grpc as pb_grpc
from mlops.serving.metrics import ServiceMetrics
from mlops.serving.predictor import OnnxPredictor
from mlops.serving.tls import TlsFiles

Key = ec.EllipticCurvePrivateKey


def certificate(name: str, key: Key, issuer: tuple[x509.Certificate, Key] | None = None
                ) -> x509.Certificate:
    """A certificate for ``name`` (also its DNS name), self-signed when no issuer is given."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, signer = (issuer[0].subject, issuer[1]) if issuer else (subject, key)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), False)
            .sign(signer, hashes.SHA256()))


def write_pem(folder: Path, name: str, cert: x509.Certificate, key: Key) -> tuple[Path, Path]:
    cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """A CA, a server certificate for localhost and a client certificate, both CA-signed."""
    folder = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = certificate("test-ca", ca_key)
    files = {"ca": write_pem(folder, "ca", ca, ca_key)}
    for name in ("localhost", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        files[name] = write_pem(folder, name, certificate(name, key, (ca, ca_key)), key)
    return files


def live(target: str, credentials: grpc.ChannelCredentials) -> bool:
    with grpc.secure_channel(target, credentials) as channel:
        return pb_grpc.GRPCInferenceServiceStub(channel).ServerLive(
            pb.ServerLiveRequest(), timeout=5).live


def test_mutual_tls_needs_a_client_certificate(onnx_model: tuple[Path, str],
                                               pki: dict[str, tuple[Path, Path]]) -> None:
    ca = pki["ca"][0].read_bytes()
    server_cert, server_key = pki["localhost"]
    tls = TlsFiles(server_cert, server_key, client_ca=pki["ca"][0])
    with grpc_serving(onnx_model, tls=tls) as running:
        target = running.target.replace("127.0.0.1", "localhost")
        client_cert, client_key = (path.read_bytes() for path in pki["client"])
        assert live(target, grpc.ssl_channel_credentials(ca, client_key, client_cert))
        with pytest.raises(grpc.RpcError) as caught:
            live(target, grpc.ssl_channel_credentials(ca))  # no client certificate
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError):
            pb_grpc.GRPCInferenceServiceStub(channel).ServerLive(pb.ServerLiveRequest(),
                                                                  timeout=5)


def test_tls_without_client_ca_serves_any_client(onnx_model: tuple[Path, str],
                                                 pki: dict[str, tuple[Path, Path]]) -> None:
    with grpc_serving(onnx_model, tls=TlsFiles(*pki["localhost"])) as running:
        target = running.target.replace("127.0.0.1", "localhost")
        assert live(target, grpc.ssl_channel_credentials(pki["ca"][0].read_bytes()))


class FailingRunner:
    """A runner that refuses every batch with the error it is given."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def predict(self, predictor: OnnxPredictor, matrix: np.ndarray,
                      scope: Any = None) -> np.ndarray:
        raise self.error


class Manager:
    def __init__(self, predictor: OnnxPredictor) -> None:
        self.current = predictor


async def infer_with(predictor: OnnxPredictor, error: Exception) -> grpc.aio.AioRpcError:
    parts = ServiceParts(Manager(predictor), FailingRunner(error), ServiceMetrics(),
                         ServingConfig(), SERVER, lambda: None)  # type: ignore[arg-type]
    endpoint = await start_grpc(parts, "127.0.0.1", 0)
    request = infer_request(tensor("features", "FP32", [1, 4], fp32_contents=[1, 2, 3, 4]))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{endpoint.port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=5)
    finally:
        await endpoint.stop(0)
    return caught.value


def test_a_full_queue_is_resource_exhausted_with_retry_after(predictor: OnnxPredictor) -> None:
    error = asyncio.run(infer_with(predictor, Overloaded("8 rows are waiting", 3)))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.details() == "Overloaded: 8 rows are waiting"
    assert ("retry-after", "3") in tuple(error.trailing_metadata())


def test_an_unexpected_error_is_internal_and_logged(predictor: OnnxPredictor,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, "mlops.serving.grpc"):
        error = asyncio.run(infer_with(predictor, RuntimeError("/secret/path exploded")))
    assert (error.code(), error.details()) == (grpc.StatusCode.INTERNAL, "internal error")
    assert "/secret/path exploded" in caplog.text
