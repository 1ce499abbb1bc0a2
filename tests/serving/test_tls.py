"""https and mutual TLS of the service as a process, with certificates made by openssl here:
a CA, a server certificate for 127.0.0.1 and client certificates from that CA and from
another one. Wrong TLS files stop the service before it opens a port, naming the file."""

from __future__ import annotations

import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from onnx_models import expected_scores

from mlops.processes import wait_until_ready

RECORD = {"f0": 0.5, "f1": -1.0, "f2": 2.0, "f3": 0.1}


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(directory: Path, name: str) -> None:
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "2", "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out",
            f"{name}.pem", cwd=directory)


def make_signed(directory: Path, name: str, ca: str, extensions: str) -> None:
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            cwd=directory)
    (directory / f"{name}.ext").write_text(extensions)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem",
            cwd=directory)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("certs")
    make_ca(directory, "ca")
    make_ca(directory, "other-ca")
    make_signed(directory, "server", "ca", "subjectAltName=IP:127.0.0.1\n"
                "extendedKeyUsage=serverAuth\n")
    make_signed(directory, "client", "ca", "extendedKeyUsage=clientAuth\n")
    make_signed(directory, "stranger", "other-ca", "extendedKeyUsage=clientAuth\n")
    return directory


def start(onnx_model: tuple[Path, str], port: int, log: Path, *tls: str) -> subprocess.Popen:
    path, sha = onnx_model
    with open(log, "wb") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "mlops.serving", "--onnx", str(path), "--sha256", sha,
             "--name", "synthetic", "--host", "127.0.0.1", "--port", str(port), *tls],
            stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


@pytest.fixture()
def running(onnx_model: tuple[Path, str], certs: Path, port: int,
            tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    tls = ["--ssl-certfile", str(certs / "server.pem"), "--ssl-keyfile",
           str(certs / "server.key")]
    if request.param == "mutual":
        tls += ["--ssl-ca-certs", str(certs / "ca.pem")]
    log = tmp_path / "service.log"
    process = start(onnx_model, port, log, *tls)
    url = f"https://127.0.0.1:{port}"
    try:
        # Readiness over TLS, as a client of this CA (with a client certificate for mTLS).
        wait_until_ready(url + "/v2/health/ready", process, log, 60,
                         client_options(certs, request.param == "mutual")["verify"])
        yield url
    finally:
        process.terminate()
        process.wait(timeout=15)
    assert "serving synthetic" in log.read_text() and "on https://" in log.read_text()


def client_options(certs: Path, with_client_cert: bool, cert: str = "client") -> dict:
    context = ssl.create_default_context(cafile=certs / "ca.pem")
    if with_client_cert:
        context.load_cert_chain(certs / f"{cert}.pem", certs / f"{cert}.key")
    return {"verify": context}


def predict(url: str, **options: object) -> list[float]:
    response = httpx.post(f"{url}/v1/predict", json={"records": [RECORD]}, timeout=10,
                          **options)
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


@pytest.mark.slow
@pytest.mark.parametrize("running", ["tls"], indirect=True)
def test_https_serves_predictions_and_plain_http_is_refused(running: str, certs: Path) -> None:
    scores = predict(running, **client_options(certs, False))
    np.testing.assert_allclose(scores, expected_scores(np.array([list(RECORD.values())])),
                               rtol=1e-5)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{running}/v2/health/live", timeout=10)  # not a CA the client trusts
    with pytest.raises(httpx.HTTPError):
        httpx.get(running.replace("https", "http") + "/v2/health/live", timeout=10)


@pytest.mark.slow
@pytest.mark.parametrize("running", ["mutual"], indirect=True)
def test_mutual_tls_needs_a_client_certificate_from_the_ca(running: str, certs: Path) -> None:
    assert len(predict(running, **client_options(certs, True))) == 1
    for options in (client_options(certs, False), client_options(certs, True, "stranger")):
        with pytest.raises(httpx.HTTPError):
            predict(running, **options)


@pytest.mark.parametrize(("flags", "message"), [
    (["--ssl-certfile", "{certs}/server.pem"], "needs both --ssl-certfile and --ssl-keyfile"),
    (["--ssl-ca-certs", "{certs}/ca.pem"], "needs --ssl-certfile and --ssl-keyfile"),
    (["--ssl-certfile", "{certs}/server.pem", "--ssl-keyfile", "{certs}/client.key"],
     "cannot use certificate {certs}/server.pem with key {certs}/client.key"),
    (["--ssl-certfile", "{certs}/missing.pem", "--ssl-keyfile", "{certs}/server.key"],
     "cannot read the TLS certificate {certs}/missing.pem"),
    (["--ssl-certfile", "{certs}/server.pem", "--ssl-keyfile", "{certs}/server.key",
      "--ssl-ca-certs", "{certs}/server.csr"], "cannot use client CA {certs}/server.csr"),
], ids=["no-key", "ca-alone", "key-of-another-cert", "missing-file", "ca-not-a-certificate"])
def test_wrong_tls_settings_stop_the_service_naming_the_file(
        onnx_model: tuple[Path, str], certs: Path, tmp_path: Path, port: int,
        flags: list[str], message: str) -> None:
    log = tmp_path / "service.log"
    process = start(onnx_model, port, log, *[f.format(certs=certs) for f in flags])
    assert process.wait(timeout=60) == 2
    assert message.format(certs=certs) in log.read_text()
    assert "Traceback" not in log.read_text()
