"""Datasets at the edges of what a loader sees (issue 13, point 6): encodings, headers,
timestamp forms, entity id and label types, unicode names, schema drift across partitions
and a test split with one class. Each is either handled correctly (and the test checks the
result) or refused before anything is trained, with a message naming the column and the
problem, and a refused batch is quarantined with its report. Real files, the real loader,
real Great Expectations, Feast and Dask; nothing is mocked."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from distributed import Client, LocalCluster

from benchmarks.synthetic import generate_panel, partition_name, synthetic_spec
from mlops.config import DatasetSpec, ModelSettings, Settings
from mlops.data import storage
from mlops.data.loading import DataError, load_dataset
from mlops.data.schema import SAME_KINDS
from mlops.data.validation import ValidationFailed, validate_frame
from mlops.partitioned.preparation import prepare_partitions
from mlops.partitioned.validation import validate_partitions
from mlops.pipeline.stages import features_stage, validate_stage
from mlops.training.loop import TrainingError
from mlops.training.train import train_model

NOW = datetime(2030, 1, 1, tzinfo=UTC)
FAST = ModelSettings(hidden=[8], epochs=2, patience=5, batch_size=64)


def panel(**kwargs: object) -> pd.DataFrame:
    return generate_panel(**{"n_entities": 12, "n_periods": 6, "seed": 5, **kwargs})


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


def refused(spec: DatasetSpec, settings: Settings) -> str:
    """The validate stage's refusal: quarantined with its report, no snapshot written."""
    with pytest.raises(ValidationFailed) as info:
        validate_stage(spec, settings)
    quarantine = Path(info.value.report.quarantine_path)
    assert json.loads((quarantine / "report.json").read_text())["success"] is False
    assert list(quarantine.glob("batch.*")), "the refused batch is kept"
    assert not (settings.data_dir / "datasets").exists()
    return str(info.value)


def written(tmp_path: Path, name: str, write: Callable[[Path], object]) -> DatasetSpec:
    path = tmp_path / name
    write(path)
    return synthetic_spec(str(path))


def snapshot(spec: DatasetSpec, settings: Settings) -> pd.DataFrame:
    return pd.read_parquet(validate_stage(spec, settings).snapshot_path)


# --- 1. encoding ---------------------------------------------------------------------------

def test_latin1_bytes_in_a_csv_are_refused_naming_the_byte_and_line(tmp_path, settings):
    frame = panel().assign(city="Bonn")
    frame.loc[2, "city"] = "Köln"  # data row 3, line 4 of the file
    spec = written(tmp_path, "latin1.csv", lambda p: p.write_bytes(
        frame.to_csv(index=False).encode("latin-1")))
    with pytest.raises(DataError, match=re.escape(
            f"{spec.path}: not UTF-8 text (byte 0xf6 on line 4;")) as info:
        validate_stage(spec, settings)
    assert "save the file as UTF-8" in str(info.value)
    assert not (settings.data_dir / "datasets").exists()


@pytest.mark.parametrize("quote", [False, True], ids=["plain header", "quoted header"])
def test_a_utf8_byte_order_mark_stays_out_of_the_first_column_name(tmp_path, settings, quote):
    text = panel().to_csv(index=False, quoting=1 if quote else 0)  # 1: csv.QUOTE_ALL
    spec = written(tmp_path, "bom.csv", lambda p: p.write_bytes(
        b"\xef\xbb\xbf" + text.encode()))
    frame = load_dataset(spec)
    assert list(frame.columns) == spec.columns  # "\ufeffentity_id" would be a missing column
    assert frame["entity_id"].dtype == "int64"
    assert len(snapshot(spec, settings)) == len(frame)


# --- 2. duplicated header ------------------------------------------------------------------

def test_a_csv_header_naming_a_column_twice_is_refused_naming_it(tmp_path, settings):
    text = panel().to_csv(index=False).replace(",f3,", ",f1,", 1)  # pandas: f1 and f1.1
    spec = written(tmp_path, "dup.csv", lambda p: p.write_text(text))
    assert list(load_dataset(spec).columns).count("f1") == 2
    assert "expect_unique_column_names(): observed duplicated columns ['f1']" in refused(
        spec, settings)


def test_a_real_column_named_like_a_repeat_is_kept(tmp_path, settings):
    spec = written(tmp_path, "dots.csv", lambda p: panel().assign(**{"f0.1": 1.0}).to_csv(
        p, index=False))
    assert "f0.1" in load_dataset(spec).columns
    assert len(snapshot(spec, settings)) == 72


# --- 3 and 4. timestamps ------------------------------------------------------------------

def _times(values: Callable[[pd.Series], pd.Series]) -> Callable[[pd.DataFrame], pd.DataFrame]:
    return lambda frame: frame.assign(event_timestamp=values(frame["event_timestamp"]))


def _one(value: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def mutate(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.astype({"event_timestamp": str})
        frame.loc[3, "event_timestamp"] = value
        return frame
    return mutate


TIMESTAMP_CASES = {
    "epoch seconds": (_times(lambda t: t.astype("int64") // 10**9),
                      "'event_timestamp' holds int64 numbers, not times: epoch numbers are "
                      "refused, since their unit (s, ms, us, ns) would be a guess"),
    "epoch milliseconds": (_times(lambda t: t.astype("int64") // 10**6),
                           "'event_timestamp' holds int64 numbers"),
    "naive times": (_times(lambda t: t.dt.strftime("%Y-%m-%d %H:%M:%S")),
                    "'event_timestamp' holds 72 value(s) without a UTC offset, e.g. "
                    "'2020-01-01 00:00:00'"),
    "one naive time among aware": (_one("2020-01-01 00:00:00"),
                                   "'event_timestamp' holds 1 value(s) without a UTC offset"),
    "year 1": (_one("0001-01-01T00:00:00Z"), "'event_timestamp' holds 1 value(s) outside "
               "1677-09-22 to 2262-04-11, the nanosecond range that Feast and training "
               "compute in, e.g. '0001-01-01T00:00:00Z'"),
    "year 9999": (_one("9999-12-31T23:59:59+00:00"), "1 value(s) outside 1677-09-22 to "
                  "2262-04-11"),
    "not a time": (_one("yesterday"), "1 value(s) that are not ISO 8601 times, e.g. "
                   "'yesterday'"),
}


@pytest.mark.parametrize("case", TIMESTAMP_CASES)
def test_timestamps_that_would_need_a_guess_are_refused_saying_why(tmp_path, settings, case):
    mutate, message = TIMESTAMP_CASES[case]
    spec = written(tmp_path, "times.csv", lambda p: mutate(panel()).to_csv(p, index=False))
    text = refused(spec, settings)
    assert "expect_column_values_to_be_of_type(column='event_timestamp'" in text
    assert message in text
    assert "write ISO 8601 times with a UTC offset" in text or "nanosecond range" in text


def test_mixed_utc_offsets_are_converted_to_the_right_instants(tmp_path, settings):
    frame = panel()
    zones = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"]
    shown = [t.tz_convert(zones[i % 4]).isoformat() for i, t in
             enumerate(frame["event_timestamp"])]  # +00:00, +01:00, -05:00, +05:30
    shown[0] = frame["event_timestamp"][0].strftime("%Y-%m-%dT%H:%M:%SZ")
    spec = written(tmp_path, "offsets.csv", lambda p: frame.assign(
        event_timestamp=shown).to_csv(p, index=False))
    stored = snapshot(spec, settings)
    assert {s[-6:] for s in shown} >= {"+00:00", "+01:00", "-05:00", "+05:30", "00:00Z"}
    pd.testing.assert_series_equal(stored["event_timestamp"], frame["event_timestamp"])


@pytest.mark.parametrize(("mutate", "failure", "message"), [
    (_times(lambda t: t.dt.tz_localize(None)), "expect_column_values_to_be_of_type",
     "'event_timestamp' holds naive datetimes (no time zone)"),
    (_times(lambda t: t.astype("datetime64[us, UTC]").where(t.index != 3, pd.Timestamp(
        datetime(1, 1, 1, tzinfo=UTC)))), "expect_column_min_to_be_between",
     "'event_timestamp' holds 1 value(s) outside 1677-09-22 to 2262-04-11"),
], ids=["naive parquet", "year 1 in microseconds"])
def test_parquet_timestamps_without_zone_or_out_of_range_are_refused(
        tmp_path, settings, mutate, failure, message):
    spec = written(tmp_path, "times.parquet", lambda p: mutate(panel()).to_parquet(p))
    text = refused(spec, settings)
    assert f"{failure}(column='event_timestamp'" in text and message in text


# --- 5. extra columns (schema drift across partitions: below) ------------------------------

def test_extra_columns_pass_and_stay_out_of_the_snapshot(tmp_path, settings):
    spec = written(tmp_path, "extra.csv", lambda p: panel().assign(
        notes="free text", score=np.arange(72)).to_csv(p, index=False))
    assert list(snapshot(spec, settings).columns) == spec.columns


# --- 6. entity ids -------------------------------------------------------------------------

def _ids(values: Callable[[pd.Series], pd.Series]) -> Callable[[Path], None]:
    return lambda path: panel().pipe(lambda f: f.assign(entity_id=values(f["entity_id"]))
                                     ).to_csv(path, index=False)


@pytest.mark.parametrize(("values", "message"), [
    (lambda ids: ids + 0.5, "'entity_id' holds float ids such as 1.5, which are no exact keys"),
    (lambda ids: ids.where(ids.index > 0, 1.5), "float ids such as 1.5"),
    (lambda ids: ids.where(ids.index > 0), "'entity_id' holds float ids because 1 are null"),
    (lambda ids: ids % 2 == 0, "'entity_id' holds booleans"),
], ids=["1.5", "1.5 among ints", "null makes floats", "booleans"])
def test_float_or_boolean_entity_ids_are_refused(tmp_path, settings, values, message):
    text = refused(written(tmp_path, "ids.csv", _ids(values)), settings)
    assert "expect_column_values_to_be_in_type_list(column='entity_id'" in text
    assert message in text and "entity ids must be all integers or all strings" in text


def test_ids_with_letters_among_digits_in_a_csv_are_all_strings(tmp_path, settings):
    spec = written(tmp_path, "ids.csv", _ids(lambda ids: ids.where(ids != 3, "a")))
    ids = snapshot(spec, settings)["entity_id"]
    assert ids.map(type).eq(str).all() and {"1", "a"} <= set(ids)


def test_ints_mixed_with_strings_in_one_column_are_refused():
    frame = panel().astype({"entity_id": object})
    frame.loc[frame["entity_id"] == 3, "entity_id"] = "3"
    report = validate_frame(frame, synthetic_spec("unused"), NOW)
    assert "'entity_id' holds ids of mixed types (int, str): 1 and '1' would be two " \
           "entities" in report.summary()


# --- 7. unicode column names ---------------------------------------------------------------

def test_unicode_feature_names_work_through_validation_and_feast(tmp_path, settings):
    from mlops.features.online import online_lookup

    names = {"f0": "größe", "f1": "温度"}
    frame = panel().rename(columns=names)
    spec = written(tmp_path, "unicode.csv", lambda p: frame.to_csv(p, index=False)
                   ).model_copy(update={"features": ["größe", "温度", "f2", "f3"]})
    data = validate_stage(spec, settings)
    features = features_stage(data, spec, settings)
    assert list(pd.read_parquet(features.training_path).columns) == spec.columns
    latest = frame[frame["event_timestamp"] == frame["event_timestamp"].max()]
    online = online_lookup(spec, settings.data_dir, settings)([1, 2])
    np.testing.assert_allclose(online[["größe", "温度"]].to_numpy(),
                               latest[["größe", "温度"]].to_numpy()[:2])
    # A failure on such a column names it, in the message and in the UTF-8 report.
    bad = frame.astype({"温度": object})
    bad.loc[4, "温度"] = "warm"
    bad.to_csv(spec.path, index=False)
    fresh = Settings(data_dir=tmp_path / "again")
    text = refused(spec, fresh)
    assert "expect_column_values_to_be_in_type_list(column='温度'" in text
    report = next((fresh.data_dir / "quarantine").glob("*/report.json"))
    assert "温度" in report.read_text(encoding="utf-8")


# --- 8. labels -----------------------------------------------------------------------------

def test_true_false_labels_are_classes_one_and_zero(tmp_path, settings):
    frame = panel(n_entities=40, n_periods=8)
    spec = written(tmp_path, "bool.csv", lambda p: frame.assign(
        label=frame["label"].astype(bool)).to_csv(p, index=False))
    assert load_dataset(spec)["label"].dtype == bool
    data = validate_stage(spec, settings)
    trained = train_model(data.snapshot_path, spec, FAST, tmp_path / "out")
    assert 0.0 <= trained.metrics["test_auc"] <= 1.0


@pytest.mark.parametrize("classes", [("no", "yes"), ("0", "1.0")], ids=["yes/no", "text"])
def test_string_labels_are_refused_naming_the_label_and_its_classes(
        tmp_path, settings, classes):
    frame = panel()
    spec = written(tmp_path, "text.csv", lambda p: frame.assign(label=frame["label"].map(
        dict(enumerate(classes))).astype(object).where(frame.index > 0, "maybe")).to_csv(
        p, index=False))
    text = refused(spec, settings)
    assert "expect_column_values_to_be_in_set(column='label', value_set=[0, 1])" in text
    assert "'label' holds strings (" in text and "strings are not mapped" in text
    assert "a classification label must be 0/1 (True/False are read as 1/0)" in text


# --- 9. a test split with one class --------------------------------------------------------

def test_a_single_class_test_split_fails_before_training(tmp_path):
    frame = panel(n_entities=40, n_periods=8)
    last = frame["event_timestamp"] >= sorted(frame["event_timestamp"].unique())[-2]
    frame.loc[last, "label"] = 0
    path = tmp_path / "train.parquet"
    frame.to_parquet(path)
    with pytest.raises(TrainingError, match=r"test split lacks class\(es\) \[1\] in its "
                       r"\d+ rows: test_auc would be undefined"):
        train_model(str(path), synthetic_spec(str(path)), FAST, tmp_path / "out")
    assert not (tmp_path / "out" / "checkpoints").exists(), "refused before any epoch"


# --- 5 (continued). schema drift across partitions -----------------------------------------

@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as dask:
        yield dask


def partitions(root: Path, change: dict[int, Callable[[pd.DataFrame], pd.DataFrame]]) -> str:
    """Three partitions of distinct entities; ``change[i]`` rewrites partition i."""
    root.mkdir()
    for index in range(3):
        frame = panel(seed=index).assign(entity_id=lambda f, i=index: f["entity_id"] + 100 * i)
        change.get(index, lambda f: f)(frame).to_parquet(root / partition_name(index))
    return str(root)


def _failures(report) -> dict[tuple[str, str | None], str | None]:
    return {(f.expectation, f.kwargs.get("column")): f.observed for f in report.failed}


def test_partitions_that_disagree_on_the_entity_type_are_refused(tmp_path, client):
    def text_ids(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.assign(entity_id="e" + frame["entity_id"].astype(str))

    root = partitions(tmp_path / "parts", {2: text_ids})
    spec = synthetic_spec(root)
    alone = validate_frame(pd.read_parquet(Path(root) / partition_name(2)), spec, NOW)
    assert alone.success, "each partition passes on its own"
    report = validate_partitions(root, spec, client, NOW)
    assert _failures(report) == {
        (SAME_KINDS, "entity_id"): "number in partitions [0, 1]; text in partitions [2]"}
    assert [p.index for p in report.failing_partitions] == [2]


def test_partition_schema_drift_is_named_per_partition(tmp_path, client):
    root = partitions(tmp_path / "parts", {
        0: lambda f: f.assign(extra="ignored"),                   # an extra column: fine
        1: lambda f: f.drop(columns=["f2"]),                       # a column gone
        2: lambda f: f.assign(f1=f["f1"].round(2).astype(str),     # a feature turned text
                              event_timestamp=f["event_timestamp"].dt.tz_localize(None)),
    })
    report = validate_partitions(root, synthetic_spec(root), client, NOW)
    failed = {(f.expectation, f.kwargs.get("column")): f for f in report.failed}
    assert failed[(SAME_KINDS, "f1")].observed == (
        "number in partitions [0, 1]; text in partitions [2]")
    assert failed[(SAME_KINDS, "event_timestamp")].observed == (
        "time with zone in partitions [0, 1]; naive time in partitions [2]")
    assert "naive datetimes" in failed[("expect_column_values_to_be_of_type",
                                        "event_timestamp")].hint
    assert failed[("expect_column_values_to_not_be_null", "f2")].error == "column 'f2' is missing"
    blamed = {p.index: {(f.expectation, f.kwargs.get("column")) for f in p.failed}
              for p in report.failing_partitions}
    assert set(blamed) == {1, 2}, "the extra column of partition 0 is no failure"
    assert ("expect_column_to_exist", "f2") in blamed[1]
    assert {column for _, column in blamed[1]} == {"f2"}
    assert {("expect_column_values_to_be_in_type_list", "f1"), (SAME_KINDS, "f1"),
            ("expect_column_values_to_be_of_type", "event_timestamp"),
            (SAME_KINDS, "event_timestamp")} <= blamed[2]
    assert {column for _, column in blamed[2]} == {"f1", "event_timestamp"}


def test_integer_and_float_partitions_pass_and_prepare_into_one_table(tmp_path, client):
    root = partitions(tmp_path / "parts", {
        0: lambda f: f.assign(f0=(f["f0"] * 10).round().astype("int64"), extra=1),
        1: lambda f: f.assign(label=f["label"].astype(bool),
                              event_timestamp=f["event_timestamp"].astype(
                                  "datetime64[us, UTC]")),
    })
    spec = synthetic_spec(root)
    report = validate_partitions(root, spec, client, NOW)
    assert report.success, report.summary()
    prepare_partitions(root, spec, str(tmp_path / "out"), client)
    table = storage.read_parquet(str(tmp_path / "out"))
    assert list(table.columns) == spec.columns and len(table) == report.rows
    assert table["f0"].dtype == "float32" and set(table["label"]) == {0.0, 1.0}


def test_one_class_written_as_1_and_true_in_two_partitions_is_one_class(tmp_path, client):
    root = partitions(tmp_path / "parts", {
        0: lambda f: f.assign(label=1), 1: lambda f: f.assign(label=1.0),
        2: lambda f: f.assign(label=True)})
    report = validate_partitions(root, synthetic_spec(root), client, NOW)
    assert _failures(report) == {
        ("expect_column_unique_value_count_to_be_between", "label"): "1"}
