"""The service follows the registry's champion: verified loads, refusals, swaps, rollback.

A real MLflow SQLite registry; versions are registered with ``register_model`` (the
pipeline's own step), each with a different bias so its predictions tell it apart.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from onnx_models import BIAS, expected_scores, write_model
from serving_setup import ADMIN_TOKEN

from mlops.registry import Lineage, register_model
from mlops.serving.app import ServingConfig, create_app
from mlops.serving.model_manager import ModelManager, RegistrySource

ROW = [[1.0, 2.0, 3.0, 4.0]]
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}


class Registry:
    """A throwaway registry where each new version becomes champion (its AUC rises)."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root, self.uri = root, f"sqlite:///{root / 'mlflow.db'}"
        self.auc = 0.5

    def register(self, bias: float, model: str = "alpha.synthetic", **model_args: object) -> str:
        """A new version of ``model``, named <team>.<dataset> as the pipeline names it."""
        self.auc += 0.01
        team, dataset = model.split(".", 1)
        path, sha = write_model(self.root / f"m{self.auc:.2f}.onnx", bias=bias, **model_args)
        lineage = Lineage(dataset=dataset, dataset_uri=f"builtin://{dataset}",
                          dataset_hash="ab" * 32, feature_service="synthetic_v1",
                          git_commit="deadbeef", team=team)
        result = register_model(self.uri, self.root / "artifacts", str(path), sha, {},
                                {"test_auc": self.auc}, "test_auc", True, lineage)
        assert result.champion
        return result.version


def scores(client: TestClient) -> tuple[str, float]:
    body = client.post("/v2/models/alpha.synthetic/infer", json={"inputs": [
        {"name": "features", "shape": [1, 4], "datatype": "FP32", "data": ROW[0]}]}).json()
    return body["model_version"], body["outputs"][0]["data"][0]


def expected(bias: float) -> float:
    import onnx_models

    logit = np.float32(np.array(ROW, dtype=np.float32) @ onnx_models.WEIGHTS + np.float32(bias))
    return float(1 / (1 + np.exp(-logit[0])))


@pytest.fixture()
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path)


def test_follows_champion_refuses_bad_versions_and_rolls_back(registry: Registry) -> None:
    first = registry.register(BIAS)
    manager = ModelManager(RegistrySource(registry.uri, "models:/alpha.synthetic@champion"))
    client = TestClient(create_app(manager, None, ServingConfig(admin_token=ADMIN_TOKEN)))
    assert client.get("/v2/health/ready").status_code == 503  # readiness waits for a model
    assert manager.refresh().status == "loaded"
    assert client.get("/v2/health/ready").status_code == 200
    np.testing.assert_allclose(scores(client)[1], expected_scores(np.array(ROW))[0], rtol=1e-5)

    second = registry.register(2.0)
    reload = client.post("/admin/reload", headers=ADMIN).json()
    assert reload == {"status": "loaded", "serving": second, "version": second, "detail": ""}
    assert scores(client)[0] == second
    assert scores(client)[1] == pytest.approx(expected(2.0), rel=1e-5)

    # A version breaking the contract: refused, the old one keeps serving.
    broken = registry.register(3.0, task="ranking")
    response = client.post("/admin/reload", headers=ADMIN)
    assert response.status_code == 409
    assert f"version {broken} refused, still serving {second}" in response.json()["detail"]
    assert "metadata 'task'" in response.json()["detail"]
    assert "/tmp" not in response.text and "mlops-model-" not in response.text
    assert scores(client)[0] == second
    assert manager.refresh().status == "unchanged"  # polling does not retry a refused one

    rollback = client.post("/admin/rollback", headers=ADMIN).json()
    assert rollback["status"] == "rolled_back" and rollback["serving"] == first
    assert scores(client)[0] == first
    status = client.get("/admin/status", headers=ADMIN).json()
    assert status["held"] == second and broken in status["refused"]
    assert "mlops_model_changes_total{status=\"rolled_back\"} 1.0" in client.get("/metrics").text


def test_a_tampered_file_is_refused_by_its_sha256(registry: Registry) -> None:
    registry.register(BIAS)
    manager = ModelManager(RegistrySource(registry.uri, "models:/alpha.synthetic@champion"))
    manager.refresh()
    served = manager.current.version
    tampered = registry.register(4.0)
    newest = max((registry.root / "artifacts").rglob("*.onnx"), key=lambda f: f.stat().st_mtime)
    newest.write_bytes(write_model(registry.root / "other.onnx", bias=9.0)[0].read_bytes())
    result = manager.refresh()
    assert result.status == "refused" and result.serving == served
    assert f"models:/alpha.synthetic/{tampered}: sha256" in result.detail
    assert "does not match" in result.detail
    assert manager.current.version == served


def test_polling_picks_up_a_new_champion(registry: Registry) -> None:
    registry.register(BIAS)
    manager = ModelManager(RegistrySource(registry.uri, "models:/alpha.synthetic@champion"))
    manager.refresh()
    manager.poll(0.2)
    try:
        newer = registry.register(1.5)
        deadline = time.monotonic() + 60
        while manager.current.version != newer and time.monotonic() < deadline:
            time.sleep(0.1)
        assert manager.current.version == newer
        assert manager.previous is not None
    finally:
        manager.stop()


def test_the_source_reads_its_own_registry(tmp_path: Path) -> None:
    """Registering elsewhere sets MLflow's process-wide registry URI; the source ignores it."""
    ours, other = Registry(tmp_path / "ours"), Registry(tmp_path / "other")
    ours.register(BIAS)
    newest = ours.register(2.0)
    other.register(BIAS)  # the last registration: the process-wide URI now names "other"
    assert RegistrySource(ours.uri, "models:/alpha.synthetic@champion").resolve() == newest == "2"


def test_an_unknown_alias_is_a_clear_source_error(registry: Registry) -> None:
    registry.register(BIAS)
    manager = ModelManager(RegistrySource(registry.uri, "models:/alpha.synthetic@nope"))
    with pytest.raises(Exception, match="cannot resolve models:/alpha.synthetic@nope"):
        manager.refresh()
