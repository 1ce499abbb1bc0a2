"""The deployed service is supervised: killed, clients are refused at once (never left
hanging) until it is back, on the same port, with the same champion."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest
from test_model_lifecycle import Registry

from benchmarks.synthetic import generate_panel, synthetic_spec
from mlops.config import Settings
from mlops.features.training_set import prepare_features
from mlops.processes import supervisor_state_path
from mlops.serving.deploy import start_service, stop_service
from mlops.supervisor import read_state

MODEL = "alpha.synthetic"
BODY = {"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32",
                    "data": [1.0, 2.0, 3.0, 4.0]}]}


@pytest.mark.slow
def test_a_killed_service_refuses_quickly_then_serves_the_same_champion(tmp_path: Path,
                                                                         port: int) -> None:
    registry = Registry(tmp_path)
    settings = Settings(data_dir=tmp_path / "data", tracking_uri=registry.uri, serve_port=port)
    spec = synthetic_spec(str(tmp_path / "panel.parquet"))
    prepare_features(generate_panel(n_entities=10, n_periods=3), spec, settings.data_dir)
    registry.register(0.1)
    champion = registry.register(0.3)
    try:
        service = start_service(spec, settings, MODEL)
        infer = f"{service.url}/v2/models/{MODEL}/infer"
        before = httpx.post(infer, json=BODY).json()
        state_path = supervisor_state_path(Path(service.pid_path))
        child = read_state(state_path).pid
        os.kill(child, signal.SIGKILL)
        refused, started = [], time.monotonic()
        while time.monotonic() - started < 120:
            sent = time.monotonic()
            try:
                answer = httpx.post(infer, json=BODY, timeout=5.0)
            except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
                # refused (the port is closed), or reset by the dying process: at once
                refused.append(time.monotonic() - sent)
                time.sleep(0.05)
                continue
            if answer.status_code == 200:
                break
            assert answer.status_code == 503, answer.text  # up, loading the champion
        else:
            raise AssertionError("the service did not come back in 120 s")
        assert refused and max(refused) < 2.0, refused  # never a hang
        after = answer.json()
        assert (after["model_version"], after["outputs"]) == (champion, before["outputs"])
        state = read_state(state_path)
        assert state.restarts == 1 and state.pid not in (None, child)
        assert state.last_exit == -signal.SIGKILL
    finally:
        assert stop_service(settings)
