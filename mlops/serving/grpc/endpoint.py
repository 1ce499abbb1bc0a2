"""Where the gRPC service listens and for how long: host, port, TLS, start and stop.

The grpc.aio server runs on the event loop uvicorn runs the app on (uvloop included), so
its calls share the app's micro-batcher, which belongs to that loop. ``attach_grpc`` ties
its lifetime to the app's lifespan: it starts before the app's own start-up and stops
after the app's shutdown, with a grace period for calls in progress; the port is on
``app.state.grpc`` once started (port 0 picks a free one).

Limits follow the REST service's: a message at most ``max_body_bytes`` (grpc answers a
larger one RESOURCE_EXHAUSTED itself), at most ``max_connections`` calls in progress
(beyond, RESOURCE_EXHAUSTED at once).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import grpc
from fastapi import FastAPI

from mlops.serving.app import SERVER, not_ready_reason
from mlops.serving.grpc.service import ServiceParts, generic_handler
from mlops.serving.tls import TlsFiles

log = logging.getLogger(__name__)
GRACE_S = 5.0


def credentials(tls: TlsFiles) -> grpc.ServerCredentials:
    """The same certificate, key and client CA as the REST port (``mlops.serving.tls``);
    with a client CA, clients must present a certificate it signed (mutual TLS)."""
    cert, key, ca = tls.pem()
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca,
                                       require_client_auth=ca is not None)


@dataclass(frozen=True)
class GrpcEndpoint:
    """A started gRPC server and the port it listens on."""

    server: grpc.aio.Server
    port: int

    async def stop(self, grace_s: float = GRACE_S) -> None:
        """Refuse new calls, let those in progress finish for up to ``grace_s``."""
        await self.server.stop(grace_s)


def parts_of(app: FastAPI) -> ServiceParts:
    """The parts of an app from ``create_app`` that the gRPC service shares."""
    state = app.state
    return ServiceParts(state.manager, state.runner, state.metrics, state.config, SERVER,
                        partial(not_ready_reason, app), state.canary)


async def start_grpc(source: FastAPI | ServiceParts, host: str, port: int,
                     tls: TlsFiles | None = None) -> GrpcEndpoint:
    """Build, bind and start the gRPC server on the running event loop."""
    parts = parts_of(source) if isinstance(source, FastAPI) else source
    config = parts.config
    server = grpc.aio.server(
        handlers=[generic_handler(parts)], maximum_concurrent_rpcs=config.max_connections,
        options=[("grpc.max_receive_message_length", config.max_body_bytes),
                 ("grpc.so_reuseport", 0)])
    address = f"{host}:{port}"
    bound = (server.add_secure_port(address, credentials(tls)) if tls
             else server.add_insecure_port(address))
    await server.start()
    log.info("gRPC (Open Inference Protocol) on %s:%d%s", host, bound,
             " with TLS" if tls else "")
    return GrpcEndpoint(server, bound)


def attach_grpc(app: FastAPI, host: str, port: int, tls: TlsFiles | None = None,
                grace_s: float = GRACE_S) -> None:
    """Serve gRPC for as long as the app runs: around its lifespan, on uvicorn's loop."""
    inner: Callable[[Any], AbstractAsyncContextManager[Any]] = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app_: Any) -> AsyncIterator[Any]:
        endpoint = await start_grpc(app, host, port, tls)
        app.state.grpc = endpoint
        try:
            async with inner(app_) as state:
                yield state
        finally:
            await endpoint.stop(grace_s)

    app.router.lifespan_context = lifespan
