"""The bare ASGI floor of the serving benchmark: an ASGI callable with no framework.

It reads each request's whole body and answers ``POST /v2/models/{name}/infer`` with a
constant Open Inference Protocol body, ``GET /v2/health/ready`` with 200 and anything else
with 404. No routing table, no validation, no model: what is left is the HTTP server's
own cost, the ceiling any app on that server can reach. The same callable runs on uvicorn
(uvloop and httptools, as the service runs) and on granian, so the two servers compare on
equal work.

``python -m benchmarks.asgi_floor --port 8099 [--server uvicorn|granian]``
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from benchmarks.http_floor import OIP_BODY, READY_BODY

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

JSON_HEADERS = [(b"content-type", b"application/json")]


def _answer(status: int, body: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    headers = [*JSON_HEADERS, (b"content-length", str(len(body)).encode())]
    return ({"type": "http.response.start", "status": status, "headers": headers},
            {"type": "http.response.body", "body": body})


INFER, READY, MISSING = _answer(200, OIP_BODY), _answer(200, READY_BODY), _answer(404, b"{}")


async def _drain(receive: Receive) -> None:
    """Read the request body to its end, as any real endpoint must before answering."""
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False) and message["type"] == "http.request"


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """The whole server: three answers chosen by method and path."""
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": f"{message['type']}.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    path, method = scope["path"], scope["method"]
    if method == "POST" and path.startswith("/v2/models/") and path.endswith("/infer"):
        await _drain(receive)
        start, body = INFER
    elif method == "GET" and path == "/v2/health/ready":
        start, body = READY
    else:
        start, body = MISSING
    await send(start)
    await send(body)


def serve_uvicorn(host: str, port: int) -> None:
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False)


def serve_granian(host: str, port: int) -> None:
    """One granian worker, its defaults otherwise (uvloop when installed, no access log)."""
    from granian import Granian
    from granian.constants import Interfaces

    Granian("benchmarks.asgi_floor:app", address=host, port=port, interface=Interfaces.ASGI,
            workers=1).serve()


SERVERS = {"uvicorn": serve_uvicorn, "granian": serve_granian}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--server", choices=sorted(SERVERS), default="uvicorn")
    args = parser.parse_args()
    SERVERS[args.server](args.host, args.port)


if __name__ == "__main__":
    main()
