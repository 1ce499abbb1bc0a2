"""Request metrics, request ids, structured access logs and the request limits.

One pure ASGI middleware does all of it per request (Starlette's BaseHTTPMiddleware would
cost a task and a stream per request). Limits: the body size (413), a request the server
protocol marked as over the connection bound (503 with Retry-After; ``protocol``) and a
chunked body that did not arrive in time (408). Metrics (``mlops.serving.metrics``) belong
to one app, so two apps in one process (tests) never share counters. Routes are labelled
by their template (``/v2/models/{name}/infer``), unmatched paths as ``unmatched``: label
sets stay bounded. Every request but the probes' and the scrape's is counted in flight
(``ServiceMetrics.in_flight``) from its start to its end, errors and refusals included.
"""

from __future__ import annotations

import itertools
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from mlops.serving.access_log import AccessLog
from mlops.serving.batching import InferenceRunner
from mlops.serving.body import READ_TIMED_OUT
from mlops.serving.errors import error_body
from mlops.serving.metrics import ServiceMetrics
from mlops.serving.protocol import BUSY

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# New ids: a random per-process prefix and a counter (cheaper than a uuid4 per request).
_ID_PREFIX, _ID_COUNTER = uuid.uuid4().hex[:20], itertools.count(1)
# Not workload: a probe or a scrape counted in flight would read as load to the autoscaler.
NOT_IN_FLIGHT = frozenset({"/metrics", "/v2/health/live", "/v2/health/ready"})


def read_headers(scope: Scope) -> tuple[str, int | None]:
    """The request id (the caller's X-Request-ID when it is a sane token, else a new one)
    and the Content-Length, in one pass over the headers."""
    given, length = None, None
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            length = int(value) if value.isdigit() else None
        elif key == b"x-request-id":
            text = value.decode("latin-1")
            given = text if _REQUEST_ID.fullmatch(text) else None
    return given or f"{_ID_PREFIX}{next(_ID_COUNTER):012x}", length


class ObservabilityMiddleware:
    """Request id, request limits, metrics and one JSON access-log line per request."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, runner: InferenceRunner,
                 access_log: AccessLog, max_body_bytes: int,
                 batched_paths: Callable[[str], bool], retry_after_s: int = 1) -> None:
        self.app, self.metrics, self.runner, self.access_log = app, metrics, runner, access_log
        self.max_body_bytes, self.batched_paths = max_body_bytes, batched_paths
        self.retry_after_s = retry_after_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), 500
        rid, length = read_headers(scope)
        scope.setdefault("state", {})  # routes put the model version here for the log
        rid_header = (b"x-request-id", rid.encode())

        async def send_with_id(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), rid_header]
            await send(message)

        batched = scope["method"] == "POST" and self.batched_paths(scope["path"])
        if batched:
            self.runner.arrived(scope)
        counted = scope["path"] not in NOT_IN_FLIGHT
        if counted:
            self.metrics.in_flight += 1
        try:
            await self._limited(scope, receive, send_with_id, length)
        finally:
            if counted:
                self.metrics.in_flight -= 1
            if batched:
                self.runner.left(scope)
            self._record(scope, rid, status, time.perf_counter() - start)

    async def _limited(self, scope: Scope, receive: Receive, send: Send,
                       length: int | None) -> None:
        """The app, unless the server is over its connection bound or the body is too large
        or too late."""
        path = scope["path"]
        if scope.get(BUSY):
            await _refuse(send, path, 503, "Overloaded", "the service is at its connection "
                          "limit; retry later", [(b"retry-after", b"%d" % self.retry_after_s),
                                                 (b"connection", b"close")])
            return
        if length is None and scope["method"] in ("POST", "PUT", "PATCH"):
            receive, length = await self._buffered(scope, receive)
        if scope.get(READ_TIMED_OUT):
            await _refuse(send, path, 408, "RequestTimeout", "the request body did not "
                          "arrive within the body timeout", [(b"connection", b"close")])
        elif length is not None and length > self.max_body_bytes:
            await _refuse(send, path, 413, "BodyTooLarge", f"request body of at least "
                          f"{length} bytes is over the limit of {self.max_body_bytes} bytes")
        else:
            await self.app(scope, receive, send)

    async def _buffered(self, scope: Scope, receive: Receive) -> tuple[Receive, int]:
        """A chunked body (no Content-Length) read up to just over the limit, replayed."""
        chunks, size, more = [], 0, True
        while more and size <= self.max_body_bytes and not scope.get(READ_TIMED_OUT):
            message = await receive()
            if message["type"] != "http.request":
                return receive, 0  # the client went away; let the app see the disconnect
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
        body = b"".join(chunks)

        async def replay() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        return replay, size

    def _record(self, scope: Scope, rid: str, status: int, seconds: float) -> None:
        template = getattr(scope.get("route"), "path", "unmatched")
        self.metrics.observe_request(template, scope["method"], status, seconds,
                                     scope["state"].get("model_version"))
        if self.access_log.enabled:
            self.access_log.record({
                "request_id": rid, "method": scope["method"], "path": scope["path"],
                "route": template, "status": status, "ms": round(seconds * 1000, 3),
                "client": (scope.get("client") or ("", 0))[0],
                "model_version": scope["state"].get("model_version")})


async def _refuse(send: Send, path: str, status: int, kind: str, detail: str,
                  headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = orjson.dumps(error_body(path, kind, detail))
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *(headers or ())]})
    await send({"type": "http.response.body", "body": body})
