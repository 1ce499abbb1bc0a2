"""The FastAPI floor of the serving benchmark: the service's HTTP stack with no model behind it.

FastAPI on uvicorn, started exactly as ``mlops.serving.server`` starts it (``uvicorn.run(app, host,
port, log_config=None, access_log=False)``; uvloop and httptools are installed, so uvicorn
picks them). The predict routes take the same POSTs as the service and answer a constant
JSON body without reading or parsing the request: whatever the service spends above this
floor is its own work (parsing, validation, inference, serialisation). The bare ASGI floor
(``benchmarks.asgi_floor``) is the same answer without FastAPI: the server's own ceiling.

``python -m benchmarks.http_floor --port 8099``
"""

from __future__ import annotations

import argparse
import json

import uvicorn
from fastapi import FastAPI
from fastapi.responses import Response

OIP_BODY = json.dumps({"model_name": "floor", "outputs": [
    {"name": "prediction", "shape": [1], "datatype": "FP32", "data": [0.5]}]}).encode()
V1_BODY = json.dumps({"model": "floor", "version": "0", "predictions": [0.5],
                      "labels": [1]}).encode()
READY_BODY = b'{"status": "ready"}'


def _json(body: bytes) -> Response:
    return Response(content=body, media_type="application/json")


def create_app() -> FastAPI:
    app = FastAPI(title="FastAPI floor")

    @app.get("/ready")
    @app.get("/v2/health/ready")
    async def ready() -> Response:
        return _json(READY_BODY)

    @app.post("/v2/models/{name}/infer")
    async def infer(name: str) -> Response:
        return _json(OIP_BODY)

    @app.post("/v1/predict")
    async def predict() -> Response:
        return _json(V1_BODY)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(create_app(), host=args.host, port=args.port, log_config=None,
                access_log=False)


if __name__ == "__main__":
    main()
