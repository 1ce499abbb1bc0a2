"""Monitoring of what is served: distribution drift of a model's recent inputs and
predictions against its training set (``drift``, on Evidently, with its HTML report), each
team's drift policy (``policy``), one drift check of a served model (``check``), and the
promote-or-roll-back decision from a service's live numbers (``promotion``).

``drift`` and ``policy`` import only ``mlops.atomic_files`` and ``mlops.config`` of mlops;
``check`` reaches the data, the registry, the features store and the serving predictor,
``promotion`` a service's admin routes (``mlops.serving.deploy`` finds a local one), so
the package sits beside ``pipeline``, over ``serving``. Nothing here imports Evidently
until ``drift`` is imported, since Evidently is slow to load.

Utilisation: ``prometheus`` reads series from Prometheus' HTTP API; ``anomaly`` holds the
causal detectors (idle GPUs with work queued, a throughput collapse, memory growing
towards its limit, a latency spike, a stalled run) on a robust baseline; ``watch`` turns
Prometheus' series into their inputs and their findings into events; ``report`` draws the
Grafana dashboards' panels as PNG from Prometheus' data (the only importer of matplotlib).
"""
