"""The deploy stage starts the service once, then rolls it to each new champion in place."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from test_model_lifecycle import Registry

from benchmarks.synthetic import generate_panel, synthetic_spec
from mlops.config import Settings
from mlops.features.training_set import prepare_features
from mlops.serving.deploy import DeployError, start_service, stop_service

MODEL = "alpha.synthetic"  # what Registry registers: team alpha's model of the dataset


@pytest.mark.slow
def test_deploy_starts_then_rolls_without_a_restart(tmp_path: Path, port: int) -> None:
    registry = Registry(tmp_path)
    settings = Settings(data_dir=tmp_path / "data", tracking_uri=registry.uri, serve_port=port)
    spec = synthetic_spec(str(tmp_path / "panel.parquet"))
    prepare_features(generate_panel(n_entities=10, n_periods=3), spec, settings.data_dir)
    first = registry.register(0.1)
    try:
        started = start_service(spec, settings, MODEL)
        assert (started.action, started.model_version) == ("started", first)
        token = settings.data_dir / "service" / MODEL / "admin-token"
        assert token.stat().st_mode & 0o077 == 0  # owner-only
        second = registry.register(2.0)
        rolled = start_service(spec, settings, MODEL)
        assert (rolled.action, rolled.model_version, rolled.pid) == ("rolled", second,
                                                                    started.pid)
        body = httpx.post(f"{rolled.url}/v1/predict/entity", json={"entity_ids": [3]}).json()
        assert body["version"] == second
        registry.register(0.5, task="ranking")  # a champion the service must refuse
        with pytest.raises(DeployError, match="refused the new champion"):
            start_service(spec, settings, MODEL)
        assert httpx.get(f"{rolled.url}/v1/model").json()["version"] == second
        assert token.read_text().strip() not in Path(rolled.log_path).read_text()
    finally:
        assert stop_service(settings)
