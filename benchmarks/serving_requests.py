"""What the serving benchmark sends, per request kind and server API, and how one answer is
checked before a server is loaded (200 and one prediction per row, else the bench stops).

Kinds: ``1-row`` and ``64-row`` (JSON over REST), ``1-row binary`` and ``64-row binary``
(the Open Inference Protocol's binary tensor extension: JSON header, then the raw
little-endian float32 rows), ``entity`` (predict-by-entity, our service only), ``gRPC
1-row`` and ``gRPC 64-row`` (ModelInfer with ``raw_input_contents``, as tritonclient sends
it). Every server gets the same rows of the dataset.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

ROW_COUNTS = {"1-row": 1, "64-row": 64}
BINARY_KINDS = {f"{kind} binary": n for kind, n in ROW_COUNTS.items()}
GRPC_KINDS = {f"gRPC {kind}": n for kind, n in ROW_COUNTS.items()}
ENTITY_PATH = "/v1/predict/entity"
BINARY_HEADER = "Inference-Header-Content-Length"
INPUT, OUTPUT = "features", "prediction"


@dataclass(frozen=True)
class Request:
    """One request kind as one server gets it: route, body and headers, and the number of
    predictions a correct answer holds (``constant`` servers answer any number)."""

    kind: str
    path: str
    body: bytes
    rows: int
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    grpc: bool = False


@dataclass(frozen=True)
class Payloads:
    """The dataset's feature names and rows, and one entity id that exists."""

    names: list[str]
    rows: list[list[float]]
    entity_id: Any


def oip_body(names: list[str], rows: list[list[float]]) -> dict[str, Any]:
    return {"inputs": [{"name": INPUT, "shape": [len(rows), len(names)], "datatype": "FP32",
                        "data": [v for row in rows for v in row]}]}


def mlflow_body(names: list[str], rows: list[list[float]]) -> dict[str, Any]:
    return {"inputs": {INPUT: rows}}  # the signature's one tensor input, by name


def binary_body(names: list[str], rows: list[list[float]]) -> tuple[bytes, dict[str, str]]:
    """JSON header then the raw rows; the header's length goes in its own HTTP header."""
    raw = np.asarray(rows, dtype="<f4").tobytes()
    header = json.dumps({
        "inputs": [{"name": INPUT, "shape": [len(rows), len(names)], "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)}}],
        "outputs": [{"name": OUTPUT, "parameters": {"binary_data": True}}]}).encode()
    return header + raw, {"Content-Type": "application/octet-stream",
                          BINARY_HEADER: str(len(header))}


def grpc_message(model: str, names: list[str], rows: list[list[float]]) -> bytes:
    """A serialized ModelInferRequest (tritonclient's copy of the protocol: same fields)."""
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name=INPUT, datatype="FP32")
    tensor.shape.extend([len(rows), len(names)])
    request.raw_input_contents.append(np.asarray(rows, dtype="<f4").tobytes())
    return request.SerializeToString()


def build(kind: str, api: str, model: str, payloads: Payloads) -> Request:
    """The request of one kind for a server speaking ``api`` (``v2`` or ``mlflow``)."""
    count = {**ROW_COUNTS, **BINARY_KINDS, **GRPC_KINDS, "entity": 1}[kind]
    names, rows = payloads.names, payloads.rows[:count]
    route = "/invocations" if api == "mlflow" else f"/v2/models/{model}/infer"
    if kind == "entity":
        body = json.dumps({"entity_ids": [payloads.entity_id]}).encode()
        return Request(kind, ENTITY_PATH, body, 1)
    if kind in GRPC_KINDS:
        return Request(kind, "", grpc_message(model, names, rows), count, {}, grpc=True)
    if kind in BINARY_KINDS:
        body, headers = binary_body(names, rows)
        return Request(kind, route, body, count, headers)
    make: Callable[..., dict[str, Any]] = mlflow_body if api == "mlflow" else oip_body
    return Request(kind, route, json.dumps(make(names, rows)).encode(), count)


def count_predictions(response: httpx.Response) -> int:
    """Predictions in an OIP (JSON or binary), /v1 or mlflow answer (0 when it holds none)."""
    length = response.headers.get(BINARY_HEADER)
    try:
        body = json.loads(response.content[:int(length)] if length else response.content)
    except ValueError:
        return 0
    if isinstance(body, dict) and body.get("outputs"):
        output = body["outputs"][0]
        size = (output.get("parameters") or {}).get("binary_data_size")
        return size // 4 if length and size else len(output.get("data", []))
    preds = body.get("predictions") if isinstance(body, dict) else None
    if isinstance(preds, dict):  # mlflow: {"predictions": {"<output>": [...]}}
        preds = next(iter(preds.values()), None)
    return len(preds) if isinstance(preds, list) else 0


def check_rest(url: str, request: Request, constant: bool, verify: Any = True) -> None:
    """One request: 200 and one prediction per row (a constant server: any), else stop."""
    response = httpx.post(url + request.path, content=request.body, headers=request.headers,
                          timeout=30.0, verify=verify)
    found = count_predictions(response)
    if response.status_code != 200 or found != request.rows and not (constant and found):
        raise SystemExit(f"POST {url}{request.path} ({request.kind}): HTTP "
                         f"{response.status_code}, {found} predictions; body: "
                         f"{response.content[:500]!r}")


def call_grpc(address: str, message: bytes) -> tuple[bytes | None, str]:
    """The exact bytes h2load sends, as one ModelInfer call: the reply (None on error) and
    the call's status name, read from its trailers."""
    import grpc

    with grpc.insecure_channel(address) as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        try:
            reply, call = infer.with_call(message, timeout=30.0)
        except grpc.RpcError as exc:
            return None, f"{exc.code().name}: {exc.details()}"
    return reply, call.code().name


def count_grpc_predictions(reply: bytes) -> int:
    from tritonclient.grpc import service_pb2

    answer = service_pb2.ModelInferResponse.FromString(reply)
    if answer.raw_output_contents:
        return len(answer.raw_output_contents[0]) // 4
    return len(answer.outputs[0].contents.fp32_contents) if answer.outputs else 0


def check_grpc(address: str, request: Request, model: str) -> int:
    """tritonclient.grpc's infer (a standard client) with the request's rows, then the
    request's exact message: OK and one prediction per row from both, else stop. Returns
    the framed reply's length, which every call under load must bring (``h2load``)."""
    import tritonclient.grpc as triton
    from tritonclient.grpc import service_pb2

    sent = service_pb2.ModelInferRequest.FromString(request.body)
    matrix = np.frombuffer(sent.raw_input_contents[0], "<f4").reshape(list(sent.inputs[0].shape))
    features = triton.InferInput(INPUT, list(matrix.shape), "FP32")
    features.set_data_from_numpy(matrix)
    with triton.InferenceServerClient(address) as client:
        found = len(client.infer(model, [features]).as_numpy(OUTPUT).reshape(-1))
    reply, status = call_grpc(address, request.body)
    counted = count_grpc_predictions(reply) if reply is not None else 0
    if {found, counted} != {request.rows} or status != "OK":
        raise SystemExit(f"gRPC ModelInfer at {address} ({request.kind}): {status}, "
                         f"{found} predictions (tritonclient), {counted} (raw call)")
    return 5 + len(reply or b"")
