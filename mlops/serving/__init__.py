"""The CPU inference service: entry point (``python -m mlops.serving``), app, Open
Inference Protocol (v2) and plain JSON (v1) payloads, body parsing, batching, the ONNX
Runtime predictor, the model manager, middleware, metrics, access log, a client, and the
deploy stage's process control.

May import ``mlops.config``, ``mlops.registry``, ``mlops.processes``, ``mlops.data`` (the
client's example rows) and ``mlops.features.online`` (predict-by-entity). Never torch,
Prefect, Great Expectations or Dask: the service image carries none of them.
"""
