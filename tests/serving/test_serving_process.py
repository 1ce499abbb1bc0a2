"""The service as a process: ``python -m mlops.serving --onnx ... --sha256 ...``."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from onnx_models import expected_scores

from mlops.processes import wait_until_ready

RECORD = {"f0": 0.5, "f1": -1.0, "f2": 2.0, "f3": 0.1}


def _service(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as handle:
        return subprocess.Popen([sys.executable, "-m", "mlops.serving", *args],
                                stdout=handle, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)


@pytest.mark.slow
def test_service_process_serves_a_verified_file(onnx_model: tuple[Path, str],
                                                tmp_path: Path, port: int) -> None:
    path, sha = onnx_model
    log = tmp_path / "service.log"
    process = _service(["--onnx", str(path), "--sha256", sha, "--name", "synthetic",
                        "--model-version", "7", "--host", "127.0.0.1", "--port", str(port)], log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(f"{url}/v2/health/ready", process, log, 60)
        assert httpx.get(f"{url}/v1/model").json()["version"] == "7"
        body = httpx.post(f"{url}/v1/predict", json={"records": [RECORD]}).json()
        np.testing.assert_allclose(body["predictions"],
                                   expected_scores(np.array([list(RECORD.values())])), rtol=1e-5)
        assert httpx.post(f"{url}/v1/predict", json={"records": []}).status_code == 400
    finally:
        process.terminate()
        code = process.wait(timeout=15)
    # uvicorn re-raises SIGTERM after a graceful shutdown, so -15 is a clean stop too.
    assert code in (0, -signal.SIGTERM), log.read_text()
    assert "serving synthetic v7" in log.read_text()
    assert "Application shutdown complete" in log.read_text()


@pytest.mark.parametrize(("extra", "message"), [
    (["--sha256", "ab" * 32], "does not match"),
    ([], "refusing to serve an unverified model"),
])
def test_service_refuses_unverified_models(onnx_model: tuple[Path, str], tmp_path: Path,
                                           port: int, extra: list[str], message: str) -> None:
    log = tmp_path / "service.log"
    process = _service(["--onnx", str(onnx_model[0]), "--port", str(port), *extra], log)
    assert process.wait(timeout=60) == 2
    assert message in log.read_text()
    assert "Traceback" not in log.read_text()
