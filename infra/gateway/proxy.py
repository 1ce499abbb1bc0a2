"""Forwarding to the Prefect server behind the gateway, with the server's own credential.

HTTP: the request as it came (method, path, query, body, headers less hop-by-hop ones, the
caller's credentials and the session cookie), plus ``Authorization: Basic`` with the
server's auth string; the answer streams back byte for byte (compressed as it was).
``/ui-settings`` is rewritten: the UI's API is the gateway's ``/api`` and it shows no
auth-string prompt (the gateway's login page is the login). A 503 (Prefect's "retry
later", its SQLite busy) is retried a few times, as Prefect's own client would.

WebSocket: Prefect's sockets authenticate in their first message (``{"type": "auth",
"token": ...}``, with the ``prefect`` subprotocol); the gateway answers the caller's
handshake itself and makes its own, with the server's auth string, upstream.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from yarl import URL

from infra.gateway.session import COOKIE

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailer", "trailers", "transfer-encoding", "upgrade", "host", "content-length"}
# Never forwarded from callers: their credentials, and Prefect's automation provenance
# headers, which would let a caller pose as an automation in created_by.
_DROPPED = HOP_BY_HOP | {"authorization", "prefect-automation-id", "prefect-automation-name",
                         "cookie"}
_NOT_RETURNED = HOP_BY_HOP | {"date", "server"}  # uvicorn sets its own
# Sent only when the caller sent them: aiohttp would add its own (gzip for a caller that
# cannot read it, an octet-stream type for a JSON body).
_NO_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
_BUFFER_LIMIT = 1 << 20  # answers up to this size are sent whole, larger ones stream
_KEEPALIVE_S = 2.0


def basic_auth(auth_string: str) -> str:
    return "Basic " + base64.b64encode(auth_string.encode()).decode()


class Upstream:
    """The Prefect server behind the gateway, through one pool of kept-alive connections
    (aiohttp: its C parser keeps the gateway's cost per request low). The pool keeps no
    cookies: one caller's cookie never reaches another's request."""

    def __init__(self, origin: str, auth_string: str, retries: int = 3) -> None:
        self.origin, self._auth_string, self.retries = origin.rstrip("/"), auth_string, retries
        self._auth = basic_auth(auth_string)
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        """Created on first use, inside the server's event loop."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers={"Authorization": self._auth}, auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(), skip_auto_headers=_NO_AUTO_HEADERS,
                # Closes an idle connection before the Prefect server's uvicorn does (5 s):
                # otherwise a request can go out on a socket the server is closing, and
                # fails with "Server disconnected" (aiohttp's default keeps them 15 s).
                connector=aiohttp.TCPConnector(limit=64, keepalive_timeout=_KEEPALIVE_S),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=120))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def get_json(self, path: str) -> Any:
        """GET ``/api{path}``; None for 404 or 422 (no such object)."""
        async with self.session().get(f"{self.origin}/api{path}") as response:
            if response.status in (404, 422):
                return None
            response.raise_for_status()
            return json.loads(await response.read())

    async def healthy(self) -> int | None:
        try:
            async with self.session().get(f"{self.origin}/api/health",
                                          timeout=aiohttp.ClientTimeout(total=5)) as response:
                return response.status
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def forward(self, request: Request, body: bytes) -> Response:
        """Send the request upstream and stream the answer back."""
        raw = request.scope.get("raw_path") or request.url.path.encode()
        query = request.scope.get("query_string") or b""
        target = URL(self.origin + raw.decode("latin-1") + (
            "?" + query.decode("latin-1") if query else ""), encoded=True)
        headers_out = _forwarded_headers(request)
        for attempt in range(self.retries + 1):
            response = await self.session().request(
                request.method, target, data=body or None, headers=headers_out,
                allow_redirects=False)
            if response.status != 503 or attempt == self.retries:
                break
            # Prefect answers 503 when a request may be retried (its SQLite busy): its own
            # client retries, the UI does not, so the gateway does, for every caller.
            response.release()
            await asyncio.sleep(0.1 * 2 ** attempt)
        headers = [(k.lower().encode("latin-1"), v.encode("latin-1"))
                   for k, v in response.headers.items() if k.lower() not in _NOT_RETURNED]
        if (response.content_length or _BUFFER_LIMIT + 1) <= _BUFFER_LIMIT:
            try:
                content = await response.read()
            finally:
                response.release()
            answer: Response = Response(content, response.status)
        else:
            answer = StreamingResponse(_stream(response), response.status)
        answer.raw_headers = [h for h in answer.raw_headers if h[0] == b"content-length"]
        answer.raw_headers += headers
        return answer

    async def ui_settings(self, request: Request, public_api: str) -> Response:
        """The UI's settings with the gateway's API and no auth-string prompt."""
        async with self.session().get(self.origin + request.url.path) as response:
            content = await response.read()
            if response.status != 200:
                return Response(content, response.status)
        settings = {**json.loads(content), "api_url": public_api, "auth": None}
        return Response(json.dumps(settings), 200, media_type="application/json")

    async def relay(self, caller: WebSocket, path: str, query: str,
                    prefect_protocol: bool) -> None:
        """Relay an accepted caller socket to the same path upstream (its handshake with
        the caller already done, when it spoke the ``prefect`` subprotocol)."""
        url = "ws" + self.origin[len("http"):] + path + (f"?{query}" if query else "")
        async with connect(url, subprotocols=["prefect"],  # type: ignore[list-item]
                           additional_headers={"Authorization": self._auth},
                           open_timeout=10) as server:
            await server.send(json.dumps({"type": "auth", "token": self._auth_string}))
            answer = json.loads(await server.recv())
            if answer.get("type") != "auth_success":
                await caller.close(1011, "the server refused the gateway's credentials")
                return
            if prefect_protocol:
                await caller.send_text(json.dumps(answer))
            await _pump(caller, server)


async def _stream(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.content.iter_chunked(1 << 16):
            yield chunk
    finally:
        response.release()


def _forwarded_headers(request: Request) -> list[tuple[str, str]]:
    headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _DROPPED
               and not k.lower().startswith("x-forwarded-")]
    cookies = [part.strip() for part in request.headers.get("cookie", "").split(";")
               if part.strip() and part.strip().split("=", 1)[0] != COOKIE]
    if cookies:
        headers.append(("cookie", "; ".join(cookies)))
    headers += [("x-forwarded-for", request.client.host if request.client else ""),
                ("x-forwarded-proto", request.url.scheme),
                ("x-forwarded-host", request.headers.get("host", ""))]
    return headers


async def _pump(caller: WebSocket, server: ClientConnection) -> None:
    """Copy messages both ways until either side closes."""

    async def upward() -> None:
        try:
            while True:
                message: dict[str, Any] = await caller.receive()
                if message["type"] == "websocket.disconnect":
                    return
                data = message.get("text") if message.get("text") is not None else message.get(
                    "bytes")
                await server.send(data)
        except (WebSocketDisconnect, ConnectionClosed):
            return

    async def downward() -> None:
        try:
            async for data in server:
                if isinstance(data, bytes):
                    await caller.send_bytes(data)
                else:
                    await caller.send_text(data)
        except (WebSocketDisconnect, ConnectionClosed, RuntimeError):
            return

    tasks = [asyncio.create_task(upward()), asyncio.create_task(downward())]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        task.cancel()
    await server.close()
    try:
        await caller.close()
    except (RuntimeError, WebSocketDisconnect):
        pass  # already closed
