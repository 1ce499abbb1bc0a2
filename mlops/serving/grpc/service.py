"""The six calls of ``inference.GRPCInferenceService`` over the REST app's own parts.

The service shares the app's model manager (each call takes the predictor serving at its
start, so a hot swap is seen by the next call), its inference runner (the same row bound
and micro-batches as REST's requests) and its metrics. Checks and messages are REST's
(``mlops.serving.app``): a bad request is INVALID_ARGUMENT with the message REST's 400
carries, an unknown model or version NOT_FOUND, no model UNAVAILABLE, a full queue
RESOURCE_EXHAUSTED (``retry-after`` in the trailing metadata). An unexpected error is
logged with its stack and answered INTERNAL "internal error".

Requests are parsed by the service's own deserializer: grpc's default answers bytes that
are not the message with UNKNOWN and the parser's exception name; here they are
INVALID_ARGUMENT naming the message type.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message

from mlops.serving import v2_protocol as v2
from mlops.serving.app import ServingConfig
from mlops.serving.batching import InferenceRunner, Overloaded
from mlops.serving.canary import Canary
from mlops.serving.errors import BadInput, BatchTooLarge, NotReady, UnknownModel
from mlops.serving.grpc import grpc_predict_v2_pb2 as pb
from mlops.serving.grpc.contents import infer_response, raw_feature_inputs, request_matrix
from mlops.serving.metrics import ServiceMetrics
from mlops.serving.model_manager import ModelManager
from mlops.serving.predictor import OnnxPredictor
from mlops.serving.raw_features import tensors_matrix
from mlops.serving.tensors import output_arrays, select_outputs
from mlops.serving.v1_payloads import scores_to_labels

log = logging.getLogger(__name__)
SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
# A request over the row bound cannot succeed by retrying, unlike a full queue.
STATUS_BY_ERROR: dict[type[Exception], grpc.StatusCode] = {
    BadInput: grpc.StatusCode.INVALID_ARGUMENT, BatchTooLarge: grpc.StatusCode.INVALID_ARGUMENT,
    UnknownModel: grpc.StatusCode.NOT_FOUND, NotReady: grpc.StatusCode.UNAVAILABLE,
    Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
}
Call = Callable[[Any], Awaitable[Message]]
# The probes, as REST's /v2/health/* are: not counted in flight (not workload).
NOT_IN_FLIGHT = frozenset({"ServerLive", "ServerReady"})


@dataclass(frozen=True)
class ServiceParts:
    """What the gRPC service shares with the REST app (``parts_of`` reads them from it)."""

    manager: ModelManager
    runner: InferenceRunner
    metrics: ServiceMetrics
    config: ServingConfig
    server: v2.ServerMetadata
    not_ready: Callable[[], str | None]  # why the service is not ready, None when it is
    canary: Canary | None = None  # the challenger's share of entities (REST's too)


def served(manager: ModelManager, name: str, version: str) -> OnnxPredictor:
    """The predictor serving now, checked as REST checks it (an empty version: any)."""
    predictor = manager.current
    if predictor is None:
        raise NotReady("no model loaded")
    if name != predictor.name:
        raise UnknownModel(f"model {name!r} is not served here; this service serves "
                           f"{predictor.name!r}")
    if version and version != predictor.version:
        raise UnknownModel(f"version {version!r} of {predictor.name!r} is not served; "
                           f"serving version {predictor.version}")
    return predictor


def request_entity(request: pb.ModelInferRequest) -> str | None:
    """The request's ``entity_id`` parameter (a string or an integer), for the canary."""
    if "entity_id" not in request.parameters:
        return None
    parameter = request.parameters["entity_id"]
    kind = parameter.WhichOneof("parameter_choice")
    return str(getattr(parameter, kind)) if kind in ("string_param", "int64_param",
                                                      "uint64_param") else None


class InferenceService:
    """The calls, each taking a parsed request and returning its response message."""

    def __init__(self, parts: ServiceParts) -> None:
        self.parts = parts

    async def ServerLive(self, request: pb.ServerLiveRequest) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.parts.not_ready() is None)

    async def ModelReady(self, request: pb.ModelReadyRequest) -> pb.ModelReadyResponse:
        served(self.parts.manager, request.name, request.version)
        return pb.ModelReadyResponse(ready=self.parts.not_ready() is None)

    async def ServerMetadata(self, request: pb.ServerMetadataRequest
                             ) -> pb.ServerMetadataResponse:
        server = self.parts.server
        return pb.ServerMetadataResponse(name=server.name, version=server.version,
                                         extensions=server.extensions)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest
                            ) -> pb.ModelMetadataResponse:
        p = served(self.parts.manager, request.name, request.version)
        meta = v2.model_metadata(p.name, p.version, p.feature_names, p.task, p.sha256,
                                 p.classes)
        tensors = lambda ts: [t.model_dump() for t in ts]  # noqa: E731
        return pb.ModelMetadataResponse(name=meta.name, versions=meta.versions,
                                        platform=meta.platform, inputs=tensors(meta.inputs),
                                        outputs=tensors(meta.outputs))

    async def ModelInfer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        predictor = served(self.parts.manager, request.model_name, request.model_version)
        canary = self.parts.canary
        if canary is not None and not request.model_version:
            predictor = canary.route(predictor, request_entity(request))
        wanted = select_outputs([o.name for o in request.outputs], predictor.task)
        max_batch = self.parts.config.max_batch
        matrix = (request_matrix(request, predictor.feature_names, max_batch)
                  if predictor.encoding is None else
                  tensors_matrix(raw_feature_inputs(request), predictor.encoding, max_batch))
        scores = await self.parts.runner.predict(predictor, matrix)
        labels = (scores_to_labels(scores, predictor.task, classes=predictor.classes)
                  if "label" in wanted else None)
        return infer_response(predictor.name, predictor.version, request.id,
                              output_arrays(wanted, scores, labels),
                              raw=len(request.raw_input_contents) > 0)


def _parser(message: type[Message]) -> Callable[[bytes], Message | DecodeError]:
    """A request deserializer that hands a parse failure to the call instead of raising."""
    def parse(data: bytes) -> Message | DecodeError:
        try:
            return message.FromString(data)
        except DecodeError as exc:
            return exc
    return parse


def _failure(exc: Exception) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]]:
    """The status, details and trailing metadata of a failed call."""
    code = next((code for kind, code in STATUS_BY_ERROR.items() if isinstance(exc, kind)),
                None)
    if code is None:
        log.error("internal error in a gRPC call", exc_info=exc)
        return grpc.StatusCode.INTERNAL, "internal error", ()
    trailers = (("retry-after", str(exc.retry_after_s)),) if isinstance(exc, Overloaded) else ()
    return code, f"{type(exc).__name__}: {exc}", trailers


def _handler(name: str, call: Call, message: type[Message], metrics: ServiceMetrics
             ) -> grpc.RpcMethodHandler:
    """One call wrapped: parse failures refused, errors mapped to status codes, counted
    (in flight too, on the loop grpc.aio runs it on, unless it is a probe)."""
    counted = name not in NOT_IN_FLIGHT

    async def handle(request: Message | DecodeError, context: grpc.aio.ServicerContext
                     ) -> Message:
        start = time.perf_counter()
        if counted:
            metrics.grpc_in_flight += 1
        try:
            if isinstance(request, DecodeError):
                raise BadInput(f"the request is not a valid {message.DESCRIPTOR.full_name} "
                               "message")
            response = await call(request)
        except asyncio.CancelledError:  # the client went away
            metrics.observe_grpc(name, "CANCELLED", time.perf_counter() - start)
            raise
        except Exception as exc:
            code, details, trailers = _failure(exc)
        else:
            metrics.observe_grpc(name, "OK", time.perf_counter() - start)
            return response
        finally:
            if counted:
                metrics.grpc_in_flight -= 1
        metrics.observe_grpc(name, code.name, time.perf_counter() - start)
        await context.abort(code, details, trailers)
        raise AssertionError("unreachable: abort raises")

    return grpc.unary_unary_rpc_method_handler(
        handle, request_deserializer=_parser(message),
        response_serializer=lambda response: response.SerializeToString())


def generic_handler(parts: ServiceParts) -> grpc.GenericRpcHandler:
    """The service's calls by method name, for ``server.add_generic_rpc_handlers``."""
    service = InferenceService(parts)
    handlers = {method.name: _handler(method.name, getattr(service, method.name),
                                      getattr(pb, method.input_type.name), parts.metrics)
                for method in SERVICE.methods}
    return grpc.method_handlers_generic_handler(SERVICE.full_name, handlers)
