"""The registry against a real MLflow SQLite tracking store."""

import signal
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from mlflow import MlflowClient
from onnx import TensorProto, helper

from mlops.atomic_files import sha256_file
from mlops.registry import (
    Lineage,
    RegistryError,
    fetch_model,
    model_name,
    register_model,
    should_promote,
)


def _tiny_onnx(path: Path, n_features: int = 3) -> Path:
    features = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", n_features])
    prediction = helper.make_tensor_value_info("prediction", TensorProto.FLOAT, ["batch"])
    node = helper.make_node("ReduceMean", ["features"], ["prediction"], keepdims=0, axes=[1])
    graph = helper.make_graph([node], "mean", [features], [prediction])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("registry")
    model = _tiny_onnx(root / "model.onnx")
    return {"uri": f"sqlite:///{root / 'mlflow.db'}", "artifacts": root / "artifacts",
            "model": str(model), "sha": sha256_file(model), "root": root}


def _register(store: dict, auc: float, sha: str | None = None, name: str = "toy"):
    lineage = Lineage(dataset=name, dataset_uri="builtin://toy", dataset_hash="ab" * 32,
                      feature_service=f"{name}_v1", git_commit="deadbeef", team="alpha")
    return register_model(store["uri"], store["artifacts"], store["model"], sha or store["sha"],
                          {"hidden": [8]}, {"test_auc": auc, "test_accuracy": 0.5}, "test_auc",
                          True, lineage)


def test_a_model_is_named_after_its_team_and_dataset() -> None:
    assert model_name("alpha", "wage_panel") == "alpha.wage_panel"
    assert model_name("data-eng", "x") == "data-eng.x"


def test_should_promote_first_and_only_when_strictly_better() -> None:
    assert should_promote(0.1, None, higher_is_better=True)
    assert should_promote(0.8, 0.7, higher_is_better=True)
    assert not should_promote(0.7, 0.7, higher_is_better=True)
    assert should_promote(1.0, 2.0, higher_is_better=False)
    assert not should_promote(3.0, 2.0, higher_is_better=False)


def test_champion_moves_only_on_a_better_metric(store: dict) -> None:
    first = _register(store, 0.70)
    assert first.champion and first.aliases == ["challenger", "champion"]
    worse = _register(store, 0.60)
    assert not worse.champion and worse.previous_champion == first.version
    better = _register(store, 0.75)
    assert better.champion and better.previous_champion == first.version
    client = MlflowClient(tracking_uri=store["uri"], registry_uri=store["uri"])
    for alias in ("champion", "challenger"):
        assert str(client.get_model_version_by_alias("alpha.toy", alias).version) == better.version


def test_version_carries_sha256_signature_and_lineage(store: dict) -> None:
    result = _register(store, 0.5, name="lineage")
    client = MlflowClient(tracking_uri=store["uri"], registry_uri=store["uri"])
    assert result.name == "alpha.lineage"
    version = client.get_model_version(result.name, result.version)
    assert version.tags["sha256"] == store["sha"]
    assert version.tags["lineage.dataset_hash"] == "ab" * 32
    assert version.tags["lineage.feature_service"] == "lineage_v1"
    run = client.get_run(result.run_id)
    assert run.data.tags["lineage.git_commit"] == "deadbeef"
    assert run.data.metrics["test_auc"] == 0.5
    fetched = fetch_model(store["uri"], "models:/alpha.lineage@champion", store["root"] / "dl")
    assert fetched.sha256 == store["sha"] == sha256_file(fetched.path)


def test_a_hash_mismatch_registers_nothing(store: dict) -> None:
    with pytest.raises(RegistryError, match="sha256"):
        _register(store, 0.9, sha="0" * 64, name="broken")
    client = MlflowClient(tracking_uri=store["uri"], registry_uri=store["uri"])
    assert client.search_model_versions("name='alpha.broken'") == []


def test_fetch_names_a_missing_model(store: dict) -> None:
    with pytest.raises(RegistryError, match="nosuchmodel"):
        fetch_model(store["uri"], "models:/nosuchmodel@champion", store["root"] / "x")
    with pytest.raises(RegistryError, match="models:/"):
        fetch_model(store["uri"], "runs:/abc/model", store["root"] / "x")


def _lineage(name: str, run: str) -> Lineage:
    return Lineage(dataset=name, dataset_uri="builtin://toy", dataset_hash="ab" * 32,
                   feature_service=f"{name}_v1", git_commit="deadbeef", team="alpha",
                   pipeline_run=run)


def _versions(store: dict, model: str) -> list[str]:
    client = MlflowClient(tracking_uri=store["uri"], registry_uri=store["uri"])
    return sorted(str(v.version) for v in client.search_model_versions(f"name='{model}'"))


def test_a_retried_registration_returns_the_same_version(store: dict) -> None:
    """A retry after a lost response: same pipeline run and file, no second version."""
    args = (store["uri"], store["artifacts"], store["model"], store["sha"], {"hidden": [8]},
            {"test_auc": 0.8}, "test_auc", True)
    first = register_model(*args, _lineage("retried", "run-1"))
    again = register_model(*args, _lineage("retried", "run-1"))
    assert (again.version, again.run_id, again.champion) == (first.version, first.run_id, True)
    assert again.previous_champion == first.previous_champion is None
    assert _versions(store, "alpha.retried") == [first.version]
    other = register_model(*args, _lineage("retried", "run-2"))  # another pipeline run
    assert other.version != first.version and not other.champion
    assert len(_versions(store, "alpha.retried")) == 2


def test_a_registration_continues_its_training_run_once(store: dict) -> None:
    """The version is registered in the run its training was tracked in; a second version
    of the same training (another registration) gets a run of its own."""
    from mlops.registry.tracking import EpochMetrics, training_run

    with training_run(store["uri"], store["artifacts"], "alpha.trained", "key-1", {}) as run:
        run.log_epoch(EpochMetrics(1, 0.5, 0.6, 100.0))
    args = (store["uri"], store["artifacts"], store["model"], store["sha"], {},
            {"test_auc": 0.8}, "test_auc", True)
    first = register_model(*args, _lineage("trained", ""), training_run_id=run.run_id)
    second = register_model(*args, _lineage("trained", ""), training_run_id=run.run_id)
    assert first.run_id == run.run_id and second.run_id != run.run_id
    assert _versions(store, "alpha.trained") == sorted([first.version, second.version])
    client = MlflowClient(tracking_uri=store["uri"])
    assert [m.value for m in client.get_metric_history(run.run_id, "train_loss")] == [0.5]


CRASH_AT_ALIAS_MOVE = """
import os, signal, sys
from pathlib import Path
import mlops.registry.registration as registration
from mlops.registry import Lineage

def crash(*args, **kwargs):  # the worker dies between the upload and the alias move
    os.kill(os.getpid(), signal.SIGKILL)

registration._move_aliases = crash
uri, artifacts, model, sha = sys.argv[1:5]
registration.register_model(uri, Path(artifacts), model, sha, {}, {"test_auc": 0.7},
                            "test_auc", True,
                            Lineage(dataset="crashed", dataset_uri="builtin://toy",
                                    dataset_hash="ab" * 32, feature_service="crashed_v1",
                                    git_commit="deadbeef", team="alpha", pipeline_run="run-9"))
"""


def test_a_worker_killed_before_the_alias_move_leaves_one_version_its_retry_finishes(
        store: dict) -> None:
    killed = subprocess.run([sys.executable, "-c", CRASH_AT_ALIAS_MOVE, store["uri"],
                             str(store["artifacts"]), store["model"], store["sha"]],
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert len(_versions(store, "alpha.crashed")) == 1  # uploaded, no alias yet
    client = MlflowClient(tracking_uri=store["uri"], registry_uri=store["uri"])
    assert client.get_registered_model("alpha.crashed").aliases == {}
    retried = register_model(store["uri"], store["artifacts"], store["model"], store["sha"], {},
                             {"test_auc": 0.7}, "test_auc", True, _lineage("crashed", "run-9"))
    assert _versions(store, "alpha.crashed") == [retried.version]
    assert retried.champion
    assert str(client.get_model_version_by_alias("alpha.crashed", "champion").version) == \
        retried.version


def test_a_failed_retry_never_deletes_the_version_an_earlier_attempt_completed(
        store: dict) -> None:
    """The first attempt completed (its response was lost); the retry fails verifying the
    stored file: the champion it would otherwise delete stays."""
    args = (store["uri"], store["artifacts"], store["model"], store["sha"], {},
            {"test_auc": 0.8}, "test_auc", True, _lineage("kept", "run-k"))
    first = register_model(*args)
    stored = [p for p in Path(store["artifacts"]).rglob("*.onnx")
              if "alpha.kept" in str(p)]
    assert stored
    for path in stored:
        path.write_bytes(path.read_bytes() + b"tampered")
    with pytest.raises(RegistryError, match="differs from sha256"):
        register_model(*args)
    assert _versions(store, "alpha.kept") == [first.version]
    client = MlflowClient(tracking_uri=store["uri"], registry_uri=store["uri"])
    assert str(client.get_model_version_by_alias("alpha.kept", "champion").version) == \
        first.version
