"""The handover store: each stage's typed result as a JSON file in the artifact store.

When the stages run as separate deployments (on other pools, in other processes, perhaps
on other machines), nothing is handed over in memory: a stage writes its small result
(paths, URIs, hashes, metrics) to ``<root>/handover/<run_id>/<stage>.json`` and the next
stage reads it back, validated into the same pydantic model. The root is the data
directory, or on the production profile the S3 bucket (``handover_root``), so a stage runs
on any worker, whatever its data directory holds. Files are written atomically (a temp file
renamed, or one S3 PUT), so a reader never sees half a result; a missing or corrupt file is
an error that names the stage and the path.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from mlops.config import Settings
from mlops.data import storage
from mlops.pipeline.stages import Stage

# Stage -> "module:Class" of its result; resolved lazily (training pulls in torch).
RESULT_TYPES: dict[Stage, str] = {
    Stage.VALIDATE: "mlops.data.snapshot:ValidatedData",
    Stage.FEATURES: "mlops.features.training_set:FeatureSetResult",
    Stage.TRAIN: "mlops.training.train:TrainResult",
    Stage.EXPORT: "mlops.training.export:ExportResult",
    Stage.REGISTER: "mlops.registry:RegistrationResult",
    Stage.DEPLOY: "mlops.serving.deploy:ServiceInfo",
}
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class HandoverError(RuntimeError):
    """A stage result that cannot be handed over: missing, corrupt, or of an unknown stage."""


class StageFailed(RuntimeError):
    """A stage (run as its own deployment) did not complete; the message says which and why."""


class HandoverRef(BaseModel):
    """Where one pipeline run's stage results are handed over: its folder in the store."""

    run_id: str = Field(pattern=_RUN_ID.pattern,
                        description="The parent pipeline run (its flow run id).")

    def folder(self, data_dir: Path) -> Path:
        return Path(data_dir) / "handover" / self.run_id


def _known(stage: Stage | str) -> Stage:
    try:
        return Stage(stage)
    except ValueError:
        raise HandoverError(f"unknown stage {stage!r}; known: {[str(s) for s in Stage]}") from None


def result_type(stage: Stage | str) -> type[BaseModel]:
    """The pydantic model a stage's result is validated into."""
    module, name = RESULT_TYPES[_known(stage)].split(":")
    return getattr(importlib.import_module(module), name)


def handover_root(settings: Settings) -> str:
    """The root every stage of a run hands over under: the S3 bucket on the production
    profile (whose settings this installs, see ``storage.use_object_store``), else the data
    directory."""
    storage.use_object_store(settings)
    return storage.data_root(settings)


def handover_path(root: Path | str, ref: HandoverRef, stage: Stage | str) -> Path | str:
    """A stage's result file: a local path, or an object-store URL under a remote root."""
    if storage.is_remote(str(root)):
        return storage.join(str(root), "handover", ref.run_id, f"{_known(stage)}.json")
    return ref.folder(Path(root)) / f"{_known(stage)}.json"


def write_result(root: Path | str, ref: HandoverRef, stage: Stage | str,
                 result: BaseModel) -> Path | str:
    """Write a stage's result atomically under ``root`` (``handover_root``); returns the
    file's path."""
    path = handover_path(root, ref, stage)
    expected = result_type(stage)
    if not isinstance(result, expected):
        raise HandoverError(f"stage '{stage}' hands over {expected.__name__}, "
                            f"not {type(result).__name__}")
    storage.write_bytes(str(path), result.model_dump_json(indent=2).encode())
    return path


def read_result(root: Path | str, ref: HandoverRef, stage: Stage | str) -> Any:
    """Read a stage's result back from under ``root``, validated into its model."""
    path = handover_path(root, ref, stage)
    try:
        text = storage.read_bytes(str(path)).decode(errors="replace")
    except FileNotFoundError:
        raise HandoverError(f"no handover from stage '{stage}': {path} does not exist "
                            "(did the stage run and complete?)") from None
    try:
        return result_type(stage).model_validate_json(text)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}"
                             for e in exc.errors())
        raise HandoverError(f"corrupt handover from stage '{stage}' at {path}: "
                            f"{problems}") from None
