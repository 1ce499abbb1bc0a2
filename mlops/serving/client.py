"""A small HTTP client for the inference service: what the CLI and the tests call."""

from __future__ import annotations

import httpx
import pandas as pd

from mlops.config import DatasetSpec
from mlops.data.loading import load_dataset


def example_record(spec: DatasetSpec) -> tuple[object, dict[str, float]]:
    """The dataset's latest row: its entity id and raw feature values."""
    frame = load_dataset(spec).sort_values(spec.timestamp)
    row = frame.iloc[-1]
    record = {name: _plain(row[name]) for name in spec.features}
    return _plain(row[spec.entity]), record


def predict_records(url: str, records: list[dict[str, float]], timeout: float = 10.0) -> dict:
    response = httpx.post(f"{url}/v1/predict", json={"records": records}, timeout=timeout)
    response.raise_for_status()
    return response.json()


def predict_entities(url: str, entity_ids: list[object], timeout: float = 10.0) -> dict:
    response = httpx.post(f"{url}/v1/predict/entity", json={"entity_ids": entity_ids},
                          timeout=timeout)
    response.raise_for_status()
    return response.json()


def _plain(value: object) -> object:
    """numpy scalars to JSON-friendly Python numbers; a null (NaN, NA, None) to None."""
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return None
    plain = value.item() if hasattr(value, "item") else value
    return None if isinstance(plain, float) and plain != plain else plain
