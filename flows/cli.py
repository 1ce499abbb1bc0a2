"""The command line: ``mlops run``, ``mlops stop`` and ``mlops hash-secret``.

Heavy libraries (Prefect, Feast, MLflow, torch) are imported by the command that needs them,
so ``mlops --help`` and ``mlops stop`` answer at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from mlops.config import DEFAULT_SPEC, ConfigError, ModelSettings, Settings, load_spec


def _run(args: argparse.Namespace) -> int:
    from flows.training_pipeline import training_pipeline
    from mlops.pipeline.stages import PipelineParams
    from mlops.serving.client import example_record, predict_entities, predict_records

    spec = load_spec(args.spec)
    params = PipelineParams(spec=spec, model=ModelSettings(epochs=args.epochs), team=args.team,
                            deploy=not args.no_deploy)
    summary = training_pipeline(params)
    print(f"\nmodel {summary.model_name} v{summary.model_version} aliases "
          f"{','.join(summary.aliases)}; test metrics {json.dumps(summary.metrics)}")
    if summary.endpoint is None:
        return 0
    entity, record = example_record(spec)
    print(f"service (champion v{summary.champion_version}): {summary.endpoint}")
    print(f"prediction from features {json.dumps(record)}:\n  "
          f"{json.dumps(predict_records(summary.endpoint, [record]))}")
    print(f"prediction by entity {spec.entity}={entity} (Feast online store):\n  "
          f"{json.dumps(predict_entities(summary.endpoint, [entity]))}")
    body = json.dumps({"records": [record]})
    print(f"try it: curl -s -X POST {summary.endpoint}/v1/predict "
          f"-H 'content-type: application/json' -d '{body}'")
    print("stop it: make stop")
    return 0


def _stop(args: argparse.Namespace) -> int:
    from mlops.serving.deploy import stop_service

    print("service stopped" if stop_service(Settings()) else "no service was running")
    return 0


def _hash_secret(args: argparse.Namespace) -> int:
    """Print the scrypt hash of a secret read from standard input (one line, not echoed)."""
    import getpass

    from mlops.governance.identities import hash_secret

    secret = (getpass.getpass("secret: ") if sys.stdin.isatty()
              else sys.stdin.readline().rstrip("\n"))
    print(hash_secret(secret))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlops", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the training pipeline and serve the champion")
    run.add_argument("--spec", default=str(DEFAULT_SPEC), help="dataset spec (YAML)")
    run.add_argument("--epochs", type=int, default=ModelSettings().epochs)
    run.add_argument("--team", default="default")
    run.add_argument("--no-deploy", action="store_true", help="skip starting the service")
    run.set_defaults(handler=_run)
    stop = commands.add_parser("stop", help="stop the inference service")
    stop.set_defaults(handler=_stop)
    hashing = commands.add_parser("hash-secret", help="the teams-file credential of a password "
                                  "or token read from standard input")
    hashing.set_defaults(handler=_hash_secret)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("mlops").setLevel(logging.INFO)
    try:
        return args.handler(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # the CLI reports any failure as one line; logs hold the trace
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
