"""The common v2 infer request answered by the HTTP protocol itself, batched per loop
iteration, without an ASGI task.

Per request, uvicorn builds an ASGI scope, a request-response cycle, an event and a task,
and the app adds its own layers; for a one-row inference of a small model that machinery
costs several times the work. The service's protocol (``mlops.serving.protocol``) offers
each complete ``POST /v2/models/{name}[/versions/{version}]/infer`` whose body is JSON
(declared so or not declared) to this lane. The lane parses and checks it with the same
functions as the app (``body.validated``, ``v2_protocol``; JSON tensors or the binary
tensor data extension), queues it, and at the end of
the loop iteration runs every queued request in one ONNX Runtime call per model version
and writes each response: what the app would answer, byte for byte in its body, with the
request id, metrics and access-log line the app's middleware would give it.

The lane takes only what it answers with a 200: a request it cannot take whole (a parse
or check error, a model call too long to run on the loop, a row bound
reached) goes to the app as if the lane did not exist, and the app gives
the answer and the error it always gives. So every behaviour stays the app's (a model
call that fails is answered as the app answers it: logged, a 500 "internal error").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httptools
import numpy as np
import orjson

from mlops.serving import v2_protocol as v2
from mlops.serving.access_log import AccessLog
from mlops.serving.batching import Overloaded, outcome, timed
from mlops.serving.body import BINARY_HEADER, as_utf8, validated
from mlops.serving.canary import Canary
from mlops.serving.errors import error_body
from mlops.serving.hot_path import INFER, INFER_VERSION, match
from mlops.serving.metrics import ServiceMetrics
from mlops.serving.middleware import read_headers
from mlops.serving.model_manager import ModelManager
from mlops.serving.plain_request import plain_request
from mlops.serving.predictor import OnnxPredictor
from mlops.serving.v1_payloads import label_array

# (status, the response's own headers and body): the protocol adds the status line and
# the server's headers.
Reply = Callable[[int, bytes], None]
Route = tuple[str, dict[str, str]]  # the route's template, the path's parameters
_ROUTES_KEPT = 64  # URLs remembered (then forgotten all at once)
log = logging.getLogger(__name__)
_JSON = b"content-type: application/json\r\ncontent-length: %d\r\n\r\n"
_BINARY = (b"content-type: application/octet-stream\r\ncontent-length: %d\r\n"
           + BINARY_HEADER + b": %d\r\n\r\n")


@dataclass
class _Queued:
    predictor: OnnxPredictor
    request: v2.InferRequest
    wanted: list[str]  # the outputs it asks for
    matrix: np.ndarray
    scope: dict[str, Any]
    template: str
    start: float
    reply: Reply


class FastLane:
    """Takes complete v2 infer requests from the protocol, answers them at the end of the
    loop iteration (``runner`` supplies the inline rule and the row bound it shares).
    ``batched``: the iteration's requests share one call per model version, as the
    micro-batcher's do; without it (batching off) each request has its own call."""

    def __init__(self, manager: ModelManager, runner: Any, metrics: ServiceMetrics,
                 access_log: AccessLog, max_batch: int, batched: bool = True,
                 canary: Canary | None = None) -> None:
        self.manager, self.runner, self.metrics, self.canary = manager, runner, metrics, canary
        self.access_log, self.max_batch, self.batched = access_log, max_batch, batched
        self._queued: list[_Queued] = []
        self.answered = 0  # requests the lane has answered
        self._routes: dict[bytes, tuple[str, Route]] = {}

    def route(self, method: bytes, url: bytes) -> tuple[str, Route] | None:
        """The path and infer route a request line names (with its path parameters), or
        None when the lane is not for it. Remembered by URL: a client sends the same one
        again and again."""
        if method != b"POST":
            return None
        found = self._routes.get(url)
        if found is None:
            path = httptools.parse_url(url).path
            route = match(path.decode("ascii")) if b"%" not in path else None
            if route is None or route[0] not in (INFER, INFER_VERSION):
                return None
            if len(self._routes) >= _ROUTES_KEPT:
                self._routes.clear()
            found = self._routes[url] = path.decode("ascii"), route
        return found

    def take(self, scope: dict[str, Any], route: Route, body: bytes,
             reply: Reply, json_length: int | None = None) -> bool:
        """Queue a complete request for this iteration's batch; False when the app must
        answer it (nothing has been written then). ``json_length``: the binary tensor data
        extension's header, the length of the JSON before the binary data."""
        predictor = self.manager.current
        if predictor is None or predictor.encoding is not None or predictor.classes or (
                json_length is not None and json_length > len(body)) or (
                self.canary is not None and self.canary.active):
            return False  # raw values, class names and canary routing are the app's
        params = route[1]
        if params["name"] != predictor.name or params.get("version") not in (
                None, predictor.version):
            return False
        try:
            request, matrix = self._parsed(predictor, body, json_length)
            wanted = v2.selected_outputs(request, predictor.task)
        except Exception:  # the app answers it, with the error it always gives
            return False
        if len(matrix) > self.runner.inline.rows(predictor):
            return False
        try:
            self.runner.limit.take(len(matrix))
        except Overloaded:
            return False
        if not self._queued:
            asyncio.get_running_loop().call_soon(self._answer)
        self.metrics.in_flight += 1  # taken back when the iteration's batch is answered
        self._queued.append(_Queued(predictor, request, wanted, matrix, scope, route[0],
                                    time.perf_counter(), reply))
        return True

    def _parsed(self, predictor: OnnxPredictor, body: bytes, json_length: int | None
                ) -> tuple[v2.InferRequest, np.ndarray]:
        """The request and its matrix: the common body by simdjson, any other as the app
        parses it (raising what the app would answer)."""
        plain = plain_request(body, len(predictor.feature_names), self.max_batch, json_length)
        if plain is not None:
            return plain
        json_part, binary = body, memoryview(b"")
        if json_length is not None:
            json_part, binary = body[:json_length], memoryview(body)[json_length:]
        request = validated(as_utf8(json_part, "utf-8"), v2.InferRequest)
        return request, v2.to_matrix(request, predictor.feature_names, self.max_batch, binary)

    def _answer(self) -> None:
        queued, self._queued = self._queued, []
        try:
            self._answer_groups(queued)
        finally:
            self.metrics.in_flight -= len(queued)

    def _answer_groups(self, queued: list[_Queued]) -> None:
        for group in self._groups(queued):
            predictor = group[0].predictor
            scores, error = outcome(lambda g=group, p=predictor: timed(
                self.runner.observe, p, *[q.matrix for q in g]))
            self.runner.limit.give(sum(len(q.matrix) for q in group))
            if error is not None:  # what the app answers a failed call: logged, a bare 500
                log.error("internal error on POST %s", group[0].scope["path"], exc_info=error)
            labels = None if error is not None else label_array(scores, predictor.task)
            start = 0
            for item in group:
                rows = len(item.matrix)
                if error is not None:
                    body = orjson.dumps(error_body(item.scope["path"], "InternalError",
                                                   "internal error"))
                    self._reply(item, 500, _JSON % len(body) + body, None)
                else:
                    end = start + rows
                    self._reply(item, 200, self._response(
                        item, scores[start:end], None if labels is None else labels[start:end]),
                        item.predictor.version)
                start += rows

    def _groups(self, queued: list[_Queued]) -> list[list[_Queued]]:
        """The calls to make: one per model version when batched, else one per request."""
        if not self.batched:
            return [[item] for item in queued]
        versions = {id(item.predictor): item.predictor for item in queued}
        return [[item for item in queued if item.predictor is predictor]
                for predictor in versions.values()]

    def _response(self, item: _Queued, scores: np.ndarray, labels: np.ndarray | None
                  ) -> bytes:
        """The content headers and body the app's infer route gives these scores (and the
        batch's labels for them)."""
        predictor, request, wanted = item.predictor, item.request, item.wanted
        labels = labels if "label" in wanted else None
        as_binary = v2.binary_outputs(request)
        if as_binary:
            body, json_length = v2.binary_response(predictor.name, predictor.version,
                                                    request.id, wanted, scores, labels,
                                                    as_binary)
            return _BINARY % (len(body), json_length) + body
        body = orjson.dumps(v2.infer_response(predictor.name, predictor.version, request.id,
                                              wanted, scores, labels),
                            option=orjson.OPT_SERIALIZE_NUMPY)
        return _JSON % len(body) + body

    def _reply(self, item: _Queued, status: int, content: bytes, version: str | None) -> None:
        """Metrics and the access line as the app's middleware writes them, then the reply
        (``content``: the content headers, the blank line, the body)."""
        rid, _ = read_headers(item.scope)
        seconds = time.perf_counter() - item.start
        self.metrics.observe_request(item.template, "POST", status, seconds, version)
        if self.access_log.enabled:
            self.access_log.record({
                "request_id": rid, "method": "POST", "path": item.scope["path"],
                "route": item.template, "status": status, "ms": round(seconds * 1000, 3),
                "client": (item.scope.get("client") or ("", 0))[0], "model_version": version})
        self.answered += 1
        item.reply(status, b"x-request-id: %s\r\n%s" % (rid.encode(), content))
