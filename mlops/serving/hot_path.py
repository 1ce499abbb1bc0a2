"""The inference routes answered before the framework: path matching and error mapping in
a few lines, for the requests that carry the service's load.

FastAPI still registers and documents ``POST /v2/models/{name}/infer``, its
``/versions/{version}`` form, ``POST /v1/predict`` and ``/v1/predict/entity``, and would
answer them; but its middleware stack, router and exception middleware cost several times
what a one-row inference does. ``ServiceApp`` hands these four to their endpoints
directly, through the same observability middleware (request id, limits, metrics, access
log) and the same error bodies (``mlops.serving.errors.error_response``); every other
request goes through FastAPI as before. The endpoints take the Request alone and return a
Response (``LeanRoute``), so either way they run the same code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from fastapi import FastAPI, Request
from fastapi.routing import APIRoute

from mlops.serving.errors import error_response
from mlops.serving.middleware import ASGIApp, Receive, Scope, Send

INFER, INFER_VERSION, PREDICT = ("/v2/models/{name}/infer",
                                 "/v2/models/{name}/versions/{version}/infer", "/v1/predict")
PREDICT_ENTITY = "/v1/predict/entity"
HOT = (INFER, INFER_VERSION, PREDICT, PREDICT_ENTITY)


def match(path: str) -> tuple[str, dict[str, str]] | None:
    """The hot route template a POST path matches, and its path parameters (a segment is
    never empty and never holds a slash, as Starlette's ``{name}`` matches)."""
    if path == PREDICT or path == PREDICT_ENTITY:
        return path, {}
    parts = path.split("/")
    if len(parts) == 5 and parts[4] == "infer" and parts[1] == "v2" and parts[2] == "models" \
            and parts[3]:
        return INFER, {"name": parts[3]}
    if len(parts) == 7 and parts[6] == "infer" and parts[4] == "versions" \
            and parts[1] == "v2" and parts[2] == "models" and parts[3] and parts[5]:
        return INFER_VERSION, {"name": parts[3], "version": parts[5]}
    return None


class HotRoutes:
    """The hot routes' endpoints by template, as an ASGI app for matched requests."""

    def __init__(self, routes: Mapping[str, APIRoute]) -> None:
        self.routes = dict(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = scope["route"]
        request = Request(scope, receive, send)
        try:
            response = await route.endpoint(request)
        except Exception as exc:  # mapped as the app's exception handlers map it
            response = error_response(request, exc)
        await response(scope, receive, send)


class ServiceApp(FastAPI):
    """FastAPI, with the hot routes taken first (``hot`` set by ``install_hot_routes``)."""

    hot: ASGIApp | None = None
    hot_routes: HotRoutes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.hot is not None and scope["type"] == "http" and scope["method"] == "POST":
            found = match(scope["path"])
            if found is not None:
                template, params = found
                scope["app"], scope["path_params"] = self, params
                scope["route"] = self.hot_routes.routes[template]  # type: ignore[union-attr]
                await self.hot(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def install_hot_routes(app: ServiceApp, observed: Callable[[ASGIApp], ASGIApp]) -> None:
    """Answer the hot routes directly, wrapped by ``observed`` (the observability
    middleware around an inner app). Call after the routes are registered."""
    routes = {route.path: route for route in app.router.routes
              if isinstance(route, APIRoute) and route.path in HOT}
    missing = set(HOT) - set(routes)
    if missing:
        raise RuntimeError(f"hot routes not registered: {sorted(missing)}")
    app.hot_routes = HotRoutes(routes)
    app.hot = observed(app.hot_routes)

