"""Plain words for a failed expectation whose cause GE's own result does not say.

"expect_column_values_to_be_of_type(column='event_timestamp', type_='Timestamp'):
observed int64" is true but leaves the reader to guess that epoch numbers are refused;
the hint says so, and what to write instead. Pure: reads the failing batch, writes nothing.
"""

from __future__ import annotations

import pandas as pd

from mlops.config import DatasetSpec, TaskType
from mlops.data.timestamps import explain_event_times

TIME_TYPE = "expect_column_values_to_be_of_type"
TIME_CHECKS = {
    TIME_TYPE,
    "expect_column_min_to_be_between",
    "expect_column_max_to_be_between",
}
TYPE_LIST = "expect_column_values_to_be_in_type_list"
IN_SET = "expect_column_values_to_be_in_set"
NOT_NULL = "expect_column_values_to_not_be_null"
ENTITY_RULE = "entity ids must be all integers or all strings"
LABEL_RULE = "a classification label must be 0/1 (True/False are read as 1/0)"


def hint_for(expectation: str, column: str | None, frame: pd.DataFrame,
             spec: DatasetSpec) -> str | None:
    """What the failure of ``expectation`` on ``column`` means in this batch, or None."""
    if column is None or column not in frame.columns:
        return None
    series = frame[column]
    if column == spec.timestamp and expectation in TIME_CHECKS:
        reason = explain_event_times(series)
    elif column == spec.entity and expectation == TYPE_LIST:
        reason = explain_entity_ids(series)
    elif column == spec.label and expectation == IN_SET and spec.task == TaskType.classification:
        reason = explain_labels(series)
    elif column in spec.features and expectation == NOT_NULL:
        reason = (f"{int(series.isna().sum())} null(s); if a missing value is expected there, "
                  "list the feature under 'nullable' in the spec (a number then takes the train "
                  "median, a category the unknown bucket)")
    else:
        return None
    return f"{column!r} holds {reason}" if reason else None


def explain_entity_ids(series: pd.Series) -> str:
    """Why a column cannot key entities: floats, booleans or a mix of types."""
    values = series.dropna()
    if pd.api.types.is_float_dtype(series):
        fractional = values[values != values.round()]
        if not len(fractional) and series.isna().any():
            return (f"float ids because {int(series.isna().sum())} are null (pandas reads an "
                    f"integer column with nulls as float); {ENTITY_RULE}")
        example = f" such as {fractional.tolist()[0]!r}" if len(fractional) else ""
        return f"float ids{example}, which are no exact keys; {ENTITY_RULE}"
    if pd.api.types.is_bool_dtype(series):
        return f"booleans; {ENTITY_RULE}"
    kinds = sorted({type(v).__name__ for v in values.tolist()})
    if len(kinds) > 1:
        return (f"ids of mixed types ({', '.join(kinds)}): 1 and '1' would be two entities; "
                f"{ENTITY_RULE}")
    return f"{', '.join(kinds) or series.dtype} ids; {ENTITY_RULE}"


def explain_labels(series: pd.Series) -> str:
    """Which label values are not classes, and why strings are not mapped."""
    values = series.dropna().tolist()
    strings = sorted({v for v in values if isinstance(v, str)})
    if strings:
        shown = ", ".join(repr(v) for v in strings[:5])
        return (f"strings ({shown}); {LABEL_RULE}: strings are not mapped, since which one "
                "is the positive class would be a guess")
    others = sorted({repr(v) for v in values if v not in (0, 1)})[:5]
    return f"values other than 0 and 1 ({', '.join(others)}); {LABEL_RULE}"
