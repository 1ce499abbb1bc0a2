"""Registry locks: PostgreSQL advisory locks (the machine's real PostgreSQL) and file locks,
and two registrations of one model at once from separate processes."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest
from mlflow import MlflowClient
from onnx import TensorProto, helper

from mlops.atomic_files import sha256_file
from mlops.locks import LockTimeout, advisory_lock

PG = "postgresql://postgres@127.0.0.1:5432/postgres"
REGISTER = """
import sys
from pathlib import Path
from mlops.registry import Lineage, register_model
uri, artifacts, model, sha, run, auc, lock = sys.argv[1:8]
result = register_model(uri, Path(artifacts), model, sha, {}, {"test_auc": float(auc)},
                        "test_auc", True,
                        Lineage(dataset="shared", dataset_uri="builtin://toy",
                                dataset_hash="ab" * 32, feature_service="shared_v1",
                                git_commit="deadbeef", team="alpha", pipeline_run=run),
                        lock_url=lock or None)
print(result.version)
"""


def test_an_advisory_lock_excludes_other_sessions_until_released() -> None:
    with advisory_lock(PG, "tests.locks.a"):
        with pytest.raises(LockTimeout, match="tests.locks.a"):
            with advisory_lock(PG, "tests.locks.a", timeout_s=0.5):
                pass
        with advisory_lock(PG, "tests.locks.b", timeout_s=0.5):  # another name: free
            pass
    with advisory_lock(PG, "tests.locks.a", timeout_s=0.5):  # released
        pass


def test_a_killed_holder_releases_its_advisory_lock() -> None:
    holder = subprocess.Popen([sys.executable, "-c", (
        "import time; from mlops.locks import advisory_lock\n"
        f"with advisory_lock({PG!r}, 'tests.locks.killed'):\n"
        "    print('held', flush=True); time.sleep(600)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockTimeout):
            with advisory_lock(PG, "tests.locks.killed", timeout_s=0.5):
                pass
    finally:
        holder.kill()
        holder.wait()
    with advisory_lock(PG, "tests.locks.killed", timeout_s=10):
        pass


@pytest.fixture
def store(tmp_path: Path) -> dict:
    features = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 3])
    prediction = helper.make_tensor_value_info("prediction", TensorProto.FLOAT, ["batch"])
    node = helper.make_node("ReduceMean", ["features"], ["prediction"], keepdims=0, axes=[1])
    graph = helper.make_graph([node], "mean", [features], [prediction])
    model = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    return {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "artifacts": str(tmp_path / "art"),
            "model": str(model), "sha": sha256_file(model)}


def _start(store: dict, run: str, auc: float, lock: str = PG) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", REGISTER, store["uri"], store["artifacts"],
                             store["model"], store["sha"], run, str(auc), lock],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen) -> str:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    return out.strip().splitlines()[-1]


def test_a_registration_waits_for_the_models_advisory_lock(store: dict) -> None:
    with advisory_lock(PG, "mlops.registry:alpha.shared"):  # another machine registering
        waiting = _start(store, "run-a", 0.7)
        time.sleep(8)
        assert waiting.poll() is None  # still waiting for the lock
    assert _finish(waiting) == "1"


def test_two_registrations_at_once_make_two_complete_versions_and_one_champion(
        store: dict) -> None:
    worse, better = _start(store, "run-a", 0.7), _start(store, "run-b", 0.9)
    versions = {_finish(worse): 0.7, _finish(better): 0.9}
    assert sorted(versions) == ["1", "2"]
    client = MlflowClient(tracking_uri=store["uri"], registry_uri=store["uri"])
    for version in versions:
        stored = client.get_model_version("alpha.shared", version)
        assert stored.tags["sha256"] == store["sha"] and stored.status == "READY"
    champion = client.get_model_version_by_alias("alpha.shared", "champion").version
    assert versions[str(champion)] == 0.9  # whichever order they ran in
