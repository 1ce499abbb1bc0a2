"""Hot swaps under concurrent load, on the service process: zero failed requests.

Eight clients call the service without pause while the champion moves (picked up by
polling), an operator rolls back, reloads, and a new champion is reloaded at once. Every
response must be a 200 whose prediction is exactly its reported version's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from serving_setup import ADMIN_TOKEN
from test_model_lifecycle import ROW, Registry, expected

from mlops.config import Settings
from mlops.governance.audit.log import open_audit_log
from mlops.processes import wait_until_ready

CLIENTS = 8
BIASES = {1: 0.1, 2: 2.0, 3: -1.0}  # registration order -> bias


class Load:
    """Clients posting inference requests until stopped; every outcome is kept."""

    def __init__(self, url: str) -> None:
        self.url, self.stop = url, threading.Event()
        self.results: list[tuple[int, str, float]] = []
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self._client) for _ in range(CLIENTS)]

    def _client(self) -> None:
        body = {"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32",
                            "data": ROW[0]}]}
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self.stop.is_set():
                try:
                    response = client.post("/v2/models/alpha.synthetic/infer", json=body)
                    data = response.json()
                    self.results.append((response.status_code, data.get("model_version", ""),
                                         data["outputs"][0]["data"][0]
                                         if response.status_code == 200 else float("nan")))
                except Exception as exc:  # every failure counts
                    self.errors.append(repr(exc))

    def wait_for(self, version: str, timeout_s: float = 60) -> None:
        deadline, seen = time.monotonic() + timeout_s, len(self.results)
        while time.monotonic() < deadline:
            if any(v == version for _, v, _ in self.results[seen:]):
                return
            time.sleep(0.05)
        pytest.fail(f"version {version} never answered; last: {self.results[-3:]}")


@pytest.mark.slow
def test_swaps_under_load_fail_no_request(tmp_path: Path, port: int) -> None:
    registry = Registry(tmp_path)
    versions = {registry.register(BIASES[1]): BIASES[1]}
    log = tmp_path / "service.log"
    env = {**os.environ, "MLOPS_ADMIN_TOKEN": ADMIN_TOKEN}
    command = [sys.executable, "-m", "mlops.serving", "--model-uri",
               "models:/alpha.synthetic@champion", "--tracking-uri", registry.uri,
               "--poll-s", "0.5",
               "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(tmp_path / "data")]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                   stdin=subprocess.DEVNULL)
    url, admin = f"http://127.0.0.1:{port}", {"authorization": f"Bearer {ADMIN_TOKEN}"}
    load = Load(url)
    try:
        wait_until_ready(f"{url}/v2/health/ready", process, log, 90)
        for thread in load.threads:
            thread.start()
        second = registry.register(BIASES[2])  # the poller swaps to it
        versions[second] = BIASES[2]
        load.wait_for(second)
        assert httpx.post(f"{url}/admin/rollback", headers=admin).status_code == 200
        load.wait_for(next(iter(versions)))
        assert httpx.post(f"{url}/admin/reload", headers=admin).json()["serving"] == second
        load.wait_for(second)
        third = registry.register(BIASES[3])
        versions[third] = BIASES[3]
        reload = httpx.post(f"{url}/admin/reload", headers=admin, timeout=60).json()
        assert reload["serving"] == third
        load.wait_for(third)
    finally:
        load.stop.set()
        for thread in load.threads:
            thread.join(timeout=30)
        process.terminate()
        process.wait(timeout=30)
    assert load.errors == []
    assert len(load.results) > 100
    assert {status for status, _, _ in load.results} == {200}
    assert {version for _, version, _ in load.results} == set(versions)
    for _, version, score in load.results:
        assert score == pytest.approx(expected(versions[version]), rel=1e-5), version
    text = log.read_text()
    assert ADMIN_TOKEN not in text
    access = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert len(access) >= len(load.results)
    assert {line["model_version"] for line in access if line["status"] == 200} >= set(versions)
    with open_audit_log(Settings(data_dir=tmp_path / "data")) as trail:
        admin_actions = [(r.action, r.subject, r.details["serving"]) for r in trail.records()]
    assert admin_actions == [("service.rolled_back", "alpha.synthetic", second),
                             ("service.reloaded", "alpha.synthetic", next(iter(versions))),
                             ("service.reloaded", "alpha.synthetic", second)]
