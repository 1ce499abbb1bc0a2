"""A spec that misdescribes its data is a spec error (named, with the key to use, nothing
quarantined); categorical and nullable features validate as what they are."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.synthetic import generate_mixed_panel, mixed_spec
from mlops.config import ConfigError, TaskType
from mlops.data.spec_fit import SpecMismatch
from mlops.data.validation import ValidationFailed, require_valid, validate_dataset

SPEC = mixed_spec("unused.parquet", TaskType.classification)


@pytest.fixture(scope="module")
def mixed() -> pd.DataFrame:
    return generate_mixed_panel(n_entities=40, n_periods=4, seed=5)


def _validate(frame: pd.DataFrame, tmp_path: Path, spec=SPEC):
    return validate_dataset(frame, spec, tmp_path / "reports", tmp_path / "quarantine")


def test_categorical_integer_coded_and_nullable_features_pass(mixed, tmp_path) -> None:
    assert mixed["hours"].isna().any() and mixed["occupation"].isna().any()
    report = require_valid(_validate(mixed, tmp_path))
    assert report.success and report.evaluated > 10


def test_a_string_column_listed_as_a_number_names_the_column_and_the_key(mixed, tmp_path
                                                                         ) -> None:
    spec = SPEC.model_copy(update={"categorical": ["occupation"]})
    with pytest.raises(SpecMismatch) as raised:
        _validate(mixed, tmp_path, spec)
    message = str(raised.value)
    assert "feature 'continent' holds text ('" in message
    assert "list it under 'categorical' in the spec" in message
    assert isinstance(raised.value, ConfigError)
    assert not (tmp_path / "quarantine").exists() or not any((tmp_path / "quarantine").iterdir())


def test_a_stray_string_in_a_number_column_is_bad_data_not_a_spec_error(mixed, tmp_path
                                                                        ) -> None:
    frame = mixed.astype({"f0": object})
    frame.loc[frame.index[:2], "f0"] = "n/a"
    with pytest.raises(ValidationFailed, match="expect_column_values_to_be_in_type_list"
                       r"\(column='f0'"):
        require_valid(_validate(frame, tmp_path))
    assert any((tmp_path / "quarantine").iterdir())


def test_fractional_numbers_listed_as_categories_are_a_spec_error(mixed, tmp_path) -> None:
    spec = SPEC.model_copy(update={"categorical": ["continent", "occupation", "f1"]})
    with pytest.raises(SpecMismatch, match="categorical feature 'f1' holds fractional numbers"
                       ".*remove it from 'categorical'"):
        _validate(mixed, tmp_path, spec)


def test_nulls_in_a_feature_not_declared_nullable_point_to_the_key(mixed, tmp_path) -> None:
    spec = SPEC.model_copy(update={"nullable": ["occupation"]})
    with pytest.raises(ValidationFailed) as raised:
        require_valid(_validate(mixed, tmp_path, spec))
    assert "expect_column_values_to_not_be_null(column='hours')" in str(raised.value)
    assert "list the feature under 'nullable' in the spec" in str(raised.value)


def test_a_category_column_of_mixed_types_fails_validation(mixed, tmp_path) -> None:
    frame = mixed.astype({"continent": object})
    for index, value in zip(frame.index[:2], [b"raw bytes", 1.5], strict=True):
        frame.at[index, "continent"] = value
    with pytest.raises(ValidationFailed, match="column='continent'"):
        require_valid(_validate(frame, tmp_path))


@pytest.mark.parametrize(("update", "message"), [
    ({"categorical": ["nope"]}, "categorical names columns that are not features: ['nope']"),
    ({"nullable": ["hours", "hours"]}, "nullable contains duplicates"),
])
def test_spec_keys_name_only_features(update, message) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        type(SPEC).model_validate({**SPEC.model_dump(), **update})


def test_spec_without_the_keys_is_plain() -> None:
    plain = SPEC.model_copy(update={"categorical": [], "nullable": []})
    assert plain.plain and not SPEC.plain
    assert SPEC.numeric_features == ["hours", "f0", "f1"]
    assert np.array_equal(plain.numeric_features, plain.features)
