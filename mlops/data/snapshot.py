"""The validate stage's product: a validated dataset frozen as a content-addressed snapshot
under the data root (the data directory, or the S3 bucket on the production profile).

``validate_in_memory`` serves a single file or the builtin dataset; a partitioned dataset
gets the same ``ValidatedData`` from ``mlops.partitioned.snapshot``.
"""

from __future__ import annotations

from pydantic import BaseModel

from mlops.config import DatasetSpec, Settings
from mlops.data import storage
from mlops.data.loading import load_dataset
from mlops.data.validation import require_valid, validate_dataset


class ValidatedData(BaseModel):
    """A validated dataset, frozen as a content-addressed parquet snapshot."""

    snapshot_path: str
    dataset_hash: str
    rows: int
    report_path: str
    docs_path: str | None


def snapshot_path(spec: DatasetSpec, dataset_hash: str, settings: Settings,
                  suffix: str = "") -> str:
    """``<data root>/datasets/<name>/<hash16><suffix>``: one snapshot per content."""
    return storage.join(storage.data_root(settings), "datasets", spec.name,
                        f"{dataset_hash[:16]}{suffix}")


def validate_in_memory(spec: DatasetSpec, settings: Settings) -> ValidatedData:
    """Load, validate (a failing batch is quarantined: ValidationFailed) and snapshot."""
    frame = load_dataset(spec)
    out_dir = settings.stage_dir(f"validation/{spec.name}")
    report = validate_dataset(frame, spec, out_dir, settings.stage_dir("quarantine"))
    require_valid(report)
    snapshot = snapshot_path(spec, report.dataset_hash, settings, ".parquet")
    if not storage.exists(snapshot):
        storage.write_parquet(snapshot, frame[spec.columns])
    return ValidatedData(snapshot_path=snapshot, dataset_hash=report.dataset_hash,
                         rows=report.rows, report_path=report.report_path,
                         docs_path=report.docs_path)
