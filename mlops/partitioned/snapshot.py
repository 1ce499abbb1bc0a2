"""The validate stage on a partitioned dataset: Great Expectations per partition on the
Dask cluster, one report, and the snapshot as the partitions prepared for training
(``prepare_partitions``), one file per partition."""

from __future__ import annotations

import uuid

from mlops.atomic_files import write_atomic
from mlops.config import DatasetSpec, Settings
from mlops.data import storage
from mlops.data.snapshot import ValidatedData, snapshot_path
from mlops.partitioned.cluster import cluster_client
from mlops.partitioned.preparation import prepare_partitions
from mlops.partitioned.validation import require_valid_partitions, validate_partitions


def validate_partitioned(spec: DatasetSpec, settings: Settings) -> ValidatedData:
    """Validate ``spec.path`` partition by partition, then snapshot it (once per content)."""
    # The key-hash buckets of the uniqueness check: a local temporary folder serves a
    # LocalCluster; a team's cluster may span machines, so they go under the data root.
    scratch = (storage.join(storage.data_root(settings), "tmp", f"keys-{uuid.uuid4().hex}")
               if settings.dask_scheduler else None)
    with cluster_client(settings) as client:
        try:
            report = validate_partitions(spec.path, spec, client, scratch=scratch)
        finally:
            if scratch:
                storage.remove(scratch)
        path = settings.stage_dir(f"validation/{spec.name}") / (
            f"{spec.name}-{report.dataset_hash[:16]}.partitions.json")
        write_atomic(path, lambda tmp: tmp.write_text(report.model_dump_json(indent=2)))
        require_valid_partitions(report)
        snapshot = snapshot_path(spec, report.dataset_hash, settings)
        if not storage.complete(snapshot):
            storage.write_folder(
                snapshot, lambda folder: prepare_partitions(spec.path, spec, folder, client))
    return ValidatedData(snapshot_path=snapshot, dataset_hash=report.dataset_hash,
                         rows=report.rows, report_path=str(path), docs_path=None)
