"""What the Feast declarations read of a dataset: its name, entity, timestamp and features.

A Protocol, so the platform's ``DatasetSpec`` (or any object with these attributes) is
passed as it is: this package only declares Feast objects and imports nothing of the
platform, which only uses them (``mlops.features``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Dataset(Protocol):
    name: str  # the Feast project, and the prefix of every object's name
    entity: str  # the entity column: the entity's name and join key
    timestamp: str  # the event timestamp column
    features: Sequence[str]  # the feature columns, in model order
