"""A seeded synthetic panel (entities x timestamps) for tests and benchmarks."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlops.config import DatasetSpec, TaskType


def synthetic_spec(path: str, task: TaskType = TaskType.classification, n_features: int = 4,
                   name: str = "synthetic") -> DatasetSpec:
    """The spec that describes what ``generate_panel`` writes."""
    return DatasetSpec(
        name=name, path=path, entity="entity_id", timestamp="event_timestamp",
        features=[f"f{i}" for i in range(n_features)], label="label", task=task,
    )


def generate_panel(n_entities: int = 100, n_periods: int = 8, n_features: int = 4,
                   task: TaskType = TaskType.classification, seed: int = 0,
                   drift: float = 0.0, corruption: float = 0.0,
                   start: str = "2020-01-01", freq: str = "7D") -> pd.DataFrame:
    """One row per (entity, period) with a learnable label.

    drift shifts the feature means linearly over time (in standard deviations by the last
    period); corruption is the fraction of feature cells set to NaN, for bad-data tests.
    """
    rng = np.random.default_rng(seed)
    rows = n_entities * n_periods
    times = pd.date_range(start, periods=n_periods, freq=freq, tz="UTC")
    period = np.tile(np.arange(n_periods), n_entities)
    features = rng.normal(size=(rows, n_features))
    if n_periods > 1:
        features += drift * (period / (n_periods - 1))[:, None]
    weights = np.linspace(1.0, -1.0, n_features)
    signal = features @ weights + 0.3 * rng.normal(size=rows)
    label = (signal > 0).astype("int64") if task == TaskType.classification else signal
    frame = pd.DataFrame(features, columns=[f"f{i}" for i in range(n_features)])
    if corruption > 0:
        frame = frame.mask(rng.random(frame.shape) < corruption)
    frame.insert(0, "entity_id", np.repeat(np.arange(1, n_entities + 1), n_periods))
    frame.insert(1, "event_timestamp", times[period])
    frame["label"] = label
    return frame
