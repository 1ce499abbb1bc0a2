"""Distribution drift of a served model's recent inputs and predictions against a reference
(its training set), measured per column by Evidently and judged against typed thresholds.

Evidently picks each column's statistical test (and its threshold) by type and size unless
the thresholds name one; its per-column verdict is kept as it is, because a p-value test
drifts below its threshold and a distance above it. The dataset-level verdict is ours: the
share of drifted features, and optionally the prediction alone.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from mlops.atomic_files import write_atomic

# Evidently's usage telemetry (iterative-telemetry) honours DO_NOT_TRACK; a monitoring job
# must not phone home. setdefault keeps an operator's explicit choice. Evidently reads it
# when it builds its loggers, so it is set before the import.
os.environ.setdefault("DO_NOT_TRACK", "1")

from evidently import DataDefinition, Dataset, Report  # noqa: E402
from evidently.legacy.calculations import stattests  # noqa: E402
from evidently.metrics import ValueDrift  # noqa: E402
from evidently.presets import DataDriftPreset  # noqa: E402

logger = logging.getLogger(__name__)

# Evidently reports the display name of a test it chose ("K-S p_value") but the id of one it
# was given ("ks"); both map to the id, so one test has one name in results and metrics.
_METHOD_IDS = {test.display_name: test.name for test in vars(stattests).values()
               if isinstance(test, stattests.StatTest)}


class DriftThresholds(BaseModel):
    """When recent data counts as drifted from the reference."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Share of drifted features (0 < x <= 1) that counts as dataset drift.
    feature_share: float = Field(0.5, gt=0, le=1)
    # Prediction drift alone counts as drift.
    prediction: bool = True
    # Evidently stattest id for every column ("ks", "psi", "wasserstein", ...); None lets
    # Evidently choose by column type and reference size.
    method: str | None = None
    # That test's threshold; None: the test's default.
    method_threshold: float | None = Field(None, gt=0)
    # Fewer current rows than this is not enough data: never drift.
    # Below ~1,000 rows, sampling noise alone passes Evidently's default thresholds (normed
    # Wasserstein 0.1): 320 rows of an unshifted stream showed two "drifted" features.
    min_rows: int = Field(1000, ge=1)


class ColumnDrift(BaseModel):
    """Evidently's verdict on one column."""

    model_config = ConfigDict(frozen=True)

    column: str
    method: str
    score: float  # the test's drift score: a p-value or a distance, per the method
    threshold: float
    drifted: bool


class DriftResult(BaseModel):
    """The drift of one window of current data against the reference."""

    model_config = ConfigDict(frozen=True)

    features: list[ColumnDrift]
    prediction: ColumnDrift | None
    drifted_share: float  # drifted features / features
    drifted: bool
    reason: str
    reference_rows: int
    current_rows: int

    def drifted_features(self) -> list[str]:
        return [column.column for column in self.features if column.drifted]


def measure_drift(reference: pd.DataFrame, current: pd.DataFrame, numeric: list[str],
                  categorical: list[str], thresholds: DriftThresholds,
                  prediction: str | None = "prediction",
                  html_path: str | Path | None = None) -> DriftResult:
    """Compare ``current`` with ``reference`` column by column and judge the whole.

    Numeric columns may hold NaN, categorical ones None; categorical values are compared as
    strings, so a code 3 and "3" agree. The prediction column is categorical when it holds
    strings (a predicted class), else numeric. A missing column raises ValueError, even when
    there are too few current rows to judge. ``html_path`` gets Evidently's report.
    """
    features = [*numeric, *categorical]
    columns = features + ([prediction] if prediction is not None else [])
    _check_columns(columns, {"reference": reference, "current": current})
    sizes = {"reference_rows": len(reference), "current_rows": len(current)}
    if len(current) < thresholds.min_rows:
        reason = (f"Not enough data: {len(current)} current rows, fewer than the minimum of "
                  f"{thresholds.min_rows}.")
        return DriftResult(features=[], prediction=None, drifted_share=0.0, drifted=False,
                           reason=reason, **sizes)
    num, cat = list(numeric), list(categorical)
    if prediction is not None:
        is_numeric = all(_is_numeric(frame[prediction]) for frame in (reference, current))
        (num if is_numeric else cat).append(prediction)
    definition = DataDefinition(numerical_columns=num, categorical_columns=cat)
    ref, cur = (Dataset.from_pandas(_prepare(frame, num, cat, name), data_definition=definition)
                for name, frame in (("reference", reference), ("current", current)))
    snapshot = _build_report(features, prediction, thresholds).run(
        current_data=cur, reference_data=ref)
    drifts = _column_drifts(json.loads(snapshot.json()))
    if html_path is not None:
        write_atomic(Path(html_path), lambda tmp: snapshot.save_html(str(tmp)))
    result = _judge([drifts[column] for column in features],
                    drifts[prediction] if prediction is not None else None, thresholds, sizes)
    logger.info("%s", result.reason)
    return result


def _check_columns(columns: list[str], frames: dict[str, pd.DataFrame]) -> None:
    if not columns:
        raise ValueError("no columns to compare: numeric, categorical and prediction are empty")
    repeated = sorted({column for column in columns if columns.count(column) > 1})
    if repeated:
        raise ValueError(f"columns listed more than once (numeric, categorical, prediction): "
                         f"{repeated}")
    for name, frame in frames.items():
        missing = [column for column in columns if column not in frame.columns]
        if missing:
            raise ValueError(f"the {name} frame has no column {', '.join(map(repr, missing))}")


def _is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def _prepare(frame: pd.DataFrame, numeric: list[str], categorical: list[str],
             name: str) -> pd.DataFrame:
    """Only the listed columns, numbers as float (nulls as NaN), categories as str or None."""
    prepared = {column: _as_float(frame[column], column, name).to_numpy() for column in numeric}
    prepared |= {column: _as_category(frame[column]).to_numpy() for column in categorical}
    return pd.DataFrame(prepared)


def _as_float(series: pd.Series, column: str, name: str) -> pd.Series:
    try:
        return pd.to_numeric(series).astype("float64")
    except (TypeError, ValueError) as error:
        raise ValueError(f"numeric column {column!r} of the {name} frame holds a value that "
                         f"is not a number: {error}") from error


def _as_category(series: pd.Series) -> pd.Series:
    if pd.api.types.is_float_dtype(series) and (series.dropna() % 1 == 0).all():
        # Integer codes read back as floats because of nulls: 3.0 must be "3", as in the
        # frame without nulls.
        series = series.astype("Int64")
    return series.astype(str).where(series.notna(), None)


def _build_report(features: list[str], prediction: str | None,
                  thresholds: DriftThresholds) -> Report:
    test = {"method": thresholds.method, "threshold": thresholds.method_threshold}
    metrics: list[Any] = []
    if features:
        # The preset over the features alone, so the share its HTML shows is ours.
        metrics.append(DataDriftPreset(columns=features, drift_share=thresholds.feature_share,
                                       **test))
    if prediction is not None:
        metrics.append(ValueDrift(column=prediction, **test))
    # include_tests: each ValueDrift's test carries Evidently's drift verdict for its column.
    return Report(metrics, include_tests=True)


def _column_drifts(snapshot: dict[str, Any]) -> dict[str, ColumnDrift]:
    """Per column, from the snapshot's dict: each ValueDrift metric (column, method, threshold
    in its config; the score as its value) and the status of its test "drift"."""
    verdicts = {test["metric_config"]["metric_id"]: test["status"]
                for test in snapshot["tests"] if test["id"] == "drift"}
    drifts = {}
    for metric in snapshot["metrics"]:
        status = verdicts.get(metric["id"])
        if status is None:  # the preset's count, not a column
            continue
        config = metric["config"]
        if status not in ("FAIL", "SUCCESS"):
            raise RuntimeError(f"Evidently could not judge drift of {config['column']!r}: "
                               f"{status}")
        drifts[config["column"]] = ColumnDrift(
            column=config["column"], method=_METHOD_IDS.get(config["method"], config["method"]),
            score=metric["value"], threshold=config["threshold"], drifted=status == "FAIL")
    return drifts


def _judge(features: list[ColumnDrift], prediction: ColumnDrift | None,
           thresholds: DriftThresholds, sizes: dict[str, int]) -> DriftResult:
    drifted = [column.column for column in features if column.drifted]
    share = len(drifted) / len(features) if features else 0.0
    by_features = bool(features) and share >= thresholds.feature_share
    by_prediction = prediction is not None and prediction.drifted and thresholds.prediction
    named = f": {', '.join(drifted)}" if drifted else ""
    parts = [f"{len(drifted)} of {len(features)} features drifted ({share:.0%}; dataset drift "
             f"from {thresholds.feature_share:.0%}){named}"]
    if prediction is not None:
        uncounted = prediction.drifted and not thresholds.prediction
        note = ", which alone does not count" if uncounted else ""
        parts.append(f"the prediction {'drifted' if prediction.drifted else 'did not drift'} "
                     f"({prediction.method} {prediction.score:.3g}, threshold "
                     f"{prediction.threshold:g}){note}")
    verdict = "Drift" if by_features or by_prediction else "No drift"
    return DriftResult(features=features, prediction=prediction, drifted_share=share,
                       drifted=by_features or by_prediction,
                       reason=f"{verdict}: {'; '.join(parts)}.", **sizes)
