"""Drift of current data against a reference, on real Evidently: seeded samples of 2,000
reference and 500 current rows, shifted where a test wants drift."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from mlops.monitoring.drift import DriftThresholds, measure_drift

NUMERIC = ["x1", "x2", "x3"]
CATEGORICAL = ["colour"]
COLOURS = ["red", "green", "blue"]
MIX = [0.5, 0.3, 0.2]


def sample(rows: int, seed: int, shift: dict[str, float] | None = None) -> pd.DataFrame:
    """Three standard normal features, a colour and a score; ``shift`` moves column means."""
    rng = np.random.default_rng(seed)
    shift = shift or {}
    frame = pd.DataFrame({column: rng.normal(shift.get(column, 0.0), 1.0, rows)
                          for column in [*NUMERIC, "prediction"]})
    frame["colour"] = rng.choice(COLOURS, rows, p=MIX)
    return frame


def measure(reference: pd.DataFrame, current: pd.DataFrame, **kwargs):
    thresholds = kwargs.pop("thresholds", Thresholds())
    return measure_drift(reference, current, kwargs.pop("numeric", NUMERIC),
                         kwargs.pop("categorical", CATEGORICAL), thresholds, **kwargs)


def Thresholds(**values: object) -> DriftThresholds:  # noqa: N802
    """The thresholds with this file's small samples (500 rows) enough to judge."""
    return DriftThresholds(**{"min_rows": 200, **values})


# The current samples use seed 4: unshifted, each numeric column lies within 0.06 (normed
# Wasserstein) of the reference, well under Evidently's 0.1, so only a shift drifts.
REFERENCE = sample(2000, seed=1)


def test_a_sample_of_the_same_distribution_does_not_drift() -> None:
    result = measure(REFERENCE, sample(500, seed=4))
    assert not result.drifted, result.reason
    assert result.drifted_share <= 0.25
    assert result.drifted_features() == []
    assert result.prediction is not None and not result.prediction.drifted
    assert [column.column for column in result.features] == [*NUMERIC, *CATEGORICAL]
    assert (result.reference_rows, result.current_rows) == (2000, 500)
    assert result.reason.startswith("No drift")


def test_shifted_features_and_prediction_drift_and_are_named() -> None:
    result = measure(REFERENCE, sample(500, seed=4, shift={"x1": 1.0, "x2": 1.0,
                                                            "prediction": 1.0}))
    assert result.drifted, result.reason
    assert result.drifted_features() == ["x1", "x2"]
    assert result.drifted_share == pytest.approx(2 / 4)
    assert result.prediction is not None and result.prediction.drifted
    # Evidently's choice for 2,000 numeric reference rows is a distance: drift is above.
    x1 = result.features[0]
    assert x1.method == "wasserstein" and x1.score > x1.threshold
    assert "x1, x2" in result.reason and "prediction drifted" in result.reason


def test_a_p_value_test_drifts_below_its_threshold() -> None:
    thresholds = Thresholds(method="ks", method_threshold=0.01)
    result = measure(REFERENCE, sample(500, seed=4, shift={"x1": 1.0}), categorical=[],
                     thresholds=thresholds)
    by_column = {column.column: column for column in result.features}
    assert {column.method for column in by_column.values()} == {"ks"}
    assert {column.threshold for column in by_column.values()} == {0.01}
    assert by_column["x1"].drifted and by_column["x1"].score < 0.01
    assert not by_column["x2"].drifted and by_column["x2"].score > 0.01
    assert result.drifted_features() == ["x1"]


def test_a_changed_category_mix_with_an_unseen_category_drifts() -> None:
    rng = np.random.default_rng(3)
    reference, current = REFERENCE.copy(), sample(500, seed=4)
    current["colour"] = rng.choice([*COLOURS, "purple"], 500, p=[0.2, 0.3, 0.3, 0.2])
    # Integer store codes in the reference; the same mix as strings, and as floats with
    # nulls, in the current window: the same categories, so no drift.
    reference["store"] = rng.choice([1, 2, 3], 2000)
    current["store"] = rng.choice(["1", "2", "3"], 500)
    current["store_float"] = rng.choice([1.0, 2.0, 3.0, np.nan], 500)
    reference["store_float"] = reference["store"]
    # A predicted class: categorical because it holds strings.
    reference["prediction"] = rng.choice(["a", "b"], 2000)
    current["prediction"] = rng.choice(["a", "b"], 500)
    result = measure(reference, current, categorical=["colour", "store", "store_float"])
    assert result.drifted_features() == ["colour"], result.reason
    assert result.prediction is not None and not result.prediction.drifted
    assert result.prediction.method == "jensenshannon"


def test_nulls_in_features_are_accepted() -> None:
    reference, current = REFERENCE.copy(), sample(500, seed=4)
    reference.loc[::7, "x3"] = np.nan
    current.loc[::5, "x3"] = np.nan
    current.loc[::9, "colour"] = None
    result = measure(reference, current)
    x3 = next(column for column in result.features if column.column == "x3")
    assert np.isfinite(x3.score) and not x3.drifted
    assert not result.drifted, result.reason


def test_too_few_current_rows_is_never_drift(tmp_path: Path) -> None:
    html = tmp_path / "drift.html"
    current = sample(150, seed=4, shift={"x1": 5.0, "x2": 5.0, "prediction": 5.0})
    result = measure(REFERENCE, current, html_path=html)
    assert not result.drifted
    assert "150" in result.reason and "200" in result.reason
    assert result.features == [] and result.prediction is None
    assert not html.exists()


@pytest.mark.parametrize(("frame", "column"), [("current", "x2"), ("reference", "prediction"),
                                               ("current", "colour")])
def test_a_missing_column_is_named(frame: str, column: str) -> None:
    frames = {"reference": REFERENCE, "current": sample(500, seed=4)}
    frames[frame] = frames[frame].drop(columns=[column])
    with pytest.raises(ValueError, match=rf"{frame} frame has no column '{column}'"):
        measure(frames["reference"], frames["current"])


def test_a_missing_column_is_named_even_with_too_few_rows() -> None:
    with pytest.raises(ValueError, match="current frame has no column 'x1'"):
        measure(REFERENCE, sample(10, seed=4).drop(columns=["x1"]))


def test_the_html_report_is_written(tmp_path: Path) -> None:
    html = tmp_path / "reports" / "model" / "drift.html"
    measure(REFERENCE, sample(500, seed=4, shift={"x1": 1.0}), html_path=str(html))
    assert "<html" in html.read_text(encoding="utf-8").lower()
    assert [path.name for path in html.parent.iterdir()] == ["drift.html"]


def test_the_feature_share_and_the_prediction_threshold() -> None:
    one_feature = sample(500, seed=4, shift={"x1": 1.0})
    with_prediction = sample(500, seed=4, shift={"x1": 1.0, "prediction": 1.0})
    everything = Thresholds(feature_share=1.0)
    assert measure(REFERENCE, one_feature).drifted_features() == ["x1"]
    assert not measure(REFERENCE, one_feature, thresholds=everything).drifted
    # A quarter of the features drifted: the share is reached at equality.
    assert measure(REFERENCE, one_feature,
                   thresholds=Thresholds(feature_share=0.25)).drifted
    assert measure(REFERENCE, with_prediction, thresholds=everything).drifted
    ignored = measure(REFERENCE, with_prediction,
                      thresholds=Thresholds(feature_share=1.0, prediction=False))
    assert not ignored.drifted and ignored.prediction is not None and ignored.prediction.drifted
    assert "alone does not count" in ignored.reason


def test_without_a_prediction_column() -> None:
    result = measure(REFERENCE.drop(columns=["prediction"]),
                     sample(500, seed=4, shift={"x1": 1.0}).drop(columns=["prediction"]),
                     prediction=None, thresholds=Thresholds(feature_share=0.25))
    assert result.prediction is None and result.drifted


@pytest.mark.parametrize("bad", [{"feature_share": 0.0}, {"feature_share": 1.5},
                                 {"min_rows": 0}, {"share": 0.5}])
def test_thresholds_are_checked(bad: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        DriftThresholds(**bad)
