"""Process entry point of the CPU inference service.

``python -m mlops.serving --model-uri models:/<name>@champion --tracking-uri <uri>
[--spec <spec.yaml> --data-dir <dir>] --host 127.0.0.1 --port 8080`` answers liveness at
once, then loads the alias's version from the MLflow registry (sha256 verified, warmed
up), opens the Feast online store when a spec is given (predict-by-entity) and only then
reports ready. ``--poll-s`` follows the alias; ``POST /admin/reload`` does it at once.
``--onnx PATH --sha256 HEX`` serves a local file instead. When the first model cannot be
loaded or verified the process exits with status 2 and a one-line reason; logs go to
stderr, access logs as one JSON object per line. The admin bearer token comes from
MLOPS_ADMIN_TOKEN or the file named by MLOPS_ADMIN_TOKEN_FILE (a mounted secret), never
from a flag (process lists are readable by other users) and never into a log.

Load is bounded: beyond --max-connections open connections (or requests in progress) and
beyond --max-queued-rows rows waiting for inference a request is answered 503 with
Retry-After (--retry-after-s) at once instead of queueing. A request's headers must arrive
within --header-timeout-s and its body within --body-timeout-s after them (else 408 and the
connection is closed), so slow or lying clients cannot hold connections.

``--grpc-port`` also serves the protocol's gRPC service on the same event loop, sharing the
model manager (a hot swap is seen by both), micro-batching, limits and metrics.

TLS: ``--ssl-certfile`` and ``--ssl-keyfile`` serve https (and gRPC over TLS);
``--ssl-ca-certs`` adds mutual TLS (clients must present a certificate that CA signed).
The files are checked before any port opens (``mlops.serving.tls``).
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from pydantic import SecretStr

from mlops.config import DatasetSpec, Settings, load_spec
from mlops.data import storage
from mlops.registry import CHALLENGER
from mlops.serving.app import AdminAudit, ServingConfig, create_app
from mlops.serving.model_manager import (
    Check,
    FileSource,
    ModelManager,
    ModelSource,
    RegistrySource,
)
from mlops.serving.predictor import ModelContractError, OnnxPredictor
from mlops.serving.protocol import limited_protocol
from mlops.serving.shadow import load_challenger
from mlops.serving.tls import TlsFiles, tls_files

log = logging.getLogger(__name__)


class StartupError(RuntimeError):
    """The service cannot start; the message says why."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    settings, defaults = Settings(), ServingConfig()
    parser = argparse.ArgumentParser(prog="python -m mlops.serving", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model-uri", help="models:/<name>@<alias> or models:/<name>/<version>")
    source.add_argument("--onnx", type=Path, help="serve this local ONNX file")
    add = parser.add_argument
    add("--tracking-uri", default=settings.tracking)
    add("--sha256", help="expected sha256 of --onnx")
    add("--allow-unverified", action="store_true", help="serve a model without a sha256")
    add("--name", help="model name reported for --onnx (default: file stem)")
    add("--model-version", default="local", help="version reported for --onnx")
    add("--spec", type=Path, help="dataset spec: enables predict-by-entity")
    add("--data-dir", type=Path, default=settings.data_dir)
    add("--host", default=settings.serve_host)
    add("--port", type=int, default=settings.serve_port)
    add("--max-batch", type=int, default=defaults.max_batch, help="rows per request")
    add("--max-body-bytes", type=int, default=defaults.max_body_bytes)
    add("--batch-window-ms", type=float, default=defaults.batch_window_ms,
        help="micro-batching window; 0 turns micro-batching off")
    add("--batch-max-rows", type=int, default=defaults.batch_max_rows)
    add("--inference-threads", type=int, default=defaults.inference_threads,
        help="threads running ONNX Runtime when micro-batching is off")
    add("--max-queued-rows", type=int, default=defaults.max_queued_rows,
        help="rows waiting for or in inference at once; beyond, 503 with Retry-After "
             "(default %(default)s; at least --max-batch)")
    add("--max-connections", type=int, default=defaults.max_connections,
        help="open connections and requests in progress; beyond, 503 with Retry-After "
             "and the connection closed (default %(default)s)")
    add("--header-timeout-s", type=float, default=defaults.header_timeout_s,
        help="seconds to receive a request's headers, and a new connection's first "
             "request, else 408 and close (default %(default)s)")
    add("--body-timeout-s", type=float, default=defaults.body_timeout_s,
        help="seconds to receive a request's body after its headers, else 408 and close "
             "(default %(default)s)")
    add("--retry-after-s", type=int, default=defaults.retry_after_s,
        help="Retry-After of the 503s when full (default %(default)s)")
    add("--inline-budget-us", type=float, default=defaults.inline_budget_us,
        help="ONNX Runtime calls that took at most this long at warm-up run on the event "
             "loop instead of a thread (0: never; default %(default)s)")
    add("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default 1)")
    add("--poll-s", type=float, default=0.0, help="follow the alias every N s (0: only on "
                                                   "POST /admin/reload)")
    add("--grpc-port", type=int, default=0, help="Open Inference Protocol gRPC on this port "
        "too, sharing the model, batching and metrics (0: off)")
    add("--ssl-certfile", type=Path, help="PEM certificate (chain): serve https (and gRPC "
        "over TLS)")
    add("--ssl-keyfile", type=Path, help="PEM private key of --ssl-certfile")
    add("--ssl-ca-certs", type=Path, help="PEM CA of client certificates: mutual TLS, "
        "every client must present a certificate this CA signed")
    add("--sample-rate", type=float, default=defaults.sample_rate,
        help="share of scored rows recorded for drift monitoring, off the request path "
             "(0: none; default %(default)s)")
    add("--sample-root", default=None, help="data root the sampled rows go to, under "
        "monitoring/<model>/requests/ (default: the platform's data root)")
    add("--sample-flush-s", type=float, default=defaults.sample_flush_s,
        help="seconds between writes of the sample (default %(default)s)")
    add("--challenger-uri", help="the challenger scored in shadow (default: the --model-uri's "
        "model @challenger)")
    add("--challenger-onnx", type=Path, help="a local ONNX file as the challenger")
    add("--challenger-sha256", help="expected sha256 of --challenger-onnx")
    add("--shadow-rate", type=float, default=defaults.shadow_rate,
        help="share of calls the challenger scores in shadow, off the request path; POST "
             "/admin/shadow changes it (default %(default)s)")
    add("--canary-share", type=float, default=defaults.canary_share,
        help="share of entities (X-Entity-Id, or predict-by-entity's first id) the "
             "challenger answers; POST /admin/canary changes it (default %(default)s)")
    add("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    add("--no-access-log", action="store_true", help="no JSON line per request")
    return parser.parse_args(argv)


def admin_token(environ: dict[str, str] | os._Environ = os.environ) -> SecretStr | None:
    """The admin token from MLOPS_ADMIN_TOKEN, or from the file MLOPS_ADMIN_TOKEN_FILE;
    at least 16 characters either way."""
    token, where = environ.get("MLOPS_ADMIN_TOKEN", "").strip(), "MLOPS_ADMIN_TOKEN"
    path = environ.get("MLOPS_ADMIN_TOKEN_FILE")
    if not token and path:
        try:
            token, where = Path(path).read_text().strip(), path
        except OSError as exc:
            raise StartupError(f"cannot read the admin token file {path}: "
                               f"{exc.strerror}") from None
    if not token:
        return None
    if len(token) < 16:
        raise StartupError(f"the admin token in {where} is shorter than 16 characters")
    return SecretStr(token)


def model_source(args: argparse.Namespace) -> FileSource | RegistrySource:
    if args.onnx is not None:
        return FileSource(args.onnx, args.sha256, args.name or args.onnx.stem, args.model_version)
    return RegistrySource(args.tracking_uri, args.model_uri)


def challenger_source(args: argparse.Namespace) -> FileSource | RegistrySource | None:
    """The challenger: a flag's, else the served model's ``challenger`` alias (none for a
    local file or a fixed version)."""
    if args.challenger_onnx is not None:
        name = args.name or (args.onnx.stem if args.onnx else None)
        return FileSource(args.challenger_onnx, args.challenger_sha256,
                          name or args.challenger_onnx.stem, "challenger")
    if args.challenger_uri:
        return RegistrySource(args.tracking_uri, args.challenger_uri)
    if args.model_uri and "@" in args.model_uri:
        name, alias = args.model_uri.removeprefix("models:/").split("@", 1)
        if alias != CHALLENGER:
            return RegistrySource(args.tracking_uri, f"models:/{name}@{CHALLENGER}")
    return None


def feature_check(spec: DatasetSpec | None) -> Check | None:
    """Refuse a version whose features differ from the feature service the store serves."""
    if spec is None:
        return None

    def check(predictor: OnnxPredictor) -> None:
        if predictor.feature_names != list(spec.features):
            raise ModelContractError(f"model features {predictor.feature_names} differ from "
                                     f"the feature service's {list(spec.features)}")
    return check


def admin_audit(source: ModelSource, data_dir: Path) -> AdminAudit:
    """Admin reloads and rollbacks go to the audit trail of the service's data directory,
    as the holder of this service's admin token acting on its model (a team's model is
    named ``<team>.<dataset>``)."""
    settings, model = Settings(data_dir=data_dir), getattr(source, "name", source.uri)
    team = model.split(".", 1)[0] if "." in model else None

    def audit(action: str, details: dict[str, Any]) -> None:
        from mlops.governance.audit.log import open_audit_log

        with open_audit_log(settings) as log:
            log.append(action, "service-admin-token", team, model, details)
    return audit


def sample_root() -> str:
    """The platform's data root, its object store's settings applied on production."""
    settings = Settings()
    storage.use_object_store(settings)
    return storage.data_root(settings)


def start_up(args: argparse.Namespace, spec: DatasetSpec | None, manager: ModelManager,
             app: FastAPI, on_failure: Callable[[], None]) -> None:
    """Load the first model, open the feature store, then poll: the service turns ready."""
    try:
        result = manager.refresh()
        if manager.current is None:
            raise StartupError(result.detail or f"no model loaded from {manager.source.uri}")
        if spec is not None:
            from mlops.features.online import online_lookup  # Feast takes seconds to import

            app.state.lookup = online_lookup(spec, args.data_dir)
    except Exception as exc:  # every start-up failure (registry, Feast, spec) in one line
        log.error("cannot start the service: %s", exc)
        on_failure()
        return
    if args.poll_s > 0:
        manager.poll(args.poll_s)
    shadow, canary = app.state.shadow, app.state.canary
    if shadow is not None and (shadow.rate > 0 or canary.share > 0):
        problem = load_challenger(shadow.challenger, manager.current)
        if problem:
            shadow.rate = canary.share = 0.0
            log.warning("no shadow and no canary: %s", problem)
        elif args.poll_s > 0:
            shadow.challenger.poll(args.poll_s)
    # Everything imported so far (MLflow, Feast) lives as long as the process: keep it
    # out of the garbage collector's full passes, which otherwise stall requests.
    gc.collect()
    gc.freeze()
    current = manager.current
    log.info("serving %s v%s on %s://%s:%d (entity lookup: %s)", current.name,
             current.version, "https" if args.ssl_certfile else "http", args.host, args.port,
             spec is not None)


def _configure_logging(level: str) -> None:
    logging.basicConfig(stream=sys.stderr, level=level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def uvicorn_config(app: FastAPI, config: ServingConfig, host: str, port: int,
                   log_level: str = "info", tls: TlsFiles | None = None) -> Any:
    """uvicorn's settings for the service: its protocol with the read deadlines and the
    connection bound (``mlops.serving.protocol``; uvicorn's own ``limit_concurrency``
    answers 503 without Retry-After), no uvicorn access log (the app writes its own),
    uvicorn's loggers propagating to the process's stderr handler (log_config=None), and
    https (mutual when ``tls`` names a client CA) with the context ``mlops.serving.tls``
    checked."""
    import uvicorn

    protocol = limited_protocol(config.header_timeout_s, config.body_timeout_s,
                                config.max_connections, getattr(app.state, "lane", None),
                                config.max_body_bytes)
    options: dict[str, Any] = {}
    if tls is not None:
        context = tls.server_context()
        options = {"ssl_certfile": tls.certfile, "ssl_keyfile": tls.keyfile,
                   "ssl_context_factory": lambda config, default: context}
    return uvicorn.Config(app, host=host, port=port, http=protocol, log_config=None,
                          log_level=log_level, access_log=False, **options)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    _configure_logging(args.log_level)
    try:
        if args.threads is not None and args.threads < 1:
            raise StartupError(f"--threads must be at least 1, got {args.threads}")
        spec = load_spec(args.spec) if args.spec else None
        config = ServingConfig(
            max_batch=args.max_batch, max_body_bytes=args.max_body_bytes,
            batch_window_ms=args.batch_window_ms, batch_max_rows=args.batch_max_rows,
            inference_threads=args.inference_threads, max_queued_rows=args.max_queued_rows,
            max_connections=args.max_connections, header_timeout_s=args.header_timeout_s,
            body_timeout_s=args.body_timeout_s, retry_after_s=args.retry_after_s,
            inline_budget_us=args.inline_budget_us,
            admin_token=admin_token(), entity_lookup=spec is not None,
            access_log=not args.no_access_log, sample_rate=args.sample_rate,
            sample_root=args.sample_root or sample_root(),
            sample_flush_s=args.sample_flush_s, shadow_rate=args.shadow_rate,
            canary_share=args.canary_share)
        tls = tls_files(args.ssl_certfile, args.ssl_keyfile, args.ssl_ca_certs)
        manager = ModelManager(model_source(args), args.threads, not args.allow_unverified,
                               feature_check(spec))
        source = challenger_source(args)
        challenger = source and ModelManager(source, args.threads, not args.allow_unverified,
                                             feature_check(spec))
    except Exception as exc:  # bad flags, spec or token file: one line, no traceback
        log.error("cannot start the service: %s", exc)
        return 2
    import uvicorn

    app = create_app(manager, None, config, audit=admin_audit(manager.source, args.data_dir),
                     challenger=challenger)
    if args.grpc_port:
        from mlops.serving.grpc import attach_grpc  # grpc's import is paid only when used

        attach_grpc(app, args.host, args.grpc_port, tls)
    server = uvicorn.Server(uvicorn_config(app, config, args.host, args.port, args.log_level,
                                           tls))
    failed = threading.Event()

    def fail() -> None:
        failed.set()
        server.should_exit = True

    threading.Thread(target=start_up, args=(args, spec, manager, app, fail),
                     name="start-up", daemon=True).start()
    try:
        server.run()
    except SystemExit:  # uvicorn exits 3 when start-up fails (a gRPC port in use, say)
        failed.set()
    manager.stop()
    return 2 if failed.is_set() else 0

