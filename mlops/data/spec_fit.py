"""Whether a dataset's columns are what its spec says they are, checked before validation.

A string column listed as a number is a mistake in the spec, not bad data: the batch is
fine, so nothing is quarantined, and the message names the column and the spec key that
would make it usable (``categorical``). Pure: reads the frame, writes nothing.
"""

from __future__ import annotations

import pandas as pd

from mlops.config import ConfigError, DatasetSpec

EXAMPLES = 3
TEXT_SHARE = 0.5  # of a column's non-null values: words, for it to be categories


class SpecMismatch(ConfigError):
    """The spec and the data disagree about a column; the message says what to write."""


def _text_values(series: pd.Series) -> list[str]:
    """A few of the column's words, when most of its values are words (strings that are no
    numbers): a category column. A stray string in a column of numbers is bad data instead,
    which validation reports and quarantines."""
    if not (pd.api.types.is_object_dtype(series) or pd.api.types.is_string_dtype(series)):
        return []
    values = series.dropna()
    strings = values[values.map(lambda v: isinstance(v, str))]
    words = strings[pd.to_numeric(strings, errors="coerce").isna()]
    if not len(values) or len(words) < TEXT_SHARE * len(values):
        return []
    return [str(v) for v in words.unique()[:EXAMPLES]]


def spec_mismatches(frame: pd.DataFrame, spec: DatasetSpec) -> list[str]:
    """One sentence per column the spec misdescribes."""
    problems = []
    for column in spec.numeric_features:
        if column not in frame.columns:
            continue  # a missing column is the suite's to report
        texts = _text_values(frame[column])
        if texts:
            shown = ", ".join(repr(t) for t in texts)
            problems.append(
                f"feature {column!r} holds text ({shown}, ...) but the spec takes it as a "
                f"number: list it under 'categorical' in the spec to use it as a category")
    for column in spec.categorical:
        series = frame[column] if column in frame.columns else None
        if series is not None and pd.api.types.is_float_dtype(series):
            values = series.dropna()
            fractional = values[values != values.round()]
            if len(fractional):
                problems.append(
                    f"categorical feature {column!r} holds fractional numbers (e.g. "
                    f"{fractional.iloc[0]!r}); categories are strings or integer codes: "
                    "remove it from 'categorical' to use it as a number")
    return problems


def check_spec_fits(frame: pd.DataFrame, spec: DatasetSpec) -> None:
    """SpecMismatch naming every column the spec misdescribes."""
    problems = spec_mismatches(frame, spec)
    if problems:
        raise SpecMismatch(f"the spec of dataset {spec.name!r} does not fit its data: "
                           + "; ".join(problems))
