"""Predict-by-entity while the online store restarts: a real Redis of the test's own (so
the machine's Redis keeps serving everything else), the production profile's Feast stores
(SQL registry on the machine's PostgreSQL). While Redis is down the route answers 503
naming the problem; once Redis is back, the same service answers again by itself."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from onnx_models import FEATURES
from serving_setup import serving_manager

from benchmarks.synthetic import generate_panel, synthetic_spec
from mlops.features.online import online_lookup
from mlops.features.training_set import prepare_features
from mlops.serving.app import ServingConfig, create_app
from tests.e2e.production_services import RedisServer, postgres_tenant, production_profile

pytestmark = pytest.mark.slow


@pytest.fixture
def outage_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                  onnx_model: tuple[Path, str]) -> Iterator[tuple[TestClient, RedisServer]]:
    server = RedisServer(tmp_path)
    server.start()
    with postgres_tenant() as tenant, production_profile(
            monkeypatch, tenant, tmp_path, f"redis://127.0.0.1:{server.port}/0"):
        spec = synthetic_spec(str(tmp_path / "panel.parquet"), n_features=len(FEATURES),
                              name="outage_panel")
        prepare_features(generate_panel(n_entities=20, n_periods=4, seed=3), spec, tmp_path)
        app = create_app(serving_manager(*onnx_model), online_lookup(spec, tmp_path),
                         ServingConfig(entity_lookup=True))
        try:
            yield TestClient(app), server
        finally:
            server.stop()


def test_redis_down_is_503_and_the_service_recovers_when_it_is_back(
        outage_client: tuple[TestClient, RedisServer]) -> None:
    client, server = outage_client
    before = client.post("/v1/predict/entity", json={"entity_ids": [3, 7]})
    assert before.status_code == 200, before.text
    server.stop()
    down = client.post("/v1/predict/entity", json={"entity_ids": [3, 7]})
    assert down.status_code == 503, down.text
    assert down.json() == {"error": "OnlineStoreUnavailable",
                           "detail": "the online feature store is unavailable; retry shortly"}
    assert "127.0.0.1" not in down.text and "Traceback" not in down.text
    server.start()
    after = client.post("/v1/predict/entity", json={"entity_ids": [3, 7]})
    assert after.status_code == 200, after.text
    np.testing.assert_allclose(after.json()["predictions"], before.json()["predictions"])
