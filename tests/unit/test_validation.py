"""Unit tests of the validation stage's suite builder, report model and exception."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime

import pytest

from benchmarks.synthetic import synthetic_spec
from mlops.config import ColumnRule, TaskType, load_spec
from mlops.data.expectations import FLOAT_MAX, NUMERIC_TYPES, build_expectations
from mlops.data.validation import (
    FailedExpectation,
    ValidationFailed,
    ValidationReport,
    require_valid,
)

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def _kinds(spec, now=NOW) -> list[tuple[str, object]]:
    """(expectation type, column or column list) for each expectation of the suite."""
    out = []
    for exp in build_expectations(spec, now):
        config = exp.configuration
        out.append((config.type, config.kwargs.get("column", config.kwargs.get("column_list"))))
    return out


def test_suite_covers_every_spec_column():
    spec = synthetic_spec("x.parquet", n_features=3)
    kinds = _kinds(spec)
    for column in spec.columns:
        assert ("expect_column_to_exist", column) in kinds
        assert ("expect_column_values_to_not_be_null", column) in kinds
    assert ("expect_compound_columns_to_be_unique", ["entity_id", "event_timestamp"]) in kinds
    assert ("expect_column_values_to_be_of_type", "event_timestamp") in kinds
    assert ("expect_table_row_count_to_be_between", None) in kinds
    for feature in spec.features:
        assert ("expect_column_values_to_be_in_type_list", feature) in kinds
        assert ("expect_column_values_to_be_between", feature) in kinds


def test_classification_label_is_binary_and_regression_label_is_numeric():
    clf = _kinds(synthetic_spec("x.parquet", task=TaskType.classification))
    reg = _kinds(synthetic_spec("x.parquet", task=TaskType.regression))
    assert ("expect_column_values_to_be_in_set", "label") in clf
    assert ("expect_column_unique_value_count_to_be_between", "label") in clf
    assert ("expect_column_values_to_be_in_type_list", "label") not in clf
    assert ("expect_column_values_to_be_in_set", "label") not in reg
    assert ("expect_column_values_to_be_in_type_list", "label") in reg
    assert ("expect_column_values_to_be_between", "label") in reg


def test_declared_rules_become_expectations_with_their_bounds():
    spec = synthetic_spec("x.parquet").model_copy(update={"rules": [
        ColumnRule(column="f0", min=-1, max=2),
        ColumnRule(column="f1", allowed=[0, 1]),
        ColumnRule(column="extra", not_null=True),
    ]})
    suite = build_expectations(spec, NOW)
    kwargs = [e.configuration.kwargs for e in suite]
    bounds = _find(kwargs, "f0", "min_value")
    assert (bounds["min_value"], bounds["max_value"]) == (-1.0, 2.0)
    assert _find(kwargs, "f1", "value_set")["value_set"] == [0, 1]
    # A rule's column that is not in the spec is still required to exist.
    assert ("expect_column_to_exist", "extra") in _kinds(spec)
    assert ("expect_column_values_to_not_be_null", "extra") in _kinds(spec)


def _find(kwargs: list[dict], column: str, key: str) -> dict:
    hits = [k for k in kwargs if k.get("column") == column and k.get(key) not in (None, [])]
    hits = [k for k in hits if key != "min_value" or k[key] > -FLOAT_MAX]  # not finiteness
    assert len(hits) == 1, hits
    return hits[0]


def test_default_spec_suite_bounds_timestamps_by_now():
    spec = load_spec("mlops/specs/wage_panel.yaml")
    suite = build_expectations(spec, NOW)
    maxes = [e for e in suite if e.configuration.type == "expect_column_max_to_be_between"]
    assert len(maxes) == 1
    assert maxes[0].configuration.kwargs["column"] == "event_timestamp"
    assert maxes[0].configuration.kwargs["max_value"] == NOW
    assert len(suite) == len({(e.configuration.type, repr(e.configuration.kwargs)) for e in suite})


def test_numeric_types_exclude_object_and_strings():
    assert "object" not in NUMERIC_TYPES and "str" not in NUMERIC_TYPES
    assert {"int64", "float64", "float32"} <= set(NUMERIC_TYPES)


def test_failed_expectation_describe_names_expectation_column_and_evidence():
    failure = FailedExpectation(
        expectation="expect_column_values_to_be_between",
        kwargs={"column": "age", "min_value": 0, "type_list": list(range(100))},
        unexpected_count=3, unexpected_percent=1.5, examples=["-1", "-7"],
    )
    text = failure.describe()
    assert text.startswith("expect_column_values_to_be_between(column='age', min_value=0")
    assert "3 unexpected (1.5%)" in text and "e.g. -1, -7" in text
    assert "..." in text  # the long list is shortened
    error = FailedExpectation(expectation="expect_x", kwargs={}, error="boom").describe()
    assert error == "expect_x(): could not run: boom"


def _report(failed: list[FailedExpectation]) -> ValidationReport:
    return ValidationReport(dataset="d", dataset_hash="h" * 64, rows=5, success=not failed,
                            evaluated=4, failed=failed, seconds=0.1)


def test_report_summary_lists_each_failure_on_its_own_line():
    failed = [FailedExpectation(expectation=f"expect_{i}", kwargs={"column": f"c{i}"})
              for i in range(2)]
    lines = _report(failed).summary().splitlines()
    assert lines[0] == "dataset 'd': 2 of 4 expectations failed:"
    assert lines[1:] == ["- expect_0(column='c0')", "- expect_1(column='c1')"]
    assert _report([]).summary() == "dataset 'd': 0 of 4 expectations failed (5 rows passed)"


def test_report_summary_points_to_the_quarantined_batch():
    failed = [FailedExpectation(expectation="expect_x", kwargs={})]
    report = _report(failed).model_copy(update={"quarantine_path": "/q/d-1"})
    assert report.summary().splitlines()[-1] == "batch quarantined at /q/d-1"


def test_require_valid_passes_good_reports_and_raises_naming_failures():
    good = _report([])
    assert require_valid(good) is good
    bad = _report([FailedExpectation(expectation="expect_x", kwargs={"column": "a"})])
    with pytest.raises(ValidationFailed, match=r"- expect_x\(column='a'\)") as info:
        require_valid(bad)
    assert info.value.report == bad


def test_validation_failed_survives_pickling_with_its_report():
    report = _report([FailedExpectation(expectation="expect_x", kwargs={"column": "a"})])
    exc = ValidationFailed("bad batch", report)
    clone = pickle.loads(pickle.dumps(exc))
    assert isinstance(clone, ValidationFailed) and isinstance(clone, ValueError)
    assert str(clone) == "bad batch" and clone.report == report
