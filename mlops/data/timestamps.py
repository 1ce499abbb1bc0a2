"""Event timestamps: parsed to UTC only when each value says which instant it is.

A value without a UTC offset ("2024-01-31 12:00", a naive datetime), a number (epoch
seconds? milliseconds? pandas would read nanoseconds) or a date outside the nanosecond
range that Feast and training compute in would each need a guess, and a wrong guess shifts
every point-in-time join without a word. So ``parse_event_times`` leaves such a column as
it is, validation's type or range check fails on it, and ``explain_event_times`` says why
in the failure's message. Pure functions: nothing here reads or writes.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

# pandas' nanosecond range (1677-09-21 to 2262-04-11), rounded inwards to whole days.
EARLIEST = datetime(1677, 9, 22, tzinfo=UTC)
LATEST = datetime(2262, 4, 11, tzinfo=UTC)
ADVICE = "write ISO 8601 times with a UTC offset, e.g. 2024-01-31T12:00:00Z"
# A time of day followed by a zone: Z, UTC, GMT or a numeric offset (+01, +0100, -05:00).
# A date alone ("2024-01-31") has none: it is a calendar day, not an instant. Matched by
# Arrow's RE2 in C++: Python's re, value by value, took several times as long.
_OFFSET = r"(?i)\d:\d{2}(?::\d{2}(?:[.,]\d+)?)?\s*(?:Z|UTC|GMT|[+-]\d{2}(?::?\d{2})?)$"
EXAMPLES = 3


def parse_event_times(series: pd.Series) -> pd.Series:
    """The column as UTC datetimes when every value names its instant, else unchanged.

    Strings that all carry an offset are parsed (mixed offsets are converted correctly);
    a tz-aware column is converted to UTC. Anything else is left for validation to refuse.
    """
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        return series.dt.tz_convert("UTC")
    zoned = _zoned(series)
    if zoned is None or not zoned.all():
        return series
    for fmt in ("ISO8601", None):  # ISO 8601 first: unambiguous, then pandas' inference
        try:
            return pd.to_datetime(series, utc=True, format=fmt)
        except pd.errors.OutOfBoundsDatetime:
            return series  # no format would bring year 1 into nanoseconds
        except (ValueError, TypeError, OverflowError):
            continue
    return series


def explain_event_times(series: pd.Series) -> str | None:
    """Why a column cannot serve as UTC event times, in words; None when it can."""
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
        return (f"{series.dtype} numbers, not times: epoch numbers are refused, since their "
                f"unit (s, ms, us, ns) would be a guess; {ADVICE}")
    if pd.api.types.is_datetime64_dtype(series):
        return f"naive datetimes (no time zone), which would be a guess of the zone; {ADVICE}"
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        outside = series[(series < EARLIEST) | (series > LATEST)]
        return _out_of_range(outside.astype(str)) if len(outside) else None
    zoned = _zoned(series)
    if zoned is None:
        kinds = sorted({type(v).__name__ for v in series.dropna().tolist()})
        return f"values of type {', '.join(kinds)}; {ADVICE}"
    return _explain_strings(series[series.notna()], zoned[series.notna().to_numpy()])


def _explain_strings(values: pd.Series, zoned: np.ndarray) -> str | None:
    parsed = pd.to_datetime(values, utc=True, format="ISO8601", errors="coerce")
    unparsed = values[parsed.isna()]
    in_range = unparsed.map(_is_iso_time)  # ISO 8601 that pandas' nanoseconds cannot hold
    if not in_range.all():
        other = unparsed[~in_range]
        return f"{len(other)} value(s) that are not ISO 8601 times, e.g. {_examples(other)}; " \
            f"{ADVICE}"
    naive = values[~zoned]
    if len(naive):
        return (f"{len(naive)} value(s) without a UTC offset, e.g. {_examples(naive)}; "
                f"the zone is not guessed: {ADVICE}")
    return _out_of_range(unparsed) if len(unparsed) else None


def _out_of_range(values: pd.Series) -> str:
    return (f"{len(values)} value(s) outside {EARLIEST:%Y-%m-%d} to {LATEST:%Y-%m-%d}, the "
            f"nanosecond range that Feast and training compute in, e.g. {_examples(values)}")


def _is_iso_time(value: str) -> bool:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _zoned(series: pd.Series) -> np.ndarray | None:
    """Per value, whether it is a string ending in a time with a zone (a null counts as
    zoned: the null check reports it); None when a value is not a string at all."""
    if not (pd.api.types.is_object_dtype(series) or pd.api.types.is_string_dtype(series)):
        return None
    try:
        text = pa.array(series, type=pa.string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # an int, a float, a datetime among strings
        return None
    matched = pc.fill_null(pc.match_substring_regex(text, _OFFSET), True)
    return matched.to_numpy(zero_copy_only=False)


def _examples(values: pd.Series) -> str:
    return ", ".join(repr(v) for v in values.drop_duplicates().head(EXAMPLES).tolist())
