"""One service per model: deploying, rolling back or restarting one team's model never
fails a request of another's, and each service has its own port and admin token."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest
from test_model_lifecycle import Registry

from benchmarks.synthetic import generate_panel, synthetic_spec
from mlops.config import Settings
from mlops.features.training_set import prepare_features
from mlops.governance.audit.log import open_audit_log
from mlops.serving.deploy import admin_token_path, served_models, start_service, stop_service

ROW = {"f0": 0.5, "f1": -1.0, "f2": 0.25, "f3": 2.0}


class Load:
    """Clients predicting on one service until stopped; every outcome is kept."""

    def __init__(self, url: str, clients: int = 4) -> None:
        self.url, self.stop = url, threading.Event()
        self.statuses: list[int] = []
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self._client) for _ in range(clients)]

    def _client(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self.stop.is_set():
                try:
                    self.statuses.append(
                        client.post("/v1/predict", json={"records": [ROW]}).status_code)
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()


@pytest.mark.slow
def test_changing_one_model_never_fails_another_models_requests(tmp_path: Path,
                                                                port: int) -> None:
    registry = Registry(tmp_path / "registry")
    settings = Settings(data_dir=tmp_path / "data", tracking_uri=registry.uri, serve_port=port)
    alpha, beta = (synthetic_spec(str(tmp_path / f"{name}.parquet"), name=name)
                   for name in ("alpha", "beta"))
    for spec in (alpha, beta):
        prepare_features(generate_panel(n_entities=10, n_periods=3), spec, settings.data_dir)
        registry.register(0.1, model=f"{spec.name}.panel")
    try:
        served_alpha = start_service(alpha, settings, "alpha.panel")
        served_beta = start_service(beta, settings, "beta.panel")
        assert served_alpha.url == f"http://127.0.0.1:{port}"
        assert served_beta.url != served_alpha.url and served_beta.pid != served_alpha.pid
        assert served_models(settings) == ["alpha.panel", "beta.panel"]
        tokens = {name: admin_token_path(settings, name).read_text().strip()
                  for name in ("alpha.panel", "beta.panel")}
        assert tokens["alpha.panel"] != tokens["beta.panel"]
        refused = httpx.post(f"{served_beta.url}/admin/reload",
                             headers={"Authorization": f"Bearer {tokens['alpha.panel']}"})
        assert refused.status_code in (401, 403)

        with Load(served_beta.url) as load:
            registry.register(2.0, model="alpha.panel")
            assert start_service(alpha, settings, "alpha.panel").action == "rolled"
            rollback = httpx.post(f"{served_alpha.url}/admin/rollback",
                                  headers={"Authorization": f"Bearer {tokens['alpha.panel']}"})
            assert rollback.status_code == 200, rollback.text
            assert stop_service(settings, "alpha.panel")
            restarted = start_service(alpha, settings, "alpha.panel")
            assert restarted.action == "started" and restarted.url == served_alpha.url
        assert load.errors == [] and len(load.statuses) > 50
        assert set(load.statuses) == {200}
        assert httpx.get(f"{served_beta.url}/v1/model").json()["name"] == "beta.panel"
        with open_audit_log(settings) as log:  # each admin action, before it acted
            actions = [(r.action, r.actor, r.subject) for r in log.records()]
        assert actions == [("service.reloaded", "service-admin-token", "alpha.panel"),
                           ("service.rolled_back", "service-admin-token", "alpha.panel")]
    finally:
        stop_service(settings)
    assert not any(httpx_alive(url) for url in (served_alpha.url, served_beta.url))


def httpx_alive(url: str) -> bool:
    try:
        httpx.get(f"{url}/v2/health/live", timeout=2.0)
    except httpx.HTTPError:
        return False
    return True
