"""Validation stage: a Great Expectations suite generated from the dataset spec.

The suite is built from the spec alone (required columns, types, nulls, finiteness, label
domain, unique entity-timestamp pairs, no future events) plus the spec's declared rules, so
any dataset runs without code changes. A passing batch is written for the next stage; a
failing batch is quarantined with its report and the run stops with a message naming the
failed expectations. Great Expectations is imported lazily: it costs ~5 s to import.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from pydantic import BaseModel

from mlops.config import DatasetSpec, TaskType
from mlops.data import dataset_hash, load_dataset

if TYPE_CHECKING:
    from great_expectations.core import ExpectationSuiteValidationResult
    from great_expectations.expectations import Expectation

log = logging.getLogger(__name__)

NUMERIC_TYPES = [
    "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64",
]
# Finite means inside float64's range; NaN is a null and is checked separately.
FLOAT_MAX = 1.7976931348623157e308
EXAMPLES = 5
# GE keeps its current context in a process-wide project manager: one run at a time.
_GX_LOCK = threading.Lock()


class FailedExpectation(BaseModel):
    """One expectation that did not hold, in JSON-safe terms."""

    expectation: str
    kwargs: dict[str, Any]
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    observed: str | None = None
    examples: list[str] = []
    error: str | None = None

    def describe(self) -> str:
        """One line naming the expectation, its arguments and what was seen."""
        args = ", ".join(f"{key}={_short(value)}" for key, value in self.kwargs.items())
        text = f"{self.expectation}({args})"
        if self.error:
            return f"{text}: could not run: {self.error}"
        if self.unexpected_count is not None:
            text += f": {self.unexpected_count} unexpected ({self.unexpected_percent or 0:.3g}%)"
        if self.observed is not None:
            text += f": observed {self.observed}"
        if self.examples:
            text += f", e.g. {', '.join(self.examples)}"
        return text


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 3]}..."


class ValidationReport(BaseModel):
    """What validating one batch found."""

    dataset: str
    data_hash: str
    n_rows: int
    success: bool
    evaluated: int
    failed: list[FailedExpectation]
    seconds: float

    def summary(self) -> str:
        """The failed expectations, one per line, or a line saying all passed."""
        head = f"dataset {self.dataset!r}: {len(self.failed)} of {self.evaluated} expectations"
        if self.success:
            return f"{head} failed ({self.n_rows} rows passed)"
        return "\n".join([f"{head} failed:", *(f"- {f.describe()}" for f in self.failed)])


class ValidationResult(BaseModel):
    """The stage's hand-over: the validated batch and its report, by path and hash."""

    dataset: str
    data_hash: str
    n_rows: int
    evaluated: int
    data_path: str
    report_path: str
    seconds: float


class ValidationFailed(ValueError):
    """A batch failed its suite; the message names every failed expectation."""

    def __init__(self, message: str, report: ValidationReport, quarantine_dir: str) -> None:
        super().__init__(message)
        self.report = report
        self.quarantine_dir = quarantine_dir

    def __reduce__(self) -> tuple[Any, ...]:
        # Keeps the exception picklable, so it can cross process boundaries intact.
        return (type(self), (str(self), self.report, self.quarantine_dir))


def build_expectations(spec: DatasetSpec, now: datetime | None = None) -> list[Expectation]:
    """The suite for a spec: schema and domain checks first, then the declared rules.

    ``now`` bounds the event timestamps (no events from the future); it defaults to the
    current UTC time and is a parameter so that suites are reproducible in tests.
    """
    import great_expectations.expectations as gxe

    now = now or datetime.now(UTC)
    rule_columns = [rule.column for rule in spec.rules if rule.column not in spec.columns]
    suite: list[Expectation] = [gxe.ExpectTableRowCountToBeBetween(min_value=1)]
    suite += [gxe.ExpectColumnToExist(column=c) for c in [*spec.columns, *rule_columns]]
    suite += [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in spec.columns]
    suite += [
        gxe.ExpectCompoundColumnsToBeUnique(column_list=[spec.entity, spec.timestamp]),
        # Pandas reports tz-aware datetime columns as Timestamp, naive ones as datetime64.
        gxe.ExpectColumnValuesToBeOfType(column=spec.timestamp, type_="Timestamp"),
        gxe.ExpectColumnMaxToBeBetween(column=spec.timestamp, max_value=now),
    ]
    numeric = list(spec.features) if spec.task == TaskType.classification else [
        *spec.features, spec.label]
    for column in numeric:
        suite += [
            gxe.ExpectColumnValuesToBeInTypeList(column=column, type_list=NUMERIC_TYPES),
            gxe.ExpectColumnValuesToBeBetween(column=column, min_value=-FLOAT_MAX,
                                              max_value=FLOAT_MAX),
        ]
    if spec.task == TaskType.classification:
        suite += [
            gxe.ExpectColumnValuesToBeInSet(column=spec.label, value_set=[0, 1]),
            gxe.ExpectColumnUniqueValueCountToBeBetween(column=spec.label, min_value=2),
        ]
    return suite + _rule_expectations(spec)


def _rule_expectations(spec: DatasetSpec) -> list[Expectation]:
    import great_expectations.expectations as gxe

    suite: list[Expectation] = []
    for rule in spec.rules:
        if rule.min is not None or rule.max is not None:
            suite.append(gxe.ExpectColumnValuesToBeBetween(
                column=rule.column, min_value=rule.min, max_value=rule.max))
        if rule.allowed is not None:
            suite.append(gxe.ExpectColumnValuesToBeInSet(
                column=rule.column, value_set=rule.allowed))
        if rule.not_null:
            suite.append(gxe.ExpectColumnValuesToNotBeNull(column=rule.column))
    return suite


def validate_frame(frame: pd.DataFrame, spec: DatasetSpec,
                   now: datetime | None = None) -> ValidationReport:
    """Run the spec's suite on a frame in an in-memory GE context; writes nothing."""
    start = time.perf_counter()
    duplicated = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
    if duplicated:
        failed = [FailedExpectation(expectation="expect_unique_column_names",
                                    kwargs={}, observed=f"duplicated columns {duplicated}")]
        evaluated = 1
    else:
        result = _run_suite(frame, build_expectations(spec, now), spec.name)
        failed = _explain_missing([_to_failure(r) for r in result.results if not r.success])
        evaluated = len(result.results)
    report = ValidationReport(
        dataset=spec.name, data_hash=_safe_hash(frame), n_rows=len(frame),
        success=not failed, evaluated=evaluated, failed=failed,
        seconds=round(time.perf_counter() - start, 4),
    )
    log.info("validated %s: %d rows, %d/%d expectations failed in %.2fs", spec.name,
             report.n_rows, len(failed), evaluated, report.seconds)
    return report


def _run_suite(frame: pd.DataFrame, expectations: list[Expectation],
               name: str) -> ExpectationSuiteValidationResult:
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        progress_bars=ProgressBarsConfig(globally=False),
        analytics_enabled=False,
    )
    with _GX_LOCK:
        context = gx.get_context(mode="ephemeral", project_config=config)
        batch = (context.data_sources.add_pandas(name).add_dataframe_asset(name)
                 .add_batch_definition_whole_dataframe(name))
        suite = context.suites.add(gx.ExpectationSuite(name=name, expectations=expectations))
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=name, data=batch, suite=suite))
        return definition.run(
            batch_parameters={"dataframe": frame},
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": EXAMPLES},
        )


def _to_failure(result: Any) -> FailedExpectation:
    """A GE expectation result as a FailedExpectation (JSON-safe, batch id dropped)."""
    kwargs = {k: v for k, v in result.expectation_config.kwargs.items() if k != "batch_id"}
    details = result.result or {}
    observed = details.get("observed_value")
    return FailedExpectation(
        expectation=result.expectation_config.type,
        kwargs=json.loads(json.dumps(kwargs, default=str)),
        unexpected_count=details.get("unexpected_count"),
        unexpected_percent=details.get("unexpected_percent"),
        observed=None if observed is None else str(observed),
        examples=[repr(v) for v in details.get("partial_unexpected_list", [])][:EXAMPLES],
        error=_exception_message(result.exception_info or {}),
    )


def _explain_missing(failed: list[FailedExpectation]) -> list[FailedExpectation]:
    """Missing columns first; expectations that could not run on them say so plainly."""
    missing = {f.kwargs.get("column") for f in failed if f.expectation == "expect_column_to_exist"}

    def explained(failure: FailedExpectation) -> FailedExpectation:
        column = failure.kwargs.get("column")
        if failure.error and column in missing:
            return failure.model_copy(update={"error": f"column {column!r} is missing"})
        return failure

    ordered = sorted(failed, key=lambda f: f.expectation != "expect_column_to_exist")
    return [explained(f) for f in ordered]


def _exception_message(info: dict[str, Any]) -> str | None:
    # GE nests exception details per metric when a metric failed, flat otherwise.
    entries = [info] if "raised_exception" in info else list(info.values())
    for entry in entries:
        if isinstance(entry, dict) and entry.get("raised_exception"):
            return str(entry.get("exception_message") or "unknown error")
    return None


def _safe_hash(frame: pd.DataFrame) -> str:
    try:
        return dataset_hash(frame)
    except TypeError:  # unhashable cells (lists, dicts) in a bad batch
        return hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest()


def run_validation(spec: DatasetSpec, out_dir: Path,
                   frame: pd.DataFrame | None = None) -> ValidationResult:
    """Validate the spec's dataset (or the given frame) and hand over or quarantine it.

    On success the batch goes to ``out_dir/validated/`` and its report to
    ``out_dir/reports/``. On failure batch and report go to ``out_dir/quarantine/<name>-
    <hash>/`` and ValidationFailed is raised; nothing is written to ``validated/``.
    """
    frame = load_dataset(spec) if frame is None else frame
    report = validate_frame(frame, spec)
    stem = f"{spec.name}-{report.data_hash[:12]}"
    if not report.success:
        quarantine = Path(out_dir) / "quarantine" / stem
        _write_batch(frame, quarantine / "batch")
        _write_json(report, quarantine / "report.json")
        log.error("quarantined %s at %s", spec.name, quarantine)
        raise ValidationFailed(f"{report.summary()}\nquarantined at {quarantine}", report,
                               str(quarantine))
    data_path = _write_batch(frame, Path(out_dir) / "validated" / stem)
    report_path = Path(out_dir) / "reports" / f"{stem}.json"
    _write_json(report, report_path)
    return ValidationResult(
        dataset=spec.name, data_hash=report.data_hash, n_rows=report.n_rows,
        evaluated=report.evaluated, data_path=str(data_path), report_path=str(report_path),
        seconds=report.seconds,
    )


def _write_batch(frame: pd.DataFrame, stem: Path) -> Path:
    """Parquet when the frame allows it, else CSV (a bad batch may hold mixed types)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    target = stem.with_suffix(".parquet")
    try:
        _atomic(target, lambda tmp: frame.to_parquet(tmp, index=False))
    except (ValueError, TypeError) as exc:  # pyarrow's ArrowInvalid / ArrowTypeError
        log.warning("batch not writable as parquet (%s); writing CSV", exc)
        target = stem.with_suffix(".csv")
        _atomic(target, lambda tmp: frame.to_csv(tmp, index=False))
    return target


def _write_json(report: ValidationReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic(path, lambda tmp: tmp.write_text(report.model_dump_json(indent=2)))


def _atomic(path: Path, write: Callable[[Path], object]) -> None:
    """Write through a temporary file in the same folder, then rename over the target."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
