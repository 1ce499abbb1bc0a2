"""uvicorn's HTTP protocol (httptools) with the limits uvicorn lacks: read deadlines and a
connection bound answered with Retry-After.

uvicorn has no timeout for receiving a request (its issue 157: ``--timeout-request-start``
was never merged): ``timeout_keep_alive`` only covers idle time between requests and is
reset by every byte, so a client sending a byte a second, or a Content-Length longer than
its body, holds a connection for ever. Here a request must be received within deadlines
that start when it is partly here and are never reset by its bytes: its headers within
``header_timeout_s`` (else 408, written here: no app has seen the request yet), its body
within ``body_timeout_s`` (the app's body reader then answers 408, ``READ_TIMED_OUT``; a
second expiry, or one after the response, closes the connection). A new connection that
sends nothing is closed after ``header_timeout_s``.

uvicorn's ``limit_concurrency`` answers 503 without Retry-After and outside the app (no
metrics, no access line). Here a request that arrives while more than ``max_connections``
connections are open, or ``max_connections`` requests are in progress, is marked
(``BUSY``) and the app's middleware answers it 503 with Retry-After and closes the
connection. The deadlines cost nothing on a request that arrives in one read.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from mlops.serving.body import BINARY_HEADER, READ_TIMED_OUT

if TYPE_CHECKING:  # the lane imports the app's modules, which import this one
    from mlops.serving.fast_lane import FastLane

log = logging.getLogger(__name__)
BUSY = "mlops.busy"  # ASGI scope key: answer 503 with Retry-After


def timeout_response(detail: str) -> bytes:
    """A complete 408 response that closes the connection."""
    body = orjson.dumps({"error": "RequestTimeout", "detail": detail})
    return (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n"
            + body)


class CoalescingTransport:
    """A transport whose writes within one event-loop iteration leave in one system call.

    uvicorn writes a response's head and its body separately, two sends per response;
    joined at the end of the iteration they are one (pipelined responses too)."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport, self._loop = transport, loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def write_now(self, data: bytes) -> None:
        """Write a whole response at once, after anything pending: it is one write already,
        and waiting for the iteration's end would cost an iteration of the loop."""
        self._pending.append(data)
        self._flush()

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def is_closing(self) -> bool:  # asked on every response: not through __getattr__
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class LimitedHttpProtocol(HttpToolsProtocol):
    """One connection, with read deadlines, the connection bound and the fast lane (set per
    server by ``limited_protocol``)."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_connections: int | None = None
    lane: FastLane | None = None
    max_body_bytes: int = 4 << 20

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._in_headers = False  # a request has begun and its headers are not complete
        self._in_body = False  # its headers are complete and its body is not
        self._expired = False  # the body deadline passed once for this request
        self._lane_route: tuple[str, dict[str, str]] | None = None  # this request's, if any
        self._lane_body: list[bytes] = []
        self._lane_json_length: int | None = None  # its binary extension header, if any
        self._lane_busy = False  # the lane holds a request of this connection
        self._close_after_lane = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = CoalescingTransport(transport, self.loop)  # type: ignore[assignment]
        self._arm(self.header_timeout_s)  # a connection that never sends a request

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._deadline is None and (self._in_headers or self._in_body):
            self._arm(self.header_timeout_s if self._in_headers else self.body_timeout_s)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers, self._in_body, self._expired = True, False, False

    def on_headers_complete(self) -> None:
        self._disarm()
        self._in_headers, self._in_body = False, True
        limit = self.max_connections
        if limit is not None and (len(self.connections) > limit or len(self.tasks) >= limit):
            self.scope[BUSY] = True  # type: ignore[literal-required]
        self._lane_route = self._lane_candidate()
        if self._lane_route is None:
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._lane_route is not None:
            self._lane_body.append(body)
        else:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()
        self._in_body = False
        route, self._lane_route = self._lane_route, None
        if route is None:
            super().on_message_complete()
            return
        body, self._lane_body = b"".join(self._lane_body), []
        if self.lane is not None and self.lane.take(self.scope, route, body, self._lane_reply,
                                                    self._lane_json_length):
            self._lane_busy = True
            return
        self._to_app(body)
        HttpToolsProtocol.on_message_complete(self)

    def _to_app(self, body: bytes) -> None:
        """A request the lane looked at goes to uvicorn's own handling (the app), as if the
        lane had never looked: its cycle and task now, the body read so far."""
        self._lane_route, self._lane_body = None, []
        HttpToolsProtocol.on_headers_complete(self)
        if body:
            HttpToolsProtocol.on_body(self, body)

    def _lane_candidate(self) -> tuple[str, dict[str, str]] | None:
        """The infer route of a request the lane may take: POST to an infer path, kept
        alive, nothing else of this connection in progress, JSON declared or not, a
        Content-Length within the limit; None for anything else."""
        lane = self.lane
        if (lane is None or self._lane_busy or self.expect_100_continue
                or self.scope.get(BUSY)
                or (self.cycle is not None and not self.cycle.response_complete)
                or self.parser.get_http_version() != "1.1"
                or not self.parser.should_keep_alive() or self.parser.should_upgrade()):
            return None
        found = lane.route(self.parser.get_method(), self.url)
        if found is None:
            return None
        plain, self._lane_json_length = _plain_body(self.headers, self.max_body_bytes)
        if not plain:
            return None
        self.scope["method"], self.scope["path"] = "POST", found[0]
        return found[1]

    def _lane_reply(self, status: int, rest: bytes) -> None:
        """The lane's answer: the status line and the server's headers, then the lane's."""
        self._lane_busy = False
        if self.transport.is_closing():
            return
        self.transport.write_now(STATUS_LINE[status] + self._default_headers() + rest)
        self.on_response_complete()
        if self._close_after_lane:
            self.transport.close()

    def _default_headers(self) -> bytes:
        """The server's headers (server, date) as bytes, rendered again only when uvicorn
        replaces their list (once a second, for the date)."""
        headers = self.server_state.default_headers
        if headers is not _rendered[0]:
            _rendered[:] = headers, b"".join(b"%s: %s\r\n" % header for header in headers)
        return _rendered[1]

    def shutdown(self) -> None:
        if self._lane_busy:  # close once the lane has answered
            self._close_after_lane = True
        else:
            super().shutdown()

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self._lane_route is not None:  # the app answers a body that is late (408)
            self._to_app(b"".join(self._lane_body))
        cycle = self.cycle
        if self._in_body and not self._expired and cycle is not None and (
                not cycle.response_started):
            # The app may be waiting for the body: its reader answers 408 when woken.
            self._expired = True
            cycle.scope[READ_TIMED_OUT] = True  # type: ignore[literal-required]
            cycle.message_event.set()
            self._arm(self.body_timeout_s)
            return
        if self._in_headers:
            log.info("closing a connection from %s: request headers not received within "
                     "%g s", self.client, self.header_timeout_s)
            self.transport.write(timeout_response(
                f"request headers not received within {self.header_timeout_s:g} s"))
        self.transport.close()


_LANE_TYPES = (b"application/json", b"application/octet-stream")
_rendered: list[Any] = [None, b""]  # the default headers' list last rendered, and its bytes


def _plain_body(headers: list[tuple[bytes, bytes]], max_body_bytes: int
                ) -> tuple[bool, int | None]:
    """Whether the body is what the lane answers: a declared length within the limit, JSON
    in UTF-8 (declared so or not declared), binary tensor data after it only with its
    header; and that header's JSON length (None without binary data)."""
    length, binary, media = None, None, None
    for name, value in headers:
        if name == b"content-length":
            if not value.isdigit():
                return False, None
            length = int(value)
        elif name == b"content-type":
            media = value
        elif name == BINARY_HEADER:
            if not value.isdigit():
                return False, None
            binary = int(value)
        elif name == b"transfer-encoding":
            return False, None
    if media is not None and media not in _LANE_TYPES[:1 + (binary is not None)]:
        return False, None
    return length is not None and length <= max_body_bytes, binary


def limited_protocol(header_timeout_s: float, body_timeout_s: float,
                     max_connections: int | None, lane: FastLane | None = None,
                     max_body_bytes: int = 4 << 20) -> type[LimitedHttpProtocol]:
    """The protocol class for one server (uvicorn builds one instance per connection)."""
    return type("LimitedHttpProtocol", (LimitedHttpProtocol,), {
        "header_timeout_s": header_timeout_s, "body_timeout_s": body_timeout_s,
        "max_connections": max_connections, "lane": lane, "max_body_bytes": max_body_bytes})
