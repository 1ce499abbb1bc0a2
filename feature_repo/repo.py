"""All of one dataset's Feast objects, gathered in apply order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from feature_repo.dataset import Dataset
from feature_repo.entities import entity_for
from feature_repo.feature_services import feature_service_for
from feature_repo.feature_views import feature_view_for
from feature_repo.sources import source_for, source_schema

# Not feature_store.yaml: that name is the default dataset's store, for Feast's CLI here.
TEMPLATE = Path(__file__).parent / "feature_store.template.yaml"
PRODUCTION_TEMPLATE = Path(__file__).parent / "feature_store.production.template.yaml"


def definitions(spec: Dataset, source_path: str | Path,
                s3_endpoint: str | None = None) -> list[Any]:
    """Entity, source, feature view and feature service; types come from the source schema.

    Raises ValueError naming the column when the source lacks one or types it wrongly.
    """
    schema = source_schema(source_path)
    entity = entity_for(spec, schema)
    source = source_for(spec, source_path, s3_endpoint)
    view = feature_view_for(spec, entity, source, schema)
    return [entity, source, view, feature_service_for(spec, view)]
