"""One drift check of a served model: the last window of its sampled requests against its
training set, scored by the version the alias names, judged by the team's policy.

The current data is what the service recorded (``mlops.serving.sampling``) during the
window, every version it served then included. The reference is the dataset's training
set (the one the last pipeline run built), at most ``REFERENCE_ROWS`` rows of it, scored
by the model now, so that prediction drift compares like with like. The Evidently report
goes to ``<data root>/monitoring/<model>/reports/<UTC time>.html``.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from mlops.config import DatasetSpec, Settings
from mlops.data import storage
from mlops.monitoring.drift import DriftResult, measure_drift
from mlops.monitoring.policy import DriftPolicy
from mlops.registry.client import fetch_verified, model_name
from mlops.serving.predictor import OnnxPredictor
from mlops.serving.sampling import (
    NAME_FORMAT,
    PREDICTION,
    file_time,
    recorded,
    requests_folder,
)

REFERENCE_ROWS = 20_000


class DriftCheckParams(BaseModel):
    """A drift check, as the Prefect UI's form and a schedule give it."""

    spec: DatasetSpec = Field(description="The dataset the model was trained on.")
    team: str = "default"
    alias: str = Field("champion", description="The version whose predictions are compared.")
    window_s: float | None = Field(None, gt=0, description="Seconds of sampled requests to "
                                   "compare (default: the team's drift policy).")


class DriftCheck(BaseModel):
    """What one check found, and where its report is."""

    model: str
    version: str
    team: str
    window_start: datetime
    window_end: datetime
    result: DriftResult
    report: str | None  # the Evidently HTML report (none when there was too little data)


def check_drift(params: DriftCheckParams, policy: DriftPolicy, settings: Settings,
                now: datetime | None = None) -> DriftCheck:
    """Measure the drift of the model's last window; the report is written when judged."""
    storage.use_object_store(settings)
    model = model_name(params.team, params.spec.name)
    end = now or datetime.now(UTC)
    start = end - timedelta(seconds=params.window_s or policy.window_s)
    root = storage.data_root(settings)
    current = read_window(requests_folder(root, model), start, end)
    data, fetched = fetch_verified(settings.tracking, f"models:/{model}@{params.alias}",
                                   settings.mlflow_auth(params.team))
    predictor = OnnxPredictor.from_bytes(data, f"models:/{model}@{params.alias}",
                                         fetched.sha256, model, fetched.version)
    spec = params.spec
    reference = scored_reference(training_set(spec, settings), predictor)
    features = current.reindex(columns=[*spec.features, PREDICTION])
    report = None
    with tempfile.TemporaryDirectory(prefix="mlops-drift-") as folder:
        html = Path(folder) / "report.html"
        result = measure_drift(reference, features, spec.numeric_features, spec.categorical,
                               policy, PREDICTION, html_path=html)
        if html.exists():
            report = storage.join(root, "monitoring", model, "reports",
                                  f"{end.strftime(NAME_FORMAT)}.html")
            storage.write_bytes(report, html.read_bytes())
    return DriftCheck(model=model, version=fetched.version, team=params.team,
                      window_start=start, window_end=end, result=result, report=report)


def read_window(folder: str, start: datetime, end: datetime) -> pd.DataFrame:
    """The rows sampled between ``start`` and ``end`` (none: an empty frame)."""
    # A file holds rows scored up to a flush before its name's time: one flush late is
    # the earliest a row of the window can be written.
    paths = [path for path in storage.list_files(folder)
             if (written := file_time(path.rsplit("/", 1)[-1])) and start <= written]
    if not paths:
        return pd.DataFrame()
    frame = pd.concat([storage.read_parquet(path) for path in paths], ignore_index=True)
    scored = frame["scored_at"]
    return frame[(scored >= start) & (scored <= end)].reset_index(drop=True)


def training_set(spec: DatasetSpec, settings: Settings) -> pd.DataFrame:
    from mlops.features.store import offline_dir  # Feast's import takes seconds

    path = storage.join(offline_dir(spec, settings.data_dir, settings), "training.parquet")
    if not storage.exists(path):
        raise FileNotFoundError(f"no training set of {spec.name} at {path}: run the training "
                                "pipeline on it first")
    return storage.read_parquet(path, columns=list(spec.features))


def scored_reference(frame: pd.DataFrame, predictor: OnnxPredictor) -> pd.DataFrame:
    """At most ``REFERENCE_ROWS`` rows of the training set (a seeded sample) with the
    model's predictions, as the service records its requests."""
    if len(frame) > REFERENCE_ROWS:
        frame = frame.sample(REFERENCE_ROWS, random_state=0)
    columns = frame[predictor.feature_names]
    matrix = (columns.to_numpy(dtype=np.float32) if predictor.encoding is None
              else columns.to_numpy(dtype=object))
    return recorded(predictor, matrix, predictor.predict(matrix))
