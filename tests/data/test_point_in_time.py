"""Point-in-time correctness: a feature value dated after a label never reaches its row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from feast import FeatureStore

from mlops.config import DatasetSpec, TaskType
from mlops.features.store import apply_definitions, store_for
from mlops.features.training_set import build_training_set, write_source

SPEC = DatasetSpec(name="pit", path="unused.parquet", entity="entity_id",
                   timestamp="event_timestamp", features=["score", "visits"], label="label",
                   task=TaskType.classification)


def _ts(day: str) -> pd.Timestamp:
    return pd.Timestamp(day, tz="UTC")


# Feature values change over time: score = 10 * month (+ 0.5 for entity 2).
FEATURES = pd.DataFrame({
    "entity_id": [1, 1, 1, 2, 2],
    "event_timestamp": [_ts("2024-01-01"), _ts("2024-02-01"), _ts("2024-03-01"),
                        _ts("2024-01-10"), _ts("2024-03-10")],
    "score": [10.0, 20.0, 30.0, 10.5, 30.5],
    "visits": [1, 2, 3, 100, 300],
})

# (entity, label time, expected score, expected visits): label times fall between,
# exactly on, after and before the feature times; the frame is deliberately unsorted.
CASES = [
    (1, "2024-02-20", 20.0, 2),     # between Feb and Mar: Feb's value, not Mar's
    (1, "2024-01-15", 10.0, 1),     # between Jan and Feb
    (2, "2024-03-09", 10.5, 100),   # a day before entity 2's later value
    (1, "2024-02-01", 20.0, 2),     # exactly at a feature timestamp: that value counts
    (2, "2024-06-01", 30.5, 300),   # long after the last value: the last one
    (1, "2023-12-31", np.nan, np.nan),  # before any feature value: NaN, not a future value
]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> FeatureStore:
    data_dir: Path = tmp_path_factory.mktemp("pit")
    source = write_source(FEATURES, SPEC, data_dir)
    feature_store = store_for(SPEC, data_dir)
    apply_definitions(feature_store, SPEC, source)
    return feature_store


@pytest.fixture(scope="module")
def training(store: FeatureStore) -> pd.DataFrame:
    labels = pd.DataFrame({
        "entity_id": [case[0] for case in CASES],
        "event_timestamp": [_ts(case[1]) for case in CASES],
        "label": [1, 0, 1, 0, 1, 0],
    })
    return build_training_set(store, SPEC, labels)


def test_each_label_gets_the_latest_value_at_or_before_its_time(training: pd.DataFrame) -> None:
    assert len(training) == len(CASES)
    rows = training.set_index(["entity_id", "event_timestamp"])
    for entity, day, score, visits in CASES:
        row = rows.loc[(entity, _ts(day))]
        if np.isnan(score):
            assert np.isnan(row["score"]) and np.isnan(row["visits"])
        else:
            assert (row["score"], row["visits"]) == (score, visits), (entity, day)


def test_no_feature_value_from_the_future(training: pd.DataFrame) -> None:
    for _, row in training.dropna().iterrows():
        own = FEATURES[(FEATURES["entity_id"] == row["entity_id"])
                       & (FEATURES["score"] == row["score"])]
        assert (own["event_timestamp"] <= row["event_timestamp"]).all()


def test_rows_sorted_by_time_then_entity_with_labels_kept(training: pd.DataFrame) -> None:
    assert list(training.columns) == ["entity_id", "event_timestamp", "score", "visits", "label"]
    expected = sorted((_ts(day), entity) for entity, day, *_ in CASES)
    assert list(zip(training["event_timestamp"], training["entity_id"], strict=True)) == expected
    labels = {(e, _ts(d)): lab for (e, d, *_), lab in zip(CASES, [1, 0, 1, 0, 1, 0], strict=True)}
    for _, row in training.iterrows():
        assert row["label"] == labels[(row["entity_id"], row["event_timestamp"])]


def test_every_label_row_is_kept_even_when_rows_share_entity_and_time(
        store: FeatureStore) -> None:
    # Feast's Dask store collapses such rows (feast#6787); the stage must not lose labels.
    labels = pd.DataFrame({
        "entity_id": [1, 1, 2],
        "event_timestamp": [_ts("2024-02-20"), _ts("2024-02-20"), _ts("2024-01-05")],
        "label": [0, 1, 1],
    })
    training = build_training_set(store, SPEC, labels)
    assert training["label"].tolist() == [1, 0, 1]  # sorted by time: entity 2 first
    assert training["score"].tolist()[1:] == [20.0, 20.0]
    assert np.isnan(training["score"].iloc[0])  # entity 2's first value is dated Jan 10
