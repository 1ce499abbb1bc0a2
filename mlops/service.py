"""Process entry point of the CPU inference service.

``python -m mlops.service --model-uri models:/<name>@champion --tracking-uri <uri>
--spec <spec.yaml> --data-dir <dir> --host 127.0.0.1 --port 8080`` fetches the model
from the MLflow registry, verifies its sha256, opens the Feast online store when a spec
is given (for predict-by-entity), and serves until SIGTERM/SIGINT. ``--onnx PATH
--sha256 HEX`` serves a local file instead. Exit status 2 with a one-line reason when
the model cannot be loaded or verified; logs go to stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from mlops.config import Settings, load_spec
from mlops.serving import (
    MAX_BATCH,
    FeatureLookup,
    ModelIntegrityError,
    OnnxPredictor,
    create_app,
)

log = logging.getLogger("mlops.service")


class StartupError(RuntimeError):
    """The service cannot start; the message says why."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    settings = Settings()
    parser = argparse.ArgumentParser(prog="python -m mlops.service", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model-uri", help="models:/<name>@<alias> or models:/<name>/<version>")
    source.add_argument("--onnx", type=Path, help="serve this local ONNX file")
    parser.add_argument("--tracking-uri", default=settings.tracking)
    parser.add_argument("--sha256", help="expected sha256 of --onnx")
    parser.add_argument("--allow-unverified", action="store_true",
                        help="serve a model that has no expected sha256")
    parser.add_argument("--name", help="model name reported for --onnx (default: file stem)")
    parser.add_argument("--model-version", default="local", help="version reported for --onnx")
    parser.add_argument("--spec", type=Path, help="dataset spec: enables predict-by-entity")
    parser.add_argument("--data-dir", type=Path, default=settings.data_dir)
    parser.add_argument("--host", default=settings.serve_host)
    parser.add_argument("--port", type=int, default=settings.serve_port)
    parser.add_argument("--max-batch", type=int, default=MAX_BATCH)
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"])
    return parser.parse_args(argv)


def _require_hash(expected: str | None, what: str, allow_unverified: bool) -> None:
    if expected is None and not allow_unverified:
        raise StartupError(f"{what} has no expected sha256; refusing to serve an unverified "
                           "model (pass --sha256, or --allow-unverified)")


def load_predictor(args: argparse.Namespace) -> OnnxPredictor:
    """The verified predictor from a local file or from the registry."""
    if args.onnx is not None:
        _require_hash(args.sha256, str(args.onnx), args.allow_unverified)
        return OnnxPredictor.load(str(args.onnx), args.sha256, args.name, args.model_version)
    from mlops.registry import fetch_model  # MLflow is imported only on this path

    with tempfile.TemporaryDirectory(prefix="mlops-model-") as folder:
        fetched = fetch_model(args.tracking_uri, args.model_uri, Path(folder))
        _require_hash(fetched.sha256, args.model_uri, args.allow_unverified)
        # load() keeps the verified bytes in the session, so the download can go.
        return OnnxPredictor.load(str(fetched.path), fetched.sha256, fetched.name,
                                  str(fetched.version))


def load_lookup(args: argparse.Namespace, predictor: OnnxPredictor) -> FeatureLookup | None:
    """The Feast online lookup for the spec, checked against the model's features."""
    if args.spec is None:
        return None
    spec = load_spec(args.spec)
    if list(spec.features) != predictor.feature_names:
        raise StartupError(f"model features {predictor.feature_names} differ from the spec's "
                           f"{spec.features}")
    from mlops.features import online_lookup  # Feast takes seconds to import

    return online_lookup(spec, args.data_dir)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        predictor = load_predictor(args)
        lookup = load_lookup(args, predictor)
    except ModelIntegrityError as exc:
        log.error("model integrity check failed: %s", exc)
        return 2
    except Exception as exc:  # every startup failure (registry, Feast, spec) in one line
        log.error("cannot start the service: %s", exc)
        return 2
    import uvicorn

    app = create_app(predictor, lookup, max_batch=args.max_batch)
    log.info("serving %s v%s on http://%s:%d (entity lookup: %s)", predictor.name,
             predictor.version, args.host, args.port, lookup is not None)
    # log_config=None: uvicorn's loggers propagate to the stderr handler set up above.
    uvicorn.run(app, host=args.host, port=args.port, log_config=None,
                log_level=args.log_level, access_log=args.log_level == "debug")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
