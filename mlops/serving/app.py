"""The CPU inference service's FastAPI app: Open Inference Protocol, plain JSON, admin.

Built by a factory around a ``ModelManager`` (as KServe's model server and MLflow's
scoring server are built around a loaded model), so loading, verifying and serving are
separate steps. Each request takes the predictor serving at its start, so a hot swap
never changes a request midway. Inference runs off the event loop (``mlops.serving.batching``),
and so do the blocking feature lookup and model loads. Errors: ``mlops.serving.errors``.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Annotated, Any, Protocol

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field, SecretStr, model_validator
from starlette.routing import request_response

from mlops.serving import openapi
from mlops.serving import v2_protocol as v2
from mlops.serving.access_log import AccessLog
from mlops.serving.batching import (
    DirectRunner,
    InferenceRunner,
    MicroBatcher,
    Observer,
    OffLoop,
    RowLimit,
)
from mlops.serving.body import BINARY_HEADER, parse_body, parse_with_binary
from mlops.serving.canary import ENTITY_HEADER, Canary
from mlops.serving.errors import (
    ADMIN_BODY_ERRORS,
    ADMIN_ERRORS,
    V1_ERRORS,
    V2_ERRORS,
    AdminDisabled,
    BadInput,
    ErrorBody,
    Forbidden,
    NoChallenger,
    NotReady,
    SwapRefused,
    Unauthorized,
    UnknownModel,
    check_rows,
    install_error_handlers,
)
from mlops.serving.fast_lane import FastLane
from mlops.serving.hot_path import ServiceApp, install_hot_routes
from mlops.serving.metrics import ServiceMetrics
from mlops.serving.middleware import ObservabilityMiddleware
from mlops.serving.model_manager import ModelManager, SwapResult
from mlops.serving.predictor import OnnxPredictor
from mlops.serving.raw_features import entity_rows, records_matrix, tensors_matrix
from mlops.serving.sampling import RequestSampler
from mlops.serving.shadow import Shadow, load_challenger
from mlops.serving.v1_payloads import (
    EntityRequest,
    PredictRequest,
    PredictResponse,
    entity_matrix,
    records_to_matrix,
    scores_to_labels,
)

_DOC_PATHS = ("/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc")


class FeatureLookup(Protocol):
    """What predict-by-entity needs of a feature store (``online_features.OnlineFeatures``)."""

    spec: Any  # its .features name the matrix's columns

    def matrix(self, entity_ids: list[Any]) -> np.ndarray: ...


AdminAuth = Annotated[str | None, openapi.ADMIN_BEARER]  # the raw Authorization header
# (action, details) -> None: appends to the audit trail, raises when it cannot.
AdminAudit = Callable[[str, dict[str, Any]], None]
SERVER = v2.ServerMetadata(name="mlops-inference", version="2",
                           extensions=["binary_tensor_data"])


class ServingConfig(BaseModel):
    """Limits and tuning of one service (the flags of ``python -m mlops.serving``)."""

    max_batch: int = Field(4096, ge=1, description="Rows per request.")
    max_body_bytes: int = Field(4 << 20, ge=1024, description="Bytes per request body.")
    batch_window_ms: float = Field(2.0, ge=0, le=50, description="0 turns micro-batching off.")
    batch_max_rows: int = Field(256, ge=1, description="Rows per micro-batch.")
    inference_threads: int = Field(min(os.cpu_count() or 1, 4), ge=1,
                                   description="Threads when micro-batching is off.")
    max_queued_rows: int = Field(8192, ge=1, description="Rows waiting for or in inference "
                                 "at once; beyond, 503 with Retry-After.")
    max_connections: int | None = Field(1024, ge=1, description="Open connections (and "
                                        "requests in progress); beyond, 503 with Retry-After.")
    header_timeout_s: float = Field(10.0, gt=0, description="Seconds to receive a request's "
                                    "headers (and before a new connection's first request).")
    body_timeout_s: float = Field(30.0, gt=0, description="Seconds to receive a request's "
                                  "body once its headers are in.")
    retry_after_s: int = Field(1, ge=1, description="Retry-After of a 503 when full.")
    inline_budget_us: float = Field(250.0, ge=0, description="ONNX Runtime calls that took at "
                                    "most this long at warm-up run on the event loop (no "
                                    "thread hand-off); 0: always on an inference thread.")
    admin_token: SecretStr | None = None
    entity_lookup: bool = Field(False, description="A feature store will be attached.")
    access_log: bool = Field(True, description="One JSON line per request on stderr.")
    sample_rate: float = Field(0.0, ge=0, le=1, description="Share of scored rows recorded "
                               "for drift monitoring (0: none).")
    sample_root: str | None = Field(None, description="Data root the sampled rows go to "
                                    "(under monitoring/<model>/requests/).")
    sample_flush_s: float = Field(30.0, gt=0, description="Seconds between sample writes.")
    shadow_rate: float = Field(0.0, ge=0, le=1, description="Share of calls the challenger "
                               "scores in shadow (with a challenger; POST /admin/shadow "
                               "changes it).")
    canary_share: float = Field(0.0, ge=0, le=1, description="Share of entities the "
                                "challenger answers (with a challenger; POST /admin/canary "
                                "changes it).")

    @model_validator(mode="after")
    def _queue_holds_a_request(self) -> ServingConfig:
        if self.max_queued_rows < self.max_batch:
            raise ValueError(f"max_queued_rows ({self.max_queued_rows}) must hold one whole "
                             f"request (max_batch {self.max_batch})")
        if self.sample_rate > 0 and not self.sample_root:
            raise ValueError("sample_rate is set but sample_root is not: where would the "
                             "sampled requests go?")
        return self


class ShadowSetting(BaseModel):
    rate: float = Field(ge=0, le=1, description="Share of the champion's calls the "
                        "challenger scores in shadow (0: off).")


class CanarySetting(BaseModel):
    share: float = Field(ge=0, le=1, description="Share of entities (X-Entity-Id, or the "
                         "first id of predict-by-entity) the challenger answers (0: none).")


class TrialStatus(BaseModel):
    """The challenger on trial: its shadow rate, its canary share, and the two versions."""

    rate: float
    share: float
    champion: str | None
    challenger: str | None
    source: str


class AdminStatus(BaseModel):
    serving: str | None
    previous: str | None
    held: str | None
    refused: dict[str, str]
    source: str


class JsonBytes(Response):
    """A JSON response from orjson bytes, its two headers built directly (Starlette's
    ``init_headers`` is slower, on every response)."""

    media_type = "application/json"

    def __init__(self, body: bytes) -> None:
        self.status_code, self.body, self.background = 200, body, None
        self.raw_headers = [(b"content-length", str(len(body)).encode()),
                            (b"content-type", b"application/json")]


class LeanRoute(APIRoute):
    """A documented route whose endpoint takes the Request alone and returns a Response.

    FastAPI documents it from the route's options as usual, but a request skips FastAPI's
    dependency solving, response-model validation and exit stacks (Starlette's plain
    request handling; errors still reach the app's handlers), a large share of a one-row
    infer's CPU time (``make bench-serving`` profiles it).
    Only for endpoints that parse their own body (``parse_body``) and build their response.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **options: Any) -> None:
        super().__init__(path, endpoint, **options)
        self.app = request_response(endpoint)


def _json(body: Any) -> Response:
    return JsonBytes(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY))


def _batched(path: str) -> bool:
    return path.endswith("/infer") or path == "/v1/predict"


def make_runner(config: ServingConfig, metrics: ServiceMetrics,
                watchers: tuple[Watcher, ...] = ()) -> InferenceRunner:
    limit = RowLimit(config.max_queued_rows, config.retry_after_s)
    inline_s = config.inline_budget_us / 1e6
    observe = observer(metrics, watchers)
    if config.batch_window_ms > 0:
        return MicroBatcher(config.batch_window_ms, config.batch_max_rows, observe, limit,
                            inline_s)
    return DirectRunner(config.inference_threads, observe, limit, inline_s)


class Watcher(Protocol):
    """Told of each ONNX Runtime call's rows and scores: the request sample, the shadow."""

    def offer(self, predictor: OnnxPredictor, matrix: np.ndarray,
              scores: np.ndarray) -> None: ...


def observer(metrics: ServiceMetrics, watchers: tuple[Watcher, ...]) -> Observer:
    """What each ONNX Runtime call tells: the metrics, then each watcher."""
    def observe(predictor: OnnxPredictor, matrix: np.ndarray, scores: np.ndarray,
                seconds: float) -> None:
        metrics.observe_inference(len(matrix), seconds)
        for watcher in watchers:
            watcher.offer(predictor, matrix, scores)

    return observe


def request_sampler(config: ServingConfig) -> RequestSampler | None:
    if config.sample_rate <= 0 or not config.sample_root:
        return None
    return RequestSampler(config.sample_root, config.sample_rate,
                          flush_s=config.sample_flush_s)


def not_ready_reason(app: FastAPI) -> str | None:
    """Why the service is not ready, or None when it is."""
    if app.state.manager.current is None:
        return "no model loaded"
    if app.state.config.entity_lookup and app.state.lookup is None:
        return "feature store not open yet"
    return None


def served(manager: ModelManager, request: Request, name: str | None = None,
           version: str | None = None, canary: Canary | None = None,
           entity: str | None = None) -> OnnxPredictor:
    """The predictor serving now, checked against the name and version a route asks for;
    the challenger instead for an entity in the canary (a request that names no version;
    the entity: ``entity``, else the X-Entity-Id header)."""
    predictor = manager.current
    if predictor is None:
        raise NotReady("no model loaded")
    if name is not None and name != predictor.name:
        raise UnknownModel(f"model {name!r} is not served here; this service serves "
                           f"{predictor.name!r}")
    if version is not None and version != predictor.version:
        raise UnknownModel(f"version {version!r} of {predictor.name!r} is not served; "
                           f"serving version {predictor.version}")
    if canary is not None and version is None:
        predictor = canary.route(predictor, entity or request.headers.get(ENTITY_HEADER))
    request.scope.setdefault("state", {})["model_version"] = predictor.version  # access log
    return predictor


def check_admin(config: ServingConfig, authorization: str | None) -> None:
    """Constant-time bearer check; the token is never echoed or logged.

    401 (with WWW-Authenticate) when no bearer token is sent; 403 when one is sent and is
    not the admin token, or admin is disabled (no token would help).
    """
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("admin endpoints need 'Authorization: Bearer <admin token>'")
    if config.admin_token is None:
        raise AdminDisabled("admin endpoints are disabled: no admin token is configured "
                            "(MLOPS_ADMIN_TOKEN or MLOPS_ADMIN_TOKEN_FILE)")
    expected = config.admin_token.get_secret_value().encode()
    if not hmac.compare_digest(token.encode(), expected):
        raise Forbidden("the bearer token is not this service's admin token")


def v1_response(predictor: OnnxPredictor, scores: np.ndarray, **extra: Any) -> Response:
    body = PredictResponse(model=predictor.name, version=predictor.version, predictions=[],
                           labels=scores_to_labels(scores, predictor.task,
                                                   classes=predictor.classes),
                           **extra).model_dump(exclude_none=True)
    body["predictions"] = scores
    return _json(body)


def create_app(manager: ModelManager, lookup: FeatureLookup | None = None,
               config: ServingConfig | None = None,
               access_log: AccessLog | None = None, audit: AdminAudit | None = None,
               challenger: ModelManager | None = None) -> FastAPI:
    """The service around a manager (ready once it serves a model). ``app.state.lookup``
    may be attached later: a feature store opens in the background at start-up. Access
    lines go to stderr unless ``config.access_log`` is off or ``access_log`` is given.
    ``audit`` records each admin reload and rollback before it acts (its failure refuses
    the action). ``challenger`` follows the challenger alias, for the shadow."""
    config = config or ServingConfig(entity_lookup=lookup is not None)
    if access_log is None:
        access_log = AccessLog.to_stderr() if config.access_log else AccessLog(None)
    metrics = ServiceMetrics()
    sampler = request_sampler(config)
    shadow = Shadow(challenger, config.shadow_rate) if challenger is not None else None
    canary = Canary(challenger, config.canary_share) if challenger is not None else None
    if shadow is not None:
        metrics.registry.register(shadow)
    runner = make_runner(config, metrics,
                         tuple(w for w in (sampler, shadow) if w is not None))
    lookups = OffLoop("feature-lookup")  # the store's reads are serialised by its lock

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        flusher = asyncio.create_task(access_log.flush_every(1.0))
        if sampler is not None:
            sampler.start()
        yield
        flusher.cancel()
        runner.close()
        if sampler is not None:
            sampler.close()
        if shadow is not None:
            shadow.close()
        lookups.close()
        access_log.flush()  # uvicorn re-raises SIGTERM once shut down: no exit hook runs

    # FastAPI's own OpenTelemetry hooks are off: /metrics is the service's observability,
    # and their per-request check is paid on every request.
    app = ServiceApp(title="mlops inference service", version="2", lifespan=lifespan,
                  telemetry={"tracing": False, "metrics": False, "logs": False,
                             "operation_spans": False},
                  description="Open Inference Protocol (KServe v2) REST; plain JSON predict "
                              "by features or by entity id; Prometheus metrics; admin.")
    app.state.manager, app.state.lookup, app.state.config = manager, lookup, config
    app.state.metrics, app.state.runner = metrics, runner
    app.state.sampler, app.state.shadow, app.state.canary = sampler, shadow, canary
    install_error_handlers(app)
    observed = partial(ObservabilityMiddleware, metrics=metrics, runner=runner,
                       access_log=access_log, max_body_bytes=config.max_body_bytes,
                       batched_paths=_batched, retry_after_s=config.retry_after_s)
    app.add_middleware(observed)
    manager.listener = lambda result, current: metrics.model_changed(result.status, current)
    if manager.current is not None:
        metrics.model_changed("loaded", manager.current)
    # Routes match in order: the inference routes come first.
    _v2_routes(app, manager, runner, config, canary)
    _v1_routes(app, manager, runner, config, lookups, canary)
    _health_routes(app)
    _admin_routes(app, manager, config, audit or (lambda action, details: None), shadow,
                  canary)
    install_hot_routes(app, observed)
    app.state.lane = FastLane(manager, runner, metrics, access_log, config.max_batch,
                              batched=config.batch_window_ms > 0, canary=canary)
    # FastAPI adds its documentation routes first; they go last so inference matches first.
    app.router.routes.sort(key=lambda route: getattr(route, "path", "") in _DOC_PATHS)
    openapi.install(app, manager, config.max_batch)
    return app


def _health_routes(app: FastAPI) -> None:
    @app.get("/v2/health/live", tags=["health"], summary="Server live (liveness probe)")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready", tags=["health"], summary="Server ready (readiness probe)",
             responses={503: {"model": ErrorBody}})
    async def ready() -> JSONResponse:
        reason = not_ready_reason(app)
        if reason:
            return JSONResponse({"ready": False, "error": reason}, 503)
        return JSONResponse({"ready": True})

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics",
             response_class=Response,
             responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
    async def metrics() -> Response:
        return Response(generate_latest(app.state.metrics.registry),
                        media_type=CONTENT_TYPE_LATEST)


def _path_parameters(endpoint: Callable, *names: str) -> dict[str, Any]:
    """``openapi_extra`` declaring the path parameters the endpoint does not take itself
    (it reads them from ``request.path_params``), so that the document names every one."""
    declared = inspect.signature(endpoint).parameters
    return {"parameters": [{"name": name, "in": "path", "required": True,
                            "schema": {"type": "string", "title": name.title()}}
                           for name in names if name not in declared]}


def _both(app: FastAPI, method: str, path: str, endpoint: Callable, **options: Any) -> None:
    """Register a v2 model route at /v2/models/{name}<path> and under /versions/{version}.

    One endpoint serves both and reads ``version`` (and, for the lean infer route,
    ``name``) from the path parameters, so those are documented here.
    """
    summary, extra = options.pop("summary"), options.pop("openapi_extra", {})
    app.router.add_api_route(f"/v2/models/{{name}}{path}", endpoint, methods=[method],
                             summary=summary,
                             openapi_extra={**extra, **_path_parameters(endpoint, "name")},
                             **options)
    app.router.add_api_route(f"/v2/models/{{name}}/versions/{{version}}{path}", endpoint,
                             methods=[method], summary=f"{summary} of a version",
                             operation_id=f"{endpoint.__name__}_version",
                             openapi_extra={**extra, **_path_parameters(endpoint, "name",
                                                                        "version")},
                             **options)


def _v2_routes(app: FastAPI, manager: ModelManager, runner: InferenceRunner,
               config: ServingConfig, canary: Canary | None) -> None:
    async def model_metadata(name: str, request: Request) -> v2.ModelMetadata:
        p = served(manager, request, name, request.path_params.get("version"))
        return v2.model_metadata(p.name, p.version, p.feature_names, p.task, p.sha256,
                                 p.classes)

    async def model_ready(name: str, request: Request) -> v2.ModelReady:
        predictor = served(manager, request, name, request.path_params.get("version"))
        return v2.ModelReady(name=predictor.name, ready=not_ready_reason(app) is None)

    async def infer(request: Request) -> Response:
        body, binary = await parse_with_binary(request, v2.InferRequest)
        params = request.path_params
        predictor = served(manager, request, params["name"], params.get("version"), canary)
        wanted = v2.selected_outputs(body, predictor.task)
        matrix = (v2.to_matrix(body, predictor.feature_names, config.max_batch, binary)
                  if predictor.encoding is None
                  else tensors_matrix(body.inputs, predictor.encoding, config.max_batch))
        scores = await runner.predict(predictor, matrix, request.scope)
        labels = (scores_to_labels(scores, predictor.task, classes=predictor.classes)
                  if "label" in wanted else None)
        as_binary = v2.binary_outputs(body)
        if not as_binary:
            return _json(v2.infer_response(predictor.name, predictor.version, body.id, wanted,
                                           scores, labels))
        content, json_length = v2.binary_response(predictor.name, predictor.version, body.id,
                                                  wanted, scores, labels, as_binary)
        return Response(content, media_type="application/octet-stream",
                        headers={BINARY_HEADER.decode(): str(json_length)})

    _both(app, "POST", "/infer", infer, tags=["v2"], summary="Inference",
          responses=V2_ERRORS, response_model=v2.InferResponse,
          openapi_extra=openapi.documented_body(v2.InferRequest), route_class_override=LeanRoute)
    _both(app, "GET", "", model_metadata, tags=["v2"], summary="Model metadata",
          responses=V2_ERRORS, response_model=v2.ModelMetadata)
    _both(app, "GET", "/ready", model_ready, tags=["v2"], summary="Model ready",
          responses=V2_ERRORS, response_model=v2.ModelReady)

    @app.get("/v2", tags=["v2"], summary="Server metadata")
    async def server_metadata() -> v2.ServerMetadata:
        return SERVER


def _v1_routes(app: FastAPI, manager: ModelManager, runner: InferenceRunner,
               config: ServingConfig, lookups: OffLoop, canary: Canary | None) -> None:
    @app.get("/v1/model", tags=["v1"], summary="The model being served",
             responses=V1_ERRORS)
    async def model(request: Request) -> dict[str, Any]:
        return {**served(manager, request).describe(), "max_batch": config.max_batch,
                "entity_lookup": app.state.lookup is not None}

    async def predict(request: Request) -> Response:
        body = await parse_body(request, PredictRequest)
        predictor = served(manager, request, canary=canary)
        check_rows(len(body.records), config.max_batch, "records")
        matrix = (records_to_matrix(body.records, predictor.feature_names)
                  if predictor.encoding is None
                  else records_matrix(body.records, predictor.encoding))
        return v1_response(predictor, await runner.predict(predictor, matrix, request.scope))

    app.router.add_api_route(
        "/v1/predict", predict, methods=["POST"], tags=["v1"],
        summary="Predict from feature values", response_model=PredictResponse,
        response_model_exclude_none=True, responses=V1_ERRORS,
        openapi_extra=openapi.documented_body(PredictRequest), route_class_override=LeanRoute)

    async def predict_entity(request: Request) -> Response:
        body = await parse_body(request, EntityRequest)
        predictor = served(manager, request, canary=canary,
                           entity=str(body.entity_ids[0]) if body.entity_ids else None)
        lookup = app.state.lookup
        if lookup is None:
            raise NotReady("no feature store configured for predict-by-entity")
        if not body.entity_ids:
            raise BadInput("entity_ids is empty; send at least one id")
        check_rows(len(body.entity_ids), config.max_batch, "ids")
        ids = list(body.entity_ids)
        values = await lookups(lookup.matrix, ids)
        matrix = (entity_matrix(values, ids, lookup.spec.features, predictor.feature_names)
                  if predictor.encoding is None
                  else entity_rows(values, ids, predictor.encoding))
        scores = await runner.predict(predictor, matrix)
        return v1_response(predictor, scores, entity_ids=body.entity_ids)

    app.router.add_api_route(
        "/v1/predict/entity", predict_entity, methods=["POST"], tags=["v1"],
        summary="Predict from the online store", response_model=PredictResponse,
        response_model_exclude_none=True, responses={**V1_ERRORS, 404: V1_ERRORS[400]},
        openapi_extra=openapi.documented_body(EntityRequest), route_class_override=LeanRoute)


def _admin_routes(app: FastAPI, manager: ModelManager, config: ServingConfig,
                  audit: AdminAudit, shadow: Shadow | None, canary: Canary | None) -> None:
    @app.get("/admin/status", tags=["admin"], summary="Served, previous, refused versions",
             responses=ADMIN_ERRORS)
    async def status(authorization: AdminAuth = None) -> AdminStatus:
        check_admin(config, authorization)
        version = lambda p: p.version if p else None  # noqa: E731
        return AdminStatus(serving=version(manager.current), previous=version(manager.previous),
                           held=manager.held, refused=manager.refused, source=manager.source.uri)

    @app.post("/admin/reload", tags=["admin"], responses=ADMIN_ERRORS,
              summary="Serve the version the alias names now (load, verify, warm, swap)")
    async def reload(authorization: AdminAuth = None) -> SwapResult:
        check_admin(config, authorization)
        await run_in_threadpool(audit, "service.reloaded", _versions(manager))
        result = await run_in_threadpool(manager.refresh, True)
        if result.status == "refused":
            raise SwapRefused(f"version {result.version} refused, still serving "
                              f"{result.serving}: {result.detail}")
        return result

    @app.post("/admin/rollback", tags=["admin"], responses=ADMIN_ERRORS,
              summary="Serve the previous version again")
    async def rollback(authorization: AdminAuth = None) -> SwapResult:
        check_admin(config, authorization)
        await run_in_threadpool(audit, "service.rolled_back", _versions(manager))
        return await run_in_threadpool(manager.rollback)

    def trial_status() -> TrialStatus:
        if shadow is None or canary is None:
            raise NoChallenger("this service has no challenger (start it with a model URI "
                               "that names an alias, or --challenger-uri)")
        version = lambda p: p.version if p else None  # noqa: E731
        return TrialStatus(rate=shadow.rate, share=canary.share,
                           champion=version(manager.current),
                           challenger=version(shadow.challenger.current),
                           source=shadow.challenger.source.uri)

    async def put_on_trial(action: str, value: float, apply: Callable[[float], None]
                           ) -> TrialStatus:
        """Audit the change, load the challenger the alias names now (when turning the
        trial on), then apply it."""
        status = trial_status()
        await run_in_threadpool(audit, action, {**status.model_dump(), "new": value})
        if value > 0:
            problem = await run_in_threadpool(load_challenger, shadow.challenger,
                                              manager.current)
            if problem:
                raise SwapRefused(problem)
        apply(value)
        return trial_status()

    @app.get("/admin/shadow", tags=["admin"], responses=ADMIN_ERRORS,
             summary="The challenger on trial: its shadow rate and canary share")
    @app.get("/admin/canary", tags=["admin"], responses=ADMIN_ERRORS,
             summary="The challenger on trial: its shadow rate and canary share")
    async def trial_get(authorization: AdminAuth = None) -> TrialStatus:
        check_admin(config, authorization)
        return trial_status()

    @app.post("/admin/shadow", tags=["admin"], responses=ADMIN_BODY_ERRORS,
              summary="Score a share of calls with the challenger, off the request path")
    async def shadow_set(setting: ShadowSetting, authorization: AdminAuth = None
                         ) -> TrialStatus:
        check_admin(config, authorization)
        return await put_on_trial("service.shadow", setting.rate,
                                  lambda rate: setattr(shadow, "rate", rate))

    @app.post("/admin/canary", tags=["admin"], responses=ADMIN_BODY_ERRORS,
              summary="Answer a share of entities with the challenger (sticky by entity)")
    async def canary_set(setting: CanarySetting, authorization: AdminAuth = None
                         ) -> TrialStatus:
        check_admin(config, authorization)
        return await put_on_trial("service.canary", setting.share,
                                  lambda share: setattr(canary, "share", share))


def _versions(manager: ModelManager) -> dict[str, Any]:
    """What an admin action acts on: the versions served and held now."""
    return {"serving": manager.current.version if manager.current else None,
            "previous": manager.previous.version if manager.previous else None}
