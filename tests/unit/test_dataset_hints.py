"""Unit tests of the pure helpers behind the dataset edge cases: event-time parsing and its
explanations, the hints added to failed expectations, column kinds across partitions, and
the expectations the suite gained for them (entity id types, the nanosecond time range)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from benchmarks.synthetic import synthetic_spec
from mlops.config import TaskType
from mlops.data.expectations import ENTITY_TYPES, build_expectations
from mlops.data.hints import explain_entity_ids, explain_labels, hint_for
from mlops.data.schema import SAME_KINDS, column_kind, kind_drift, kind_failures
from mlops.data.timestamps import EARLIEST, LATEST, explain_event_times, parse_event_times
from mlops.data.validation import FailedExpectation

SPEC = synthetic_spec("unused")


def test_offsets_are_parsed_to_the_same_instants():
    series = pd.Series(["2024-01-31T13:00:00+01:00", "2024-01-31T12:00:00Z",
                        "2024-01-31 07:00:00-05:00", "2024-01-31T17:30:00+0530", None])
    parsed = parse_event_times(series)
    assert str(parsed.dtype) == "datetime64[ns, UTC]"
    assert parsed.iloc[:4].nunique() == 1 and parsed.iloc[0] == pd.Timestamp(
        "2024-01-31T12:00:00Z")
    assert parsed.isna().tolist() == [False] * 4 + [True]  # a null stays for the null check


def test_a_zoned_column_becomes_utc():
    berlin = pd.Series(pd.date_range("2024-01-01", periods=3, freq="D", tz="Europe/Berlin"))
    parsed = parse_event_times(berlin)
    assert str(parsed.dtype.tz) == "UTC" and (parsed == berlin).all()


@pytest.mark.parametrize("series", [
    pd.Series([1_700_000_000, 1_700_000_060]),                      # epoch seconds
    pd.Series([1.7e12, 1.7e12 + 1]),                                # epoch milliseconds
    pd.Series(["2024-01-31 12:00:00", "2024-01-31T12:00:00Z"]),     # one naive
    pd.Series(["2024-01-31", "2024-02-01"]),                        # dates, no instant
    pd.Series(pd.date_range("2024-01-01", periods=2)),              # naive datetimes
    pd.Series(["0001-01-01T00:00:00Z", "2024-01-31T12:00:00Z"]),    # beyond nanoseconds
    pd.Series(["2024-01-31T12:00:00Z", 5], dtype=object),           # mixed types
], ids=["epoch s", "epoch ms", "one naive", "dates", "naive datetimes", "year 1", "mixed"])
def test_what_would_need_a_guess_is_left_as_it_is_and_explained(series):
    assert parse_event_times(series) is series
    assert explain_event_times(series)


@pytest.mark.parametrize(("series", "words"), [
    (pd.Series([1_700_000_000]), "int64 numbers, not times: epoch numbers are refused"),
    (pd.Series([True]), "bool numbers"),
    (pd.Series(pd.date_range("2024-01-01", periods=1)), "naive datetimes (no time zone)"),
    (pd.Series(["2024-01-31 12:00", "2024-01-31 13:00", "x"]),
     "1 value(s) that are not ISO 8601 times, e.g. 'x'"),
    (pd.Series(["2024-01-31 12:00", "2024-01-31 13:00+01:00"]),
     "1 value(s) without a UTC offset, e.g. '2024-01-31 12:00'"),
    (pd.Series(["9999-12-31T00:00:00Z"]), "1 value(s) outside 1677-09-22 to 2262-04-11"),
    (pd.Series([pd.Timestamp(datetime(1, 1, 1, tzinfo=UTC))]).astype("datetime64[us, UTC]"),
     "1 value(s) outside 1677-09-22 to 2262-04-11"),
])
def test_explanations_name_the_problem(series, words):
    assert words in explain_event_times(series)


def test_good_times_need_no_explanation():
    assert explain_event_times(pd.Series(pd.date_range("2024-01-01", periods=2, tz="UTC"))) \
        is None
    assert explain_event_times(pd.Series(["2024-01-31T12:00:00Z"])) is None
    assert EARLIEST > pd.Timestamp.min.tz_localize(UTC) and LATEST < pd.Timestamp.max.tz_localize(
        UTC)


def test_entity_and_label_explanations():
    assert "because 2 are null" in explain_entity_ids(pd.Series([1.0, np.nan, 3.0, np.nan]))
    assert "such as 2.5" in explain_entity_ids(pd.Series([1.0, 2.5]))
    assert "mixed types (int, str)" in explain_entity_ids(pd.Series([1, "a"], dtype=object))
    assert "booleans" in explain_entity_ids(pd.Series([True, False]))
    assert "strings ('no', 'yes')" in explain_labels(pd.Series(["yes", "no", None]))
    assert "values other than 0 and 1 (2, 3)" in explain_labels(pd.Series([0, 1, 2, 3]))


def test_hints_only_for_the_columns_and_checks_they_explain():
    frame = pd.DataFrame({"entity_id": [1.5], "event_timestamp": [1_700_000_000],
                          "label": ["yes"], "f0": ["x"]})
    assert hint_for("expect_column_values_to_be_in_type_list", "entity_id", frame, SPEC) \
        .startswith("'entity_id' holds float ids")
    assert hint_for("expect_column_max_to_be_between", "event_timestamp", frame, SPEC) \
        .startswith("'event_timestamp' holds int64 numbers")
    assert hint_for("expect_column_values_to_be_in_set", "label", frame, SPEC) \
        .startswith("'label' holds strings")
    regression = synthetic_spec("unused", task=TaskType.regression)
    assert hint_for("expect_column_values_to_be_in_set", "label", frame, regression) is None
    assert hint_for("expect_column_values_to_be_in_type_list", "f0", frame, SPEC) is None
    assert hint_for("expect_column_values_to_be_in_type_list", "gone", frame, SPEC) is None


def test_a_hint_follows_the_evidence_in_the_description():
    failure = FailedExpectation(expectation="expect_x", kwargs={"column": "a"},
                                observed="int64", hint="'a' holds numbers")
    assert failure.describe() == "expect_x(column='a'): observed int64; 'a' holds numbers"


def test_column_kinds_are_coarse():
    assert column_kind(pd.Series([1], dtype="int32")) == column_kind(pd.Series([1.0])) == \
        column_kind(pd.Series([True])) == "number"
    assert column_kind(pd.Series(["a"])) == column_kind(pd.Series(["a"], dtype="string")) \
        == "text"
    assert column_kind(pd.Series(pd.date_range("2024", periods=1, tz="UTC"))) == \
        "time with zone"
    assert column_kind(pd.Series(pd.date_range("2024", periods=1))) == "naive time"


def test_kind_drift_names_the_partitions_most_common_kind_first():
    kinds = {0: {"e": "text", "x": "number"}, 1: {"e": "number", "x": "number"},
             2: {"e": "number"}, 3: {"e": "text"}}
    assert kind_drift(kinds) == {"e": {"text": [0, 3], "number": [1, 2]}}
    [(failure, blamed)] = kind_failures(kinds)
    assert failure.expectation == SAME_KINDS and failure.kwargs == {"column": "e"}
    assert failure.observed == "text in partitions [0, 3]; number in partitions [1, 2]"
    assert blamed == [1, 2]
    assert kind_failures({0: {"e": "number"}, 1: {}}) == []


def test_suite_checks_entity_types_and_the_time_range():
    kinds = {(e.configuration.type, e.configuration.kwargs.get("column")): e.configuration.kwargs
             for e in build_expectations(SPEC, datetime(2030, 1, 1, tzinfo=UTC))}
    assert kinds[("expect_column_values_to_be_in_type_list", "entity_id")]["type_list"] == \
        ENTITY_TYPES
    assert "float64" not in ENTITY_TYPES and "bool" not in ENTITY_TYPES
    assert {"int64", "str"} <= set(ENTITY_TYPES)
    assert kinds[("expect_column_min_to_be_between", "event_timestamp")]["min_value"] == \
        EARLIEST
