"""Validation stage: a Great Expectations suite generated from the dataset spec.

The suite is built from the spec alone (required columns, types, nulls, finiteness, label
domain, unique entity-timestamp pairs, no future events) plus the spec's declared rules, so
any dataset runs without code changes. ``validate_dataset`` writes the report and a Data
Docs page and quarantines a failing batch; ``require_valid`` then stops the run with a
message naming the failed expectations. Great Expectations is imported lazily (seconds).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from pydantic import BaseModel

from mlops.atomic_files import write_atomic
from mlops.config import DatasetSpec
from mlops.data.expectations import build_expectations
from mlops.data.hints import TIME_TYPE, hint_for
from mlops.data.loading import dataset_hash
from mlops.data.spec_fit import check_spec_fits

if TYPE_CHECKING:
    from great_expectations.core import ExpectationSuiteValidationResult
    from great_expectations.expectations import Expectation

log = logging.getLogger(__name__)

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
    hint: str | None = None  # what the failure means in this batch, in plain words

    def describe(self) -> str:
        """One line naming the expectation, its arguments, what was seen and what it means."""
        text = self._evidence()
        return f"{text}; {self.hint}" if self.hint else text

    def _evidence(self) -> str:
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
    """What validating one batch found and, once written, where its files are."""

    dataset: str
    dataset_hash: str
    rows: int
    success: bool
    evaluated: int
    failed: list[FailedExpectation]
    seconds: float
    report_path: str | None = None
    docs_path: str | None = None
    quarantine_path: str | None = None

    def summary(self) -> str:
        """The failed expectations, one per line, or a line saying all passed."""
        head = f"dataset {self.dataset!r}: {len(self.failed)} of {self.evaluated} expectations"
        if self.success:
            return f"{head} failed ({self.rows} rows passed)"
        lines = [f"{head} failed:", *(f"- {f.describe()}" for f in self.failed)]
        if self.quarantine_path:
            lines.append(f"batch quarantined at {self.quarantine_path}")
        return "\n".join(lines)


class ValidationFailed(ValueError):
    """A batch failed its suite; the message names every failed expectation."""

    def __init__(self, message: str, report: ValidationReport) -> None:
        super().__init__(message)
        self.report = report

    def __reduce__(self) -> tuple[Any, ...]:
        # Keeps the exception picklable, so it can cross process boundaries intact.
        return (type(self), (str(self), self.report))


def validate_frame(frame: pd.DataFrame, spec: DatasetSpec,
                   now: datetime | None = None) -> ValidationReport:
    """Run the spec's suite on a frame in an in-memory GE context; writes nothing."""
    return _validate(frame, spec, now)[0]


def _validate(frame: pd.DataFrame, spec: DatasetSpec, now: datetime | None
              ) -> tuple[ValidationReport, ExpectationSuiteValidationResult | None]:
    start = time.perf_counter()
    duplicated = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
    if duplicated:  # GE cannot address a column whose name is not unique
        result = None
        failed = [FailedExpectation(expectation="expect_unique_column_names",
                                    kwargs={}, observed=f"duplicated columns {duplicated}")]
    else:
        check_spec_fits(frame, spec)  # a spec error, not bad data: raised, not quarantined
        result = _run_suite(frame, build_expectations(spec, now), spec.name)
        failed = _explain([_to_failure(r) for r in result.results if not r.success], frame,
                          spec)
    report = ValidationReport(
        dataset=spec.name, dataset_hash=_safe_hash(frame), rows=len(frame),
        success=not failed, evaluated=len(result.results) if result else 1, failed=failed,
        seconds=round(time.perf_counter() - start, 4),
    )
    log.info("validated %s: %d rows, %d/%d expectations failed in %.2fs", spec.name,
             report.rows, len(failed), report.evaluated, report.seconds)
    return report, result


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


def _explain(failed: list[FailedExpectation], frame: pd.DataFrame,
             spec: DatasetSpec) -> list[FailedExpectation]:
    """Missing columns first; a check that could not run on a missing column, or on event
    times that are not times, says so instead of GE's exception; the first failure of a
    column gets its plain-words hint (``mlops.data.hints``)."""
    unusable = {f.kwargs.get("column"): f"column {f.kwargs.get('column')!r} is missing"
                for f in failed if f.expectation == "expect_column_to_exist"}
    if any(f.expectation == TIME_TYPE and f.kwargs.get("column") == spec.timestamp
           for f in failed):
        unusable.setdefault(spec.timestamp, f"{spec.timestamp!r} holds no UTC times")
    explained: list[FailedExpectation] = []
    hinted: set[str] = set()
    for failure in sorted(failed, key=lambda f: f.expectation != "expect_column_to_exist"):
        column = failure.kwargs.get("column")
        if failure.error and column in unusable:
            failure = failure.model_copy(update={"error": unusable[column]})
        elif column not in hinted:
            hint = hint_for(failure.expectation, column, frame, spec)
            if hint:
                failure = failure.model_copy(update={"hint": hint})
                hinted.add(column)
        explained.append(failure)
    return explained


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


def validate_dataset(frame: pd.DataFrame, spec: DatasetSpec, out_dir: Path,
                     quarantine_dir: Path, now: datetime | None = None) -> ValidationReport:
    """Validate a batch; write its report (JSON) and Data Docs page (HTML) to out_dir.

    Files are named by the batch's content hash, so a retry rewrites the same files. A
    failing batch is also written, with its report and page, to ``quarantine_dir/<name>-
    <hash>/``. Nothing is raised here: ``require_valid`` decides, so callers may inspect.
    """
    report, result = _validate(frame, spec, now)
    stem = f"{spec.name}-{report.dataset_hash[:16]}"
    docs = _render_docs(result) if result is not None else None
    report_path = Path(out_dir) / f"{stem}.json"
    docs_path = Path(out_dir) / f"{stem}.html"
    quarantine = Path(quarantine_dir) / stem
    report = report.model_copy(update={
        "report_path": str(report_path),
        "docs_path": str(docs_path) if docs else None,
        "quarantine_path": None if report.success else str(quarantine),
    })
    if not report.success:
        _quarantine(frame, report, docs, quarantine)
        log.error("%s failed validation; batch quarantined at %s", spec.name, quarantine)
    if docs:
        _write_text(docs_path, docs)
    _write_text(report_path, report.model_dump_json(indent=2))
    return report


def require_valid(report: ValidationReport) -> ValidationReport:
    """The report unchanged when the batch passed, else ValidationFailed naming failures."""
    if not report.success:
        raise ValidationFailed(report.summary(), report)
    return report


def _quarantine(frame: pd.DataFrame, report: ValidationReport, docs: str | None,
                folder: Path) -> None:
    _write_batch(frame, folder / "batch")
    if docs:
        _write_text(folder / "docs.html", docs)
    _write_text(folder / "report.json", report.model_dump_json(indent=2))  # last: complete


def _render_docs(result: ExpectationSuiteValidationResult) -> str | None:
    """GE's Data Docs page for one result (its styles load from CDNs when viewed)."""
    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import DefaultJinjaPageView

    try:
        return DefaultJinjaPageView().render(ValidationResultsPageRenderer().render(result))
    except Exception:  # the page is a convenience: never let it hide the verdict
        log.warning("could not render the Data Docs page", exc_info=True)
        return None


def _write_batch(frame: pd.DataFrame, stem: Path) -> Path:
    """Parquet when the frame allows it, else CSV (a bad batch may hold mixed types)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    target = stem.with_suffix(".parquet")
    try:
        write_atomic(target, lambda tmp: frame.to_parquet(tmp, index=False))
    except (ValueError, TypeError) as exc:  # pyarrow's ArrowInvalid / ArrowTypeError
        log.warning("batch not writable as parquet (%s); writing CSV", exc)
        target = stem.with_suffix(".csv")
        write_atomic(target, lambda tmp: frame.to_csv(tmp, index=False))
    return target


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
