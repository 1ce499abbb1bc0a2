"""Two training pipelines of one model at once, each its own process, on a real Prefect
server and one MLflow store: two distinct, complete versions and a consistent champion."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mlflow import MlflowClient

from benchmarks.synthetic import generate_panel, synthetic_spec
from mlops.config import ModelSettings, Settings, TaskType
from mlops.pipeline.stages import PipelineParams

RUN_PIPELINE = """
import sys
from flows.training_pipeline import training_pipeline
from mlops.pipeline.stages import PipelineParams
state = training_pipeline(PipelineParams.model_validate_json(sys.argv[1]), return_state=True)
print(state.type.value, state.message)
print(state.result().model_version if state.is_completed() else "-")
"""


def test_two_pipelines_registering_at_once_make_two_complete_versions(
        prefect_server: None, tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL

    path = tmp_path / "panel.parquet"
    generate_panel(n_entities=60, n_periods=8, seed=1).to_parquet(path, index=False)
    spec = synthetic_spec(str(path), TaskType.classification, name="panel")
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(),
           "MLOPS_DATA_DIR": str(tmp_path / "data")}
    runs = [subprocess.Popen(
        [sys.executable, "-c", RUN_PIPELINE, PipelineParams(
            spec=spec, team="alpha", deploy=False,
            model=ModelSettings(epochs=8, hidden=[16], batch_size=32, seed=seed),
        ).model_dump_json()], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True) for seed in (1, 2)]
    versions = []
    for run in runs:
        out, err = run.communicate(timeout=600)
        assert run.returncode == 0 and out.startswith("COMPLETED"), out + err[-3000:]
        versions.append(out.strip().splitlines()[-1])
    assert sorted(versions) == ["1", "2"]
    tracking = Settings(data_dir=tmp_path / "data").tracking
    client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    auc = {}
    for version in versions:
        stored = client.get_model_version("alpha.panel", version)
        assert stored.status == "READY" and len(stored.tags["sha256"]) == 64
        assert stored.tags["registration.key"].endswith(stored.tags["sha256"])
        auc[version] = client.get_run(stored.run_id).data.metrics["test_auc"]
    champion = str(client.get_model_version_by_alias("alpha.panel", "champion").version)
    assert auc[champion] == max(auc.values())
