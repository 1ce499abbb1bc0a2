"""Corrupt files through the whole pipeline (the stages the flow runs, in this process):
each is refused with a message naming the problem, and nothing is trained or registered."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.synthetic import generate_panel, synthetic_spec
from mlops.config import ColumnRule, ModelSettings, Settings
from mlops.pipeline.stages import PipelineParams, run_stages


def _frame(mutate: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        mutate(generate_panel(n_entities=20, n_periods=5, seed=4)).to_csv(path, index=False)
    return write


def _cell(column: str, value: object) -> Callable[[Path], None]:
    def mutate(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.astype({column: object}) if isinstance(value, str) else frame.copy()
        frame.loc[2, column] = value
        return frame
    return _frame(mutate)


CASES: dict[str, tuple[str, Callable[[Path], None], str]] = {
    "empty file": ("csv", lambda p: p.write_bytes(b""), "empty"),
    "unparseable file": ("parquet", lambda p: p.write_bytes(b"\x00garbage" * 50),
                         "cannot parse as parquet"),
    "no such file": ("csv", lambda p: None, "not found"),
    "header only": ("csv", lambda p: p.write_text("entity_id,event_timestamp,f0,f1,f2,f3,label\n"),
                    "expect_table_row_count_to_be_between"),
    "null key": ("csv", _cell("entity_id", np.nan),
                 "expect_column_values_to_not_be_null(column='entity_id')"),
    "wrong type": ("csv", _cell("f1", "abc"),
                   "expect_column_values_to_be_in_type_list(column='f1'"),
    "out of range": ("csv", _cell("f0", 99.0), "expect_column_values_to_be_between(column='f0'"),
    "duplicate pair": ("csv", _frame(lambda f: pd.concat([f, f.iloc[[0]]])),
                       "expect_compound_columns_to_be_unique"),
    "future timestamp": ("csv", _cell("event_timestamp", "2999-01-01T00:00:00Z"),
                         "expect_column_max_to_be_between"),
    "missing column": ("csv", _frame(lambda f: f.drop(columns=["f2"])), "column 'f2' is missing"),
    "single class": ("csv", _frame(lambda f: f.assign(label=0)),
                     "expect_column_unique_value_count_to_be_between(column='label'"),
    "nan": ("csv", _cell("f3", np.nan), "expect_column_values_to_not_be_null(column='f3')"),
    "inf": ("csv", _cell("f3", np.inf), "expect_column_values_to_be_between(column='f3'"),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_corrupt_input_is_refused_and_nothing_is_registered(case: str, tmp_path: Path) -> None:
    suffix, write, message = CASES[case]
    path = tmp_path / f"input.{suffix}"
    write(path)
    spec = synthetic_spec(str(path)).model_copy(
        update={"rules": [ColumnRule(column="f0", min=-10, max=10)]})
    settings = Settings(data_dir=tmp_path / "data")
    params = PipelineParams(spec=spec, model=ModelSettings(epochs=1), deploy=False)
    with pytest.raises(ValueError, match=re.escape(message)):
        run_stages(params, settings)
    assert not (settings.data_dir / "training").exists()
    assert not (settings.data_dir / "models").exists()
    assert not (settings.data_dir / "mlflow.db").exists()


@pytest.mark.parametrize(("make", "message"), [
    (lambda folder: None, "no dataset file or folder of parquet partitions there"),
    (lambda folder: folder.mkdir(), "no .parquet files"),
], ids=["no such folder", "empty folder"])
def test_a_dataset_folder_that_holds_no_partitions_is_named(
        make: Callable[[Path], None], message: str, tmp_path: Path) -> None:
    folder = tmp_path / "partitions"
    make(folder)
    settings = Settings(data_dir=tmp_path / "data")
    params = PipelineParams(spec=synthetic_spec(str(folder)), deploy=False)
    with pytest.raises(ValueError, match=re.escape(f"{folder}: {message}")):
        run_stages(params, settings)
    assert not (settings.data_dir / "datasets").exists()
