"""Seeded synthetic panels (entities x timestamps) for tests and benchmarks: in memory, or
written as a partitioned parquet dataset, chunk by chunk, and cached.

Each partition is one ``generate_panel`` call (seeded by the dataset seed and the partition
index) whose entity ids are shifted past the previous partitions', so the whole dataset has
the columns ``synthetic_spec`` describes and unique (entity, timestamp) keys, and never more
than one partition is in memory. A marker file written last records what the folder holds:
a second call with the same arguments returns at once.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel

from mlops.atomic_files import write_atomic
from mlops.config import DatasetSpec, TaskType

log = logging.getLogger(__name__)
MARKER = "_DATASET.json"
PERIODS = 100  # timestamps per entity; a partition holds whole entities


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


CONTINENTS = ["Africa", "Asia", "Europe", "North America", "Oceania", "South America"]


def mixed_spec(path: str, task: TaskType = TaskType.classification,
               name: str = "mixed") -> DatasetSpec:
    """The spec of ``generate_mixed_panel``: a string category, an integer-coded one, a
    nullable number and two plain numbers."""
    return DatasetSpec(
        name=name, path=path, entity="entity_id", timestamp="event_timestamp",
        features=["continent", "occupation", "hours", "f0", "f1"],
        categorical=["continent", "occupation"], nullable=["hours", "occupation"],
        label="label", task=task,
    )


def generate_mixed_panel(n_entities: int = 100, n_periods: int = 8,
                         task: TaskType = TaskType.classification, seed: int = 0,
                         start: str = "2020-01-01", freq: str = "7D") -> pd.DataFrame:
    """A panel whose label depends on the categories as much as on the numbers; hours is
    null in about a tenth of the rows and occupation (codes 1-9) in a twentieth."""
    rng = np.random.default_rng(seed)
    rows = n_entities * n_periods
    times = pd.date_range(start, periods=n_periods, freq=freq, tz="UTC")
    period = np.tile(np.arange(n_periods), n_entities)
    continent = rng.integers(0, len(CONTINENTS), rows)
    occupation = rng.integers(1, 10, rows)
    hours = rng.normal(40.0, 8.0, rows)
    numbers = rng.normal(size=(rows, 2))
    signal = (np.linspace(-1.5, 1.5, len(CONTINENTS))[continent] + 0.25 * (occupation - 5)
              + 0.05 * (hours - 40) + numbers @ [1.0, -0.5] + 0.3 * rng.normal(size=rows))
    frame = pd.DataFrame({
        "entity_id": np.repeat(np.arange(1, n_entities + 1), n_periods),
        "event_timestamp": times[period],
        "continent": np.asarray(CONTINENTS, dtype=object)[continent],
        "occupation": pd.array(occupation, dtype="Int64"),
        "hours": np.where(rng.random(rows) < 0.1, np.nan, hours),
        "f0": numbers[:, 0], "f1": numbers[:, 1],
        "label": _label(signal, task),
    })
    frame.loc[rng.random(rows) < 0.05, "occupation"] = pd.NA
    return frame


GRADES = ["low", "middle", "high"]  # generate_mixed_panel's multiclass label


def shift_mixed_panel(frame: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """``generate_mixed_panel``'s rows as the world moved on: f0 and hours shifted up, and
    most rows now from one continent (the drift a drift check must see)."""
    rng = np.random.default_rng(seed)
    shifted = frame.copy()
    shifted["f0"] = shifted["f0"] + 2.0
    shifted["hours"] = shifted["hours"] + 15.0
    moved = rng.random(len(shifted)) < 0.7
    shifted.loc[moved, "continent"] = CONTINENTS[-1]
    return shifted


def request_records(frame: pd.DataFrame, features: list[str]) -> list[dict]:
    """Rows as v1 ``records`` a client sends: JSON values, null for a missing one."""
    values = frame[features].astype(object).where(frame[features].notna(), None)
    return [{name: (value.item() if hasattr(value, "item") else value)
             for name, value in zip(features, row, strict=True)}
            for row in values.itertuples(index=False)]


def _label(signal: np.ndarray, task: TaskType) -> np.ndarray:
    """0/1 for classification, a grade by tercile of the signal for multiclass, else it."""
    if task == TaskType.classification:
        return (signal > 0).astype("int64")
    if task == TaskType.multiclass:
        cuts = np.quantile(signal, [1 / 3, 2 / 3])
        return np.asarray(GRADES, dtype=object)[np.digitize(signal, cuts)]
    return signal


class PartitionedPanel(BaseModel):
    """What a partitioned synthetic dataset holds; also its cache key (the marker file)."""

    rows: int
    partition_rows: int
    seed: int = 0
    n_features: int = 4
    bad_partitions: list[int] = []
    duplicate_into: int | None = None

    @property
    def partitions(self) -> int:
        return math.ceil(self.rows / self.partition_rows)


def partition_name(index: int) -> str:
    """The file name of partition ``index``; sorting names sorts partitions."""
    return f"part-{index:05d}.parquet"


def write_partitioned_panel(root: str | Path, rows: int, partition_rows: int = 1_000_000,
                            seed: int = 0, n_features: int = 4,
                            bad_partitions: Sequence[int] = (),
                            duplicate_into: int | None = None) -> PartitionedPanel:
    """Write ``rows`` rows under ``root`` as parquet partitions, unless already there.

    ``bad_partitions`` get one null entity id and one infinite ``f0`` each (row-level
    failures); ``duplicate_into`` copies partition 0's first key into that partition's
    first row (a duplicate only a cross-partition check can see). Both are for tests.
    """
    if rows < 1 or partition_rows < PERIODS:
        raise ValueError(f"need rows >= 1 and partition_rows >= {PERIODS}")
    panel = PartitionedPanel(rows=rows, partition_rows=partition_rows, seed=seed,
                             n_features=n_features, bad_partitions=sorted(bad_partitions),
                             duplicate_into=duplicate_into)
    folder = Path(root)
    marker = folder / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == panel.model_dump():
        log.info("%s already holds %d rows; not regenerated", folder, rows)
        return panel
    marker.unlink(missing_ok=True)
    for stale in folder.glob("part-*.parquet"):
        stale.unlink()
    for index in range(panel.partitions):
        frame = _partition(panel, index)
        write_atomic(folder / partition_name(index),
                     lambda tmp, frame=frame: frame.to_parquet(tmp, index=False))
    write_atomic(marker, lambda tmp: tmp.write_text(json.dumps(panel.model_dump())))
    log.info("wrote %d rows in %d partitions under %s", rows, panel.partitions, folder)
    return panel


def _partition(panel: PartitionedPanel, index: int) -> pd.DataFrame:
    """Partition ``index``: whole entities of PERIODS rows, cut to the dataset's last row."""
    first_row = index * panel.partition_rows
    size = min(panel.partition_rows, panel.rows - first_row)
    entities_per_partition = math.ceil(panel.partition_rows / PERIODS)
    frame = generate_panel(n_entities=math.ceil(size / PERIODS), n_periods=PERIODS,
                           n_features=panel.n_features, seed=panel.seed * 1_000_003 + index,
                           start="2020-01-01", freq="1D").iloc[:size]
    frame["entity_id"] += index * entities_per_partition
    if index in panel.bad_partitions:
        frame["entity_id"] = frame["entity_id"].astype("float64")
        frame.loc[frame.index[0], "entity_id"] = np.nan
        frame.loc[frame.index[-1], "f0"] = np.inf
    if panel.duplicate_into == index and index > 0:
        first = _partition(panel.model_copy(update={"duplicate_into": None}), 0).iloc[0]
        frame.loc[frame.index[0], ["entity_id", "event_timestamp"]] = [
            first["entity_id"], first["event_timestamp"]]
    return frame.reset_index(drop=True)
