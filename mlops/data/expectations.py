"""The expectation suite for a dataset spec: pure, so it can be inspected and tested alone.

Spec-derived checks come first (schema, nulls outside the nullable features, types
(numbers, or strings and integer codes for categorical features), finiteness, label domain, unique
entity-timestamp pairs, entity ids of one type, event times inside the nanosecond range
and not in the future), then the rules the spec declares.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from mlops.config import DatasetSpec, TaskType
from mlops.data.timestamps import EARLIEST

if TYPE_CHECKING:
    from great_expectations.expectations import Expectation

INTEGER_TYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]
NUMERIC_TYPES = [*INTEGER_TYPES, "float16", "float32", "float64"]
# Entity ids are one type: integers (numpy's, or pandas' nullable Int64) or strings (str
# values in an object column, or pandas' string dtype). Floats are no exact keys, and a mix
# of 1 and "1" would be two entities; GE checks an object column value by value.
ENTITY_TYPES = [*INTEGER_TYPES, "Int64Dtype", "str", "StringDtype"]
# A category is a string or an integer code (floats where pandas read codes with nulls).
CATEGORY_TYPES = [*ENTITY_TYPES, "float16", "float32", "float64"]
# Finite means inside float32's range, the precision training and serving compute in: a
# value that float64 holds (1e39) would pass here and turn into infinity in the model. NaN
# is a null and is checked separately.
FLOAT_MAX = 3.4028234663852886e38


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
    suite += [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in spec.columns
              if c not in spec.nullable]
    suite += [
        gxe.ExpectCompoundColumnsToBeUnique(column_list=[spec.entity, spec.timestamp]),
        gxe.ExpectColumnValuesToBeInTypeList(column=spec.entity, type_list=ENTITY_TYPES),
        # Pandas reports tz-aware datetime columns as Timestamp, naive ones as datetime64.
        gxe.ExpectColumnValuesToBeOfType(column=spec.timestamp, type_="Timestamp"),
        # A parquet file may hold year 1 in microseconds; Feast and training cannot.
        gxe.ExpectColumnMinToBeBetween(column=spec.timestamp, min_value=EARLIEST),
        gxe.ExpectColumnMaxToBeBetween(column=spec.timestamp, max_value=now),
    ]
    numeric = ([*spec.numeric_features, spec.label] if spec.task == TaskType.regression
               else list(spec.numeric_features))
    suite += [gxe.ExpectColumnValuesToBeInTypeList(column=c, type_list=CATEGORY_TYPES)
              for c in spec.categorical]
    for column in numeric:
        suite += [
            gxe.ExpectColumnValuesToBeInTypeList(column=column, type_list=NUMERIC_TYPES),
            gxe.ExpectColumnValuesToBeBetween(column=column, min_value=-FLOAT_MAX,
                                              max_value=FLOAT_MAX),
        ]
    if spec.task == TaskType.classification:
        suite.append(gxe.ExpectColumnValuesToBeInSet(column=spec.label, value_set=[0, 1]))
    if spec.task == TaskType.multiclass:  # classes: integer codes or strings
        suite.append(gxe.ExpectColumnValuesToBeInTypeList(column=spec.label,
                                                          type_list=CATEGORY_TYPES))
    if spec.task != TaskType.regression:
        suite.append(gxe.ExpectColumnUniqueValueCountToBeBetween(column=spec.label,
                                                                 min_value=2))
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
