"""The handover store: typed stage results round-trip through JSON files, never memory."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from mlops.data.snapshot import ValidatedData
from mlops.pipeline.handover import (
    RESULT_TYPES,
    HandoverError,
    HandoverRef,
    handover_path,
    read_result,
    result_type,
    write_result,
)
from mlops.training.export import ExportResult

REF = HandoverRef(run_id="0b6f3c2e-1d2a-4c6f-9b1e-5a7d8e9f0a1b")


def _validated() -> ValidatedData:
    return ValidatedData(snapshot_path="/d/snap.parquet", dataset_hash="ab" * 32, rows=240,
                         report_path="/d/report.json", docs_path=None)


def test_a_result_round_trips_into_its_model(tmp_path: Path) -> None:
    path = write_result(tmp_path, REF, "validate", _validated())
    assert path == tmp_path / "handover" / REF.run_id / "validate.json"
    back = read_result(tmp_path, REF, "validate")
    assert isinstance(back, ValidatedData) and back == _validated()
    assert [p.name for p in path.parent.iterdir()] == ["validate.json"]  # no temp files left


def test_writing_again_replaces_the_result(tmp_path: Path) -> None:
    write_result(tmp_path, REF, "validate", _validated())
    write_result(tmp_path, REF, "validate", _validated().model_copy(update={"rows": 7}))
    assert read_result(tmp_path, REF, "validate").rows == 7


def test_a_missing_result_names_the_stage_and_path(tmp_path: Path) -> None:
    with pytest.raises(HandoverError, match="stage 'train'") as caught:
        read_result(tmp_path, REF, "train")
    assert str(handover_path(tmp_path, REF, "train")) in str(caught.value)


@pytest.mark.parametrize("text", ["{not json", '{"rows": "many"}', "[]", ""])
def test_a_corrupt_result_names_the_stage_and_path(tmp_path: Path, text: str) -> None:
    path = handover_path(tmp_path, REF, "validate")
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with pytest.raises(HandoverError, match="corrupt handover from stage 'validate'") as caught:
        read_result(tmp_path, REF, "validate")
    assert str(path) in str(caught.value)


def test_a_result_of_the_wrong_type_is_refused(tmp_path: Path) -> None:
    with pytest.raises(HandoverError, match="hands over ExportResult, not ValidatedData"):
        write_result(tmp_path, REF, "export", _validated())
    assert not handover_path(tmp_path, REF, "export").exists()


def test_unknown_stages_are_refused(tmp_path: Path) -> None:
    with pytest.raises(HandoverError, match="unknown stage 'evaluate'"):
        write_result(tmp_path, REF, "evaluate", _validated())
    with pytest.raises(HandoverError, match="unknown stage"):
        read_result(tmp_path, REF, "../validate")


@pytest.mark.parametrize("run_id", ["", "../etc", "a/b", "x" * 65])
def test_run_ids_cannot_escape_the_store(run_id: str) -> None:
    with pytest.raises(ValidationError):
        HandoverRef(run_id=run_id)


def test_every_stage_resolves_to_a_pydantic_model() -> None:
    assert result_type("export") is ExportResult
    for stage in RESULT_TYPES:
        assert hasattr(result_type(stage), "model_validate_json")
