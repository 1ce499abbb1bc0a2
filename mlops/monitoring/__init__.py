"""Monitoring of what is served: distribution drift of a model's recent inputs and
predictions against its training set (``drift``, on Evidently, with its HTML report), each
team's drift policy (``policy``), one drift check of a served model (``check``), and the
promote-or-roll-back decision from a service's live numbers (``promotion``).

``drift``, ``policy`` and ``promotion`` import only ``mlops.atomic_files`` and ``mlops.config`` of mlops;
``check`` reaches the data, the registry, the features store and the serving predictor,
so the package sits beside ``pipeline``, over ``serving``. Nothing here imports Evidently
until ``drift`` is imported, since Evidently is slow to load.
"""
