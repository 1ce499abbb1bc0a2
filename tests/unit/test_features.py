"""The features stage on the default dataset (wage_panel), with a real Feast repo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from feast import FeatureStore, ValueType
from feast.types import Float64, Int64

from feature_repo.feature_views import FEATURE_TTL
from feature_repo.repo import definitions
from mlops.config import DEFAULT_SPEC, DatasetSpec, load_spec
from mlops.data.loading import load_dataset
from mlops.features.online import UnknownEntity, online_lookup
from mlops.features.store import FeatureError, apply_definitions, store_for
from mlops.features.training_set import FeatureSetResult, prepare_features, source_frame

Stage = tuple[DatasetSpec, pd.DataFrame, FeatureSetResult, Path]


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> Stage:
    spec = load_spec(DEFAULT_SPEC)
    frame = load_dataset(spec)
    data_dir = tmp_path_factory.mktemp("data")
    return spec, frame, prepare_features(frame, spec, data_dir), data_dir


def _latest(frame: pd.DataFrame, spec: DatasetSpec, ids: list[int]) -> np.ndarray:
    latest = frame.sort_values(spec.timestamp).groupby(spec.entity).last()
    return latest.loc[ids, spec.features].to_numpy(dtype="float64")


def test_definitions_follow_the_spec(stage: Stage) -> None:
    spec, frame, result, _ = stage
    entity, source, view, service = definitions(spec, result.source_path)
    assert (entity.name, entity.join_key, entity.value_type) == ("nr", "nr", ValueType.INT64)
    assert source.timestamp_field == "event_timestamp"
    assert source.path == result.source_path
    assert [field.name for field in view.features] == spec.features
    types = {field.name: field.dtype for field in view.schema}
    assert types["lwage"] == Float64 and types["hours"] == Int64 and types["educ"] == Int64
    assert view.online and view.ttl == FEATURE_TTL
    span = frame[spec.timestamp].max() - frame[spec.timestamp].min()
    assert view.ttl > span  # every value stays joinable for the whole panel
    assert service.name == "wage_panel_v1" == result.feature_service
    assert [p.name for p in service.feature_view_projections] == [view.name]


def test_source_holds_features_but_not_the_label(stage: Stage) -> None:
    spec, frame, result, _ = stage
    source = pd.read_parquet(result.source_path)
    assert list(source.columns) == [spec.entity, spec.timestamp, *spec.features]
    assert len(source) == len(frame) == result.rows == 4360


def test_training_set_is_complete_ordered_and_correct(stage: Stage) -> None:
    spec, frame, result, _ = stage
    training = pd.read_parquet(result.training_path)
    assert list(training.columns) == spec.columns
    assert training[spec.features].notna().all().all()
    order = training[[spec.timestamp, spec.entity]]
    assert order.equals(order.sort_values([spec.timestamp, spec.entity]).reset_index(drop=True))
    # Features and labels share their row's timestamp, so the join must give the row back.
    original = frame[spec.columns].sort_values([spec.timestamp, spec.entity])
    pd.testing.assert_frame_equal(training, original.reset_index(drop=True), check_dtype=False)


def test_runtime_config_lives_under_the_data_dir(stage: Stage) -> None:
    spec, _, result, data_dir = stage
    repo = Path(result.repo_path)
    assert repo == data_dir / "features" / "wage_panel"
    store = FeatureStore(repo_path=str(repo))  # the rendered yaml opens on its own
    assert store.project == "wage_panel"
    assert store.config.online_store.type == "sqlite"
    assert store.config.entity_key_serialization_version == 3
    assert (repo / "registry.db").is_file() and (repo / "online.db").is_file()
    assert not list(repo.glob(".*.tmp")), "no temp files left behind"
    assert result.materialized_until == "1987-01-01T00:00:01+00:00"


def test_apply_is_idempotent(stage: Stage) -> None:
    spec, frame, result, data_dir = stage
    store = store_for(spec, data_dir)
    before = store.get_feature_view("wage_panel_features")
    apply_definitions(store, spec, result.source_path)
    apply_definitions(store, spec, result.source_path)
    store.refresh_registry()
    assert [e.name for e in store.list_entities()] == ["nr"]
    assert [v.name for v in store.list_feature_views()] == ["wage_panel_features"]
    assert [s.name for s in store.list_feature_services()] == ["wage_panel_v1"]
    assert store.get_feature_view("wage_panel_features") == before
    lookup = online_lookup(spec, data_dir)  # the online store survives re-apply
    np.testing.assert_allclose(lookup([13]).to_numpy(), _latest(frame, spec, [13]))


def test_online_lookup_returns_the_latest_values_in_request_order(stage: Stage) -> None:
    spec, frame, _, data_dir = stage
    lookup = online_lookup(spec, data_dir)
    ids = [17, 13, 17, 12548]
    result = lookup(ids)
    assert list(result.index) == ids and list(result.columns) == spec.features
    np.testing.assert_allclose(result.to_numpy(), _latest(frame, spec, ids))
    assert lookup(["13"]).iloc[0].tolist() == result.iloc[1].tolist()  # string ids coerce


def test_unknown_entities_raise_naming_them(stage: Stage) -> None:
    spec, _, _, data_dir = stage
    lookup = online_lookup(spec, data_dir)
    with pytest.raises(UnknownEntity) as info:
        lookup([13, 999_999, "abc", 1.5, 17])
    assert info.value.ids == [999_999, "abc", 1.5]
    assert "999999" in str(info.value) and "'abc'" in str(info.value)


def test_online_lookup_needs_an_applied_repo(tmp_path: Path) -> None:
    with pytest.raises(FeatureError, match="run the features stage first"):
        online_lookup(load_spec(DEFAULT_SPEC), tmp_path)


@pytest.mark.parametrize(("change", "message"), [
    (lambda f: f.drop(columns=["lwage"]), r"missing column\(s\) \['lwage'\]"),
    (lambda f: f.assign(hours=f["hours"].astype(str)), "feature 'hours' has dtype"),
    (lambda f: pd.concat([f, f.head(2)]), "2 duplicate"),
    (lambda f: f.assign(nr=f["nr"].where(f.index > 0)), "entity column 'nr' has 1 null"),
])
def test_bad_feature_frames_are_refused(change, message: str) -> None:
    spec = load_spec(DEFAULT_SPEC)
    frame = load_dataset(spec).head(50)
    with pytest.raises(FeatureError, match=message):
        source_frame(change(frame), spec)


def test_source_frame_normalises_types() -> None:
    spec = load_spec(DEFAULT_SPEC)
    frame = load_dataset(spec).head(5)
    frame["married"] = frame["married"].astype(bool)
    frame[spec.timestamp] = frame[spec.timestamp].dt.tz_localize(None)  # naive means UTC
    rows = source_frame(frame, spec)
    assert rows["married"].dtype == "int64"
    assert str(rows[spec.timestamp].dtype) == "datetime64[ns, UTC]"
    assert spec.label not in rows.columns
