"""Feast's own CLI on the platform's stores: `feast plan` in feature_repo/ (the default
dataset), and `feast -f` (list, ui) on a store the platform rendered for a dataset.

Each run is the real `feast` console script in a subprocess. feature_repo/'s
feature_store.yaml reaches the data directory as ../data, so `feast plan` runs in a copy
of feature_repo/ (and of the default spec it reads) in a temporary folder: its data/ is
the temporary one, never the checkout's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from mlops.config import DEFAULT_SPEC, DatasetSpec, Settings, load_spec
from mlops.data.loading import load_dataset
from mlops.features.store import apply_definitions, render_store_yaml, store_for
from mlops.features.training_set import write_source
from tests.conftest import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
FEAST = Path(sys.executable).with_name("feast")


def environment() -> dict[str, str]:
    """This checkout's packages first: feature_repo's modules import ``feature_repo``."""
    path = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path), "NO_COLOR": "1"}


def feast(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(FEAST), *args], cwd=cwd, env=environment(),
                          capture_output=True, text=True, timeout=300)


def copy_checkout(destination: Path) -> Path:
    """feature_repo/ and the default spec, at the same places relative to each other."""
    shutil.copytree(ROOT / "feature_repo", destination / "feature_repo",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (destination / "mlops" / "specs").mkdir(parents=True)
    shutil.copy(DEFAULT_SPEC, destination / "mlops" / "specs" / DEFAULT_SPEC.name)
    return destination / "feature_repo"


def test_feast_plan_in_feature_repo_declares_the_default_dataset(tmp_path: Path) -> None:
    repo = copy_checkout(tmp_path)
    done = feast("plan", cwd=repo)
    assert done.returncode == 0, done.stdout + done.stderr
    for created in ("entity nr", "feature view wage_panel_features",
                    "feature service wage_panel_v1"):
        assert f"Created {created}" in done.stdout, done.stdout
    # Its relative paths led to the data directory beside the copy, and nowhere else.
    features = tmp_path / "data" / "features" / "wage_panel"
    assert (features / "source.parquet").is_file() and (features / "registry.db").is_file()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data", "feature_repo", "mlops"]


def test_feast_reads_only_the_default_dataset_module() -> None:
    from feast.repo_operations import get_repo_files

    assert get_repo_files(ROOT / "feature_repo") == [ROOT / "feature_repo" / "default_dataset.py"]


def test_importing_the_module_from_the_platform_declares_nothing() -> None:
    """Only Feast's CLI (a top-level module) gets the objects, and the source written."""
    import feature_repo.default_dataset as module

    assert not {"entity", "source", "view", "service", "_spec"} & set(vars(module))


def test_the_default_source_is_the_one_the_features_stage_writes(tmp_path: Path) -> None:
    from feature_repo.default_dataset import ensure_source, read_spec

    spec = load_spec(DEFAULT_SPEC)
    default = read_spec(DEFAULT_SPEC)
    assert (default.name, default.entity, default.timestamp, list(default.features)) == (
        spec.name, spec.entity, spec.timestamp, spec.features)
    ours = ensure_source(default, tmp_path / "ours" / "source.parquet")
    stages = write_source(load_dataset(spec), spec, tmp_path / "stage", Settings(profile="local"))
    assert pq.read_schema(ours).remove_metadata() == pq.read_schema(stages).remove_metadata()
    pd.testing.assert_frame_equal(pd.read_parquet(ours), pd.read_parquet(stages))
    mtime = ours.stat().st_mtime_ns
    assert ensure_source(default, ours) == ours and ours.stat().st_mtime_ns == mtime  # kept


def test_the_committed_store_is_the_template_for_the_default_dataset() -> None:
    """feature_repo/feature_store.yaml is the local template rendered for wage_panel, with
    paths relative to feature_repo/ (where Feast resolves them)."""
    spec = load_spec(DEFAULT_SPEC)
    rendered = render_store_yaml(spec, Path("../data/features/wage_panel"),
                                 Settings(profile="local"))
    committed = (ROOT / "feature_repo" / "feature_store.yaml").read_text()
    assert yaml.safe_load(committed) == yaml.safe_load(rendered)


@pytest.fixture
def rendered(tmp_path: Path) -> Path:
    """A dataset other than the default one, applied by the platform as its features stage
    does: the rendered feature_store.yaml under <data_dir>/features/churn/."""
    spec = DatasetSpec(name="churn", path="churn.parquet", entity="customer_id",
                       timestamp="event_time", features=["tenure", "spend"], label="churned",
                       task="classification")
    frame = pd.DataFrame({
        "customer_id": [1, 2, 3, 1], "tenure": [3, 10, 1, 4], "spend": [9.5, 20.0, 1.0, 7.5],
        "event_time": pd.to_datetime(["2024-01-01", "2024-01-01", "2024-01-02", "2024-02-01"],
                                     utc=True),
        "churned": [0, 1, 0, 1]})
    data_dir = tmp_path / "data"
    source = write_source(frame, spec, data_dir, Settings(profile="local"))
    store = store_for(spec, data_dir, Settings(profile="local"))
    apply_definitions(store, spec, source)
    return data_dir / "features" / "churn" / "feature_store.yaml"


def test_feast_cli_lists_the_views_of_a_rendered_store(rendered: Path, tmp_path: Path) -> None:
    done = feast("-f", str(rendered), "feature-views", "list", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "churn_features" in done.stdout, done.stdout


@pytest.mark.slow
def test_feast_ui_shows_a_rendered_store(rendered: Path, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "ui.log"
    with log.open("w") as out:
        ui = subprocess.Popen(
            [str(FEAST), "-f", str(rendered), "ui", "--host", "127.0.0.1", "--port", str(port)],
            cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, env=environment())
    try:
        def projects() -> dict | None:
            assert ui.poll() is None, f"feast ui exited: {log.read_text()[-3000:]}"
            try:
                return httpx.get(f"http://127.0.0.1:{port}/projects-list.json").json()
            except httpx.TransportError:
                return None

        listed = wait_for(projects, timeout_s=120, what="feast ui")
        assert [project["id"] for project in listed["projects"]] == ["churn"]
        views = httpx.get(f"http://127.0.0.1:{port}/api/v1/feature_views",
                          params={"project": "churn"}).json()
        assert [view["spec"]["name"] for view in views["featureViews"]] == ["churn_features"]
        assert httpx.get(f"http://127.0.0.1:{port}/").status_code == 200
    finally:
        ui.terminate()
        ui.wait(timeout=30)
