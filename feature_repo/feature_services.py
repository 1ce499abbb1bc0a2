"""The feature service a model version reads: ``<spec.name>_v<N>``."""

from __future__ import annotations

from feast import FeatureService, FeatureView

from feature_repo.dataset import Dataset

SERVICE_VERSION = 1


def feature_service_name(spec: Dataset, version: int = SERVICE_VERSION) -> str:
    return f"{spec.name}_v{version}"


def feature_service_for(spec: Dataset, view: FeatureView) -> FeatureService:
    return FeatureService(
        name=feature_service_name(spec),
        features=[view],
        description=f"Every feature of {spec.name}, in spec order, for model {spec.name}.",
        tags={"dataset": spec.name},
    )
