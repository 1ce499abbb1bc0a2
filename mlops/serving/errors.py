"""The service's errors: one table from error type to status code, and their bodies.

A bad request gets a 4xx naming the problem, never a 5xx; an unexpected error is logged
with its stack and answered 500 "internal error", so no response carries a stack trace
or an internal path. Bodies follow each protocol: KServe v2 routes ``{"error": message}``,
the rest ``{"error": kind, "detail": message}`` (``error_body``).
"""

from __future__ import annotations

import logging
from functools import partial
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from mlops.features.online import OnlineStoreUnavailable, UnknownEntity
from mlops.governance.audit.records import AuditUnavailable
from mlops.serving.batching import Overloaded
from mlops.serving.body import BadBody, RequestTimeout, UnsupportedMediaType
from mlops.serving.model_manager import ModelSourceError, NothingToRollBack

log = logging.getLogger(__name__)


class BadInput(ValueError):
    """A request whose content cannot be scored; the message names the row and field."""


class BatchTooLarge(ValueError):
    """More rows than the service accepts in one request."""


class IncompleteFeatures(ValueError):
    """An entity whose stored features hold nulls, so it cannot be scored."""


class UnknownModel(LookupError):
    """A model name or version this service does not serve."""


class NotReady(RuntimeError):
    """No model loaded yet, or no feature store attached for the route."""


class Unauthorized(PermissionError):
    """An admin call without bearer credentials (401: the client should send a token)."""


class Forbidden(PermissionError):
    """An admin call whose bearer token is not the admin token (403: resending will not help)."""


class AdminDisabled(PermissionError):
    """Admin endpoints while no admin token is configured."""


class NoChallenger(RuntimeError):
    """A trial route on a service started without a challenger."""


class SwapRefused(RuntimeError):
    """A reload whose new version failed to load or warm up; the old one still serves."""


STATUS_BY_ERROR: dict[type[Exception], int] = {
    BadInput: 400, BadBody: 400, Unauthorized: 401, Forbidden: 403, AdminDisabled: 403,
    UnknownModel: 404, UnknownEntity: 404, RequestTimeout: 408, NothingToRollBack: 409,
    SwapRefused: 409, NoChallenger: 409, BatchTooLarge: 413, UnsupportedMediaType: 415,
    IncompleteFeatures: 422,
    NotReady: 503, ModelSourceError: 503, OnlineStoreUnavailable: 503, AuditUnavailable: 503,
    Overloaded: 503,
}
# 401 says how to authenticate (RFC 9110); after a 408 the rest of the body may still be
# on its way, so the connection cannot carry another request.
HEADERS_BY_STATUS = {401: {"WWW-Authenticate": "Bearer"}, 408: {"Connection": "close"}}


class ErrorBody(BaseModel):  # the Open Inference Protocol's error body
    error: str


class V1Error(BaseModel):
    error: str = Field(description="The kind of error, e.g. BadInput.")
    detail: str


def check_rows(rows: int, max_batch: int, what: str) -> None:
    if rows > max_batch:
        raise BatchTooLarge(f"{rows} {what}; at most {max_batch} per request")


def error_body(path: str, kind: str, detail: str) -> dict[str, str]:
    """An error as each protocol spells it: KServe v2 routes {"error": message}, the rest
    {"error": kind, "detail": message}."""
    if path.startswith("/v2"):
        return {"error": f"{kind}: {detail}"}
    return {"error": kind, "detail": detail}


def documented(model: type[BaseModel], *statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the error statuses a route can answer."""
    return {status: {"model": model} for status in statuses}


V2_ERRORS = documented(ErrorBody, 400, 404, 408, 413, 415, 422, 503)
V1_ERRORS = documented(V1Error, 400, 408, 413, 415, 422, 503)
ADMIN_ERRORS = documented(V1Error, 401, 403, 409, 503)
ADMIN_BODY_ERRORS = documented(V1Error, 400, 401, 403, 409, 422, 503)  # admin routes with a body


def _error(status: int, request: Request, exc: Exception) -> JSONResponse:
    headers = HEADERS_BY_STATUS.get(status)
    if isinstance(exc, Overloaded):
        headers = {"Retry-After": str(exc.retry_after_s)}
    return JSONResponse(error_body(request.url.path, type(exc).__name__, str(exc)),
                        status_code=status, headers=headers)


def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """422 naming each malformed field (``inputs.0.shape: ...``) of a parsed body."""
    problems = []
    for err in exc.errors() if isinstance(exc, RequestValidationError) else []:
        loc = [str(part) for part in err.get("loc", ()) if part != "body"]
        if err.get("type") == "json_invalid":
            problems.append(f"body is not valid JSON ({err.get('msg')})")
        else:
            problems.append(f"{'.'.join(loc) or 'body'}: {err.get('msg')}")
    return JSONResponse(error_body(request.url.path, "InvalidRequest", "; ".join(problems)),
                        status_code=422)


def _http_error(request: Request, exc: Exception) -> JSONResponse:
    """Routing and framework errors (unknown path, wrong method) in the same shape."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    kind = HTTPStatus(status).phrase.replace(" ", "")
    detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
    headers = getattr(exc, "headers", None)
    return JSONResponse(error_body(request.url.path, kind, str(detail)), status_code=status,
                        headers=headers)


def _internal(request: Request, exc: Exception) -> JSONResponse:
    log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(error_body(request.url.path, "InternalError", "internal error"),
                        status_code=500)


def error_response(request: Request, exc: Exception) -> JSONResponse:
    """The response the app's exception handlers give ``exc``, for code that runs outside
    FastAPI's exception middleware (``mlops.serving.hot_path``); the most specific class
    wins, as in Starlette."""
    for kind in type(exc).__mro__:
        if kind in STATUS_BY_ERROR:
            return _error(STATUS_BY_ERROR[kind], request, exc)
        if kind is RequestValidationError:
            return _invalid_request(request, exc)
        if kind is HTTPException:
            return _http_error(request, exc)
    return _internal(request, exc)


def install_error_handlers(app: FastAPI) -> None:
    for error_type, status in STATUS_BY_ERROR.items():
        app.add_exception_handler(error_type, partial(_error, status))
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _internal)
