"""The kind of data each column holds, and where partitions of one dataset disagree.

Each partition of a partitioned dataset can pass the suite alone while the dataset does not:
entity ids that are integers in one file and strings in another make two keys of one
entity, and the folder no longer reads as one table (pyarrow refuses to merge the files).
Kinds are coarse on purpose: int64 in one partition and float32 in another are both
numbers, which preparation turns into float32 alike. Pure: nothing here reads files.
"""

from __future__ import annotations

from collections import defaultdict

import pandas as pd

from mlops.data.validation import FailedExpectation

SAME_KINDS = "expect_partitions_to_agree_on_column_kinds"


def column_kind(series: pd.Series) -> str:
    """number, time with zone, naive time, text, or the dtype's name for anything else."""
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
        return "number"
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        return "time with zone"
    if pd.api.types.is_datetime64_dtype(series):
        return "naive time"
    if pd.api.types.is_object_dtype(series) or pd.api.types.is_string_dtype(series):
        return "text"
    return str(series.dtype)


def column_kinds(frame: pd.DataFrame, columns: list[str]) -> dict[str, str]:
    """The kind of each of ``columns`` that the frame has (a missing one is not a kind)."""
    if frame.columns.has_duplicates:
        return {}  # the suite refuses such a partition; a name would not say which column
    return {c: column_kind(frame[c]) for c in columns if c in frame.columns}


def kind_drift(kinds: dict[int, dict[str, str]]) -> dict[str, dict[str, list[int]]]:
    """Columns whose kind differs between partitions: column -> kind -> partition indices,
    the most common kind first (ties: the kind of the lowest partition)."""
    seen: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for index in sorted(kinds):
        for column, kind in kinds[index].items():
            seen[column][kind].append(index)
    return {column: dict(sorted(by_kind.items(), key=lambda item: (-len(item[1]), item[1][0])))
            for column, by_kind in seen.items() if len(by_kind) > 1}


def kind_failures(kinds: dict[int, dict[str, str]]
                  ) -> list[tuple[FailedExpectation, list[int]]]:
    """One failure per drifting column ("number in partitions [0, 1]; text in partitions
    [2]"), with the partitions to blame: those not of the most common kind."""
    failures = []
    for column, by_kind in kind_drift(kinds).items():
        observed = "; ".join(f"{kind} in partitions {parts}" for kind, parts in by_kind.items())
        failure = FailedExpectation(expectation=SAME_KINDS, kwargs={"column": column},
                                    observed=observed)
        failures.append((failure, [i for parts in list(by_kind.values())[1:] for i in parts]))
    return failures
