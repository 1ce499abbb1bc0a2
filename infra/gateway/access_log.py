"""The gateway's access log: one line per HTTP request (method, path, status, time), and
nothing else of it: no query string, header or body, so no credential is ever logged."""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("infra.gateway")


class AccessLog:
    """One line per HTTP request: method, path, status, time; no query, headers or body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        began, status = time.perf_counter(), [0]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        await self.app(scope, receive, sending)
        log.info("%s %s %s %.1fms", scope["method"], scope["path"], status[0],
                 (time.perf_counter() - began) * 1000)
