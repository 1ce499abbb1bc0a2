"""Bad-data cases: each corruption of a clean panel must fail the expectation that names it,
and the stage runner must quarantine the batch and hand nothing downstream."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.synthetic import generate_panel, synthetic_spec
from mlops.config import ColumnRule, DatasetSpec, Settings, TaskType, load_spec
from mlops.data.loading import load_dataset
from mlops.data.validation import (
    ValidationFailed,
    ValidationReport,
    require_valid,
    validate_dataset,
    validate_frame,
)


@pytest.fixture(scope="module")
def spec() -> DatasetSpec:
    return synthetic_spec("unused.parquet").model_copy(update={"rules": [
        ColumnRule(column="f0", min=-10, max=10),
        ColumnRule(column="segment", allowed=[1, 2, 3], not_null=True),
    ]})


@pytest.fixture(scope="module")
def clean() -> pd.DataFrame:
    frame = generate_panel(n_entities=40, n_periods=4, seed=3)
    return frame.assign(segment=(frame["entity_id"] % 3) + 1)


def _set(column: str, value: object, rows: slice = slice(0, 2)) -> Callable:
    def mutate(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.copy()
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            frame[column] = frame[column].astype(object)
        frame.loc[frame.index[rows], column] = value
        return frame
    return mutate


CASES: dict[str, tuple[Callable, str, object]] = {
    "null feature": (_set("f1", np.nan), "expect_column_values_to_not_be_null", "f1"),
    "infinite feature": (_set("f2", np.inf), "expect_column_values_to_be_between", "f2"),
    "feature beyond float32": (_set("f2", 1e39), "expect_column_values_to_be_between", "f2"),
    "negative beyond float32": (_set("f1", -3.5e38), "expect_column_values_to_be_between",
                                "f1"),
    "missing feature": (lambda f: f.drop(columns=["f3"]), "expect_column_to_exist", "f3"),
    "text feature": (_set("f0", "n/a"), "expect_column_values_to_be_in_type_list", "f0"),
    "null entity": (_set("entity_id", np.nan), "expect_column_values_to_not_be_null",
                    "entity_id"),
    "duplicate entity-time": (lambda f: pd.concat([f, f.iloc[:3]], ignore_index=True),
                              "expect_compound_columns_to_be_unique",
                              ("entity_id", "event_timestamp")),
    "naive timestamps": (lambda f: f.assign(event_timestamp=f["event_timestamp"]
                                             .dt.tz_localize(None)),
                         "expect_column_values_to_be_of_type", "event_timestamp"),
    "text timestamps": (lambda f: f.assign(event_timestamp="day " + f.index.astype(str)),
                        "expect_column_values_to_be_of_type", "event_timestamp"),
    "future event": (_set("event_timestamp", pd.Timestamp("2999-01-01", tz="UTC"), slice(0, 1)),
                     "expect_column_max_to_be_between", "event_timestamp"),
    "label outside 0/1": (_set("label", 2), "expect_column_values_to_be_in_set", "label"),
    "single class": (lambda f: f.assign(label=1),
                     "expect_column_unique_value_count_to_be_between", "label"),
    "null label": (_set("label", np.nan), "expect_column_values_to_not_be_null", "label"),
    "rule range": (_set("f0", 11.0), "expect_column_values_to_be_between", "f0"),
    "rule allowed set": (_set("segment", 7), "expect_column_values_to_be_in_set", "segment"),
    "rule not null": (_set("segment", np.nan), "expect_column_values_to_not_be_null",
                      "segment"),
    "empty batch": (lambda f: f.iloc[:0], "expect_table_row_count_to_be_between", None),
    "duplicated column names": (lambda f: pd.concat([f, f[["f1"]]], axis=1),
                                "expect_unique_column_names", None),
}


# Failures a case may cause besides its own (an empty batch has no max and no classes).
ALSO: dict[str, set[object]] = {"empty batch": {"event_timestamp", "label"}}


def _names(report: ValidationReport) -> list[tuple[str, object]]:
    """(expectation, column) per failure; a column list becomes a tuple."""
    names = []
    for failure in report.failed:
        column = failure.kwargs.get("column", failure.kwargs.get("column_list"))
        names.append((failure.expectation, tuple(column) if isinstance(column, list) else column))
    return names


def test_clean_panel_passes(spec, clean):
    before = clean.copy()
    report = validate_frame(clean, spec)
    pd.testing.assert_frame_equal(clean, before)  # validation never mutates its input
    assert report.success, report.summary()
    assert report.failed == [] and report.rows == len(clean) and report.evaluated > 20


@pytest.mark.parametrize("case", list(CASES))
def test_bad_data_fails_the_expectation_that_names_it(spec, clean, case):
    mutate, expectation, column = CASES[case]
    report = validate_frame(mutate(clean), spec)
    assert not report.success
    assert (expectation, column) in _names(report), report.summary()
    # The mutation is the only problem: nothing unrelated to its column fails.
    touched = {c for _, c in _names(report)}
    assert touched <= {column, None} | ALSO.get(case, set()), report.summary()


def test_regression_label_must_be_finite_numbers(clean):
    spec = synthetic_spec("unused.parquet", task=TaskType.regression)
    frame = clean.assign(label=clean["f0"] * 2.0)
    assert validate_frame(frame, spec).success
    frame.loc[5, "label"] = -np.inf
    assert ("expect_column_values_to_be_between", "label") in _names(validate_frame(frame, spec))
    frame.loc[5, "label"] = 1e39  # float64 holds it, the float32 model would not
    assert ("expect_column_values_to_be_between", "label") in _names(validate_frame(frame, spec))
    frame.loc[5, "label"] = 3.4e38  # the largest float32s still pass
    assert validate_frame(frame, spec).success
    text = frame.assign(label="high")
    assert ("expect_column_values_to_be_in_type_list", "label") in _names(
        validate_frame(text, spec))


def test_default_dataset_passes_its_spec():
    spec = load_spec("mlops/specs/wage_panel.yaml")
    report = validate_frame(load_dataset(spec), spec)
    assert report.success, report.summary()
    assert report.rows == 4360


def test_runner_writes_report_and_docs_of_a_passing_batch(spec, clean, tmp_path):
    report = validate_dataset(clean, spec, tmp_path / "out", tmp_path / "quarantine")
    assert require_valid(report) is report
    saved = ValidationReport.model_validate_json(Path(report.report_path).read_text())
    assert saved == report and saved.success and report.quarantine_path is None
    assert Path(report.report_path).name == f"synthetic-{report.dataset_hash[:16]}.json"
    html = Path(report.docs_path).read_text()
    assert html.lstrip().lower().startswith("<!doctype html") and "segment" in html
    assert not (tmp_path / "quarantine").exists()
    assert not list(tmp_path.rglob(".*.tmp"))
    # Same data, same files: the stage can be retried without piling up copies.
    again = validate_dataset(clean, spec, tmp_path / "out", tmp_path / "quarantine")
    assert again.report_path == report.report_path
    assert len(list((tmp_path / "out").iterdir())) == 2


def test_runner_quarantines_a_failing_batch_and_names_the_failures(spec, clean, tmp_path):
    bad = _set("f1", np.nan)(_set("label", 5, slice(3, 4))(clean))
    report = validate_dataset(bad, spec, tmp_path / "out", tmp_path / "quarantine")
    with pytest.raises(ValidationFailed) as info:
        require_valid(report)
    message = str(info.value)
    assert "expect_column_values_to_not_be_null(column='f1'): 2 unexpected" in message
    assert "expect_column_values_to_be_in_set(column='label', value_set=[0, 1])" in message
    quarantine = Path(report.quarantine_path)
    assert quarantine.parent == tmp_path / "quarantine" and str(quarantine) in message
    assert sorted(p.name for p in quarantine.iterdir()) == [
        "batch.parquet", "docs.html", "report.json"]
    pd.testing.assert_frame_equal(pd.read_parquet(quarantine / "batch.parquet"), bad)
    saved = json.loads((quarantine / "report.json").read_text())
    assert saved["success"] is False and len(saved["failed"]) == 2
    assert saved == json.loads(Path(report.report_path).read_text())


def test_runner_quarantines_a_batch_parquet_cannot_hold_as_csv(spec, clean, tmp_path):
    bad = clean.astype({"f0": object})
    bad.loc[0, "f0"] = "oops"  # mixed str/float object column: pyarrow refuses it
    report = validate_dataset(bad, spec, tmp_path / "out", tmp_path / "quarantine")
    assert ("expect_column_values_to_be_in_type_list", "f0") in _names(report)
    quarantine = Path(report.quarantine_path)
    assert (quarantine / "batch.csv").is_file() and not (quarantine / "batch.parquet").exists()
    assert len(pd.read_csv(quarantine / "batch.csv")) == len(bad)


def test_runner_quarantines_duplicated_columns_without_docs(spec, clean, tmp_path):
    bad = pd.concat([clean, clean[["f1"]]], axis=1)
    report = validate_dataset(bad, spec, tmp_path / "out", tmp_path / "quarantine")
    assert not report.success and report.docs_path is None
    assert "duplicated columns ['f1']" in report.summary()
    assert (Path(report.quarantine_path) / "report.json").is_file()


def test_pipeline_validate_stage_uses_this_stage(tmp_path):
    """mlops.pipeline.stages.validate_stage: a good file is snapshotted, a bad one stops the run."""
    from mlops.pipeline.stages import validate_stage

    settings = Settings(data_dir=tmp_path / "data")
    path = tmp_path / "panel.parquet"
    generate_panel(n_entities=10, n_periods=3, seed=1).to_parquet(path)
    data = validate_stage(synthetic_spec(str(path)), settings)
    assert data.rows == 30 and Path(data.snapshot_path).is_file()
    assert Path(data.report_path).is_file() and Path(data.docs_path).is_file()
    generate_panel(n_entities=10, n_periods=3, seed=1, corruption=0.2).to_parquet(path)
    with pytest.raises(ValidationFailed, match="expect_column_values_to_not_be_null"):
        validate_stage(synthetic_spec(str(path)), settings)
    assert len(list((tmp_path / "data" / "quarantine").iterdir())) == 1
