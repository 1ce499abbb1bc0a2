"""Requests as bytes through a server's own HTTP protocol, in-process, with no socket.

What one request costs the process from the bytes of the request to the bytes of the
response: the HTTP parser (httptools), the protocol's work, the app, the response bytes,
everything but the system calls that move the bytes. Used by ``profile_serving`` for the
service (its uvicorn protocol with the fast lane) and the bare ASGI floor (uvicorn's stock
protocol) alike, so the two compare on the same terms.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.server import ServerState

PEER, LOCAL = ("127.0.0.1", 50000), ("127.0.0.1", 8080)


class _Transport(asyncio.Transport):
    """A connection's write side that keeps what the server wrote."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self._closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": PEER, "sockname": LOCAL}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Connection:
    """One kept-alive connection to ``config``'s app through its HTTP protocol."""

    def __init__(self, config: uvicorn.Config) -> None:
        if not config.loaded:
            config.load()
        self.transport = _Transport()
        self.protocol = config.http_protocol_class(  # type: ignore[call-arg]
            config=config, server_state=ServerState(), app_state={})
        self.protocol.connection_made(self.transport)

    async def exchange(self, request: bytes) -> bytes:
        """Send one request, run the loop until its whole response is written, return it."""
        self.protocol.data_received(request)
        while (response := _complete(self.transport.written)) is None:
            await asyncio.sleep(0)
        del self.transport.written[:len(response)]
        return response


def _complete(written: bytearray) -> bytes | None:
    """The first whole response (by its Content-Length) in ``written``, or None yet."""
    end = written.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(written[:end]).lower()
    start = head.find(b"content-length: ")
    length = int(head[start + 16:].split(b"\r\n", 1)[0]) if start >= 0 else 0
    total = end + 4 + length
    return bytes(written[:total]) if len(written) >= total else None


def post(path: str, body: bytes) -> bytes:
    """An HTTP/1.1 POST of a JSON body, kept alive, as wrk sends it."""
    return (b"POST %s HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (path.encode(), len(body), body))
