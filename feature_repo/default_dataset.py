"""The default dataset's Feast objects, for Feast's CLI in this folder (`feast plan`,
`feast apply`) with the feature_store.yaml beside this file.

The platform never imports this module: it declares every dataset's objects with
``repo.definitions`` and applies them itself (``mlops.features.store``). Feast's CLI
imports each file of its repo as a top-level module (``default_dataset``); only then does
this module read the default spec, write the offline source if it is missing and declare
the objects, so importing it as ``feature_repo.default_dataset`` does nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from feature_repo.repo import definitions

# The checkout's root: feature_store.yaml's relative paths lead to its data/ folder.
ROOT = Path(__file__).resolve().parent.parent
SPEC_PATH = ROOT / "mlops" / "specs" / "wage_panel.yaml"
BUILTIN = "builtin://wage_panel"


@dataclass(frozen=True)
class DefaultDataset:
    """What Feast's objects need of the spec (a ``dataset.Dataset``)."""

    name: str
    entity: str
    timestamp: str
    features: tuple[str, ...]


def read_spec(path: Path = SPEC_PATH) -> DefaultDataset:
    """The default spec's fields, read as plain YAML: this package imports nothing of mlops
    (whose ``load_spec`` validates it), so the spec file is read, not imported."""
    raw = yaml.safe_load(path.read_text())
    if raw.get("path") != BUILTIN:
        raise ValueError(f"{path}: default_dataset.py knows only {BUILTIN}, not "
                         f"{raw.get('path')!r}; give Feast a rendered store with -f instead")
    return DefaultDataset(raw["name"], raw["entity"], raw["timestamp"],
                          tuple(raw["features"]))


def source_path(spec: DefaultDataset, root: Path = ROOT) -> Path:
    """Where the features stage writes the offline source (under the default data
    directory), so that after a pipeline run `feast plan` compares the same objects."""
    return root / "data" / "features" / spec.name / "source.parquet"


def ensure_source(spec: DefaultDataset, path: Path) -> Path:
    """The offline source, written when missing: Feast reads its schema (the feature types)
    and checks that it exists. Same rows and types as the features stage writes from the
    builtin dataset (``mlops.data.loading``, ``source_frame``), checked by
    tests/unit/test_feast_cli.py; the stage overwrites it on its next run."""
    if path.is_file():
        return path
    from linearmodels.datasets import wage_panel

    frame = wage_panel.load()
    # One row per person-year: the event happens at the start of that year.
    frame[spec.timestamp] = pd.to_datetime(frame.pop("year").astype(str), utc=True)
    rows = frame[[spec.entity, spec.timestamp, *spec.features]]
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    rows.to_parquet(partial, index=False)
    os.replace(partial, path)  # a concurrent reader sees the whole file or none
    return path


if not __package__:  # imported by Feast's CLI (a top-level module), never by the platform
    _spec = read_spec()
    entity, source, view, service = definitions(_spec, ensure_source(_spec, source_path(_spec)))
