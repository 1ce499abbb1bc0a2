"""Feast object declarations, one module per kind, built from a dataset (``dataset.Dataset``).

Like the ``feast init`` template (entities, sources, feature views, feature services), but
every object is made by a function of the dataset spec and the offline source path, so
any dataset with an entity and a timestamp gets its own Feast objects without code
changes. ``mlops.features.store`` applies them programmatically; the runtime
``feature_store.yaml`` is rendered per dataset under the data directory from the
templates in this folder (``*.template.yaml``), because the paths live there. This
folder's own ``feature_store.yaml`` and ``default_dataset.py`` are the default dataset's
store for Feast's CLI run here; the platform never imports ``default_dataset``.
Importing this package imports Feast (seconds); import it only where Feast is needed.
"""

from feature_repo.repo import TEMPLATE, definitions

__all__ = ["TEMPLATE", "definitions"]
