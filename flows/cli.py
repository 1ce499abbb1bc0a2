"""The command line: ``mlops run``, ``mlops stop``, ``mlops approve``, ``mlops hash-secret`` and
``mlops audit``.

Heavy libraries (Prefect, Feast, MLflow, torch) are imported by the command that needs them,
so ``mlops --help`` and ``mlops stop`` answer at once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from flows.cli_errors import command_logging, report_failure
from mlops.config import DEFAULT_SPEC, ConfigError, ModelSettings, Settings, load_spec


def _run(args: argparse.Namespace) -> int:
    from flows.training_pipeline import training_pipeline
    from mlops.pipeline.stages import PipelineParams
    from mlops.serving.client import example_record, predict_entities, predict_records

    spec = load_spec(args.spec)
    try:
        params = PipelineParams(spec=spec, model=ModelSettings(epochs=args.epochs),
                                team=args.team, deploy=not args.no_deploy)
    except ValidationError as exc:
        problems = "; ".join(f"--{'.'.join(map(str, err['loc']))}: {err['msg']}"
                             for err in exc.errors())
        raise ConfigError(f"invalid run options: {problems}") from None
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


def _audit_verify(args: argparse.Namespace) -> int:
    """Walk the whole audit trail; exit 1 naming the first broken record."""
    from mlops.governance.audit.log import open_audit_log

    with open_audit_log(Settings()) as log:
        report = log.verify()
    if report.broken is None:
        print(f"audit trail intact: {report.count} records in {log.name}, head {report.head}")
        return 0
    print(f"audit trail BROKEN in {log.name}: {report.broken}; the {report.count} records "
          "before it hold")
    return 1


def _audit_show(args: argparse.Namespace) -> int:
    """The records that match, oldest first: a table, or JSON lines for auditors."""
    from mlops.governance.audit.log import open_audit_log
    from mlops.governance.audit.records import AuditQuery, format_time

    query = AuditQuery(team=args.team, action=args.action, since=args.since, until=args.until)
    shown = 0
    with open_audit_log(Settings()) as log, _quiet_broken_pipe():
        if not args.json:
            print(f"{'seq':>8}  {'time (UTC)':<27}  {'action':<20}  {'actor':<16}  "
                  f"{'team':<10}  {'subject':<20}  details")
        for record in log.records(query):
            shown += 1
            if args.json:
                sys.stdout.buffer.write(record.line() + b"\n")
                continue
            details = json.dumps(record.details, sort_keys=True, separators=(",", ":"))
            print(f"{record.seq:>8}  {format_time(record.at)}  "
                  f"{record.action:<20}  {record.actor:<16}  {record.team or '-':<10}  "
                  f"{record.subject or '-':<20}  {details[:80]}")
    if not args.json:
        print(f"{shown} record(s) from {log.name}")
    return 0


@contextmanager
def _quiet_broken_pipe() -> Iterator[None]:
    """A reader that stops early (``| head``) ends the listing, not with an error."""
    try:
        yield
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _utc(text: str) -> datetime:
    """An ISO-8601 time; one without a zone is UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _approve(args: argparse.Namespace) -> int:
    """Answer a run waiting for approval, as the caller the gateway authenticates
    (PREFECT_API_URL: the gateway; PREFECT_API_KEY: ``<name>:<secret>``). The gateway names
    the approver and refuses anyone without the team's approver role."""
    from prefect.flow_runs import resume_flow_run

    resume_flow_run(args.run_id, run_input={"approve": not args.reject, "comment": args.comment,
                                            "approver": ""})
    print(f"run {args.run_id}: {'rejected' if args.reject else 'approved'}")
    return 0


def _add_audit(commands: argparse._SubParsersAction) -> None:
    from mlops.governance.audit.records import Action

    audit = commands.add_parser("audit", help="verify or show the audit trail").add_subparsers(
        dest="audit_command", required=True)
    verify = audit.add_parser("verify", help="check every record's hash, MAC and link; exit "
                              "1 naming the first broken one")
    verify.set_defaults(handler=_audit_verify)
    show = audit.add_parser("show", help="list records (oldest first), filtered")
    show.add_argument("--team")
    show.add_argument("--action", choices=[action.value for action in Action])
    show.add_argument("--since", type=_utc, help="ISO-8601 time (UTC unless it says), "
                      "inclusive")
    show.add_argument("--until", type=_utc, help="ISO-8601 time, exclusive")
    show.add_argument("--json", action="store_true", help="JSON lines, as stored (for "
                      "auditors: each with its hash and MAC)")
    show.set_defaults(handler=_audit_show)


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
    _add_audit(commands)
    approve = commands.add_parser("approve", help="approve (or --reject) a run waiting for "
                                  "an approver")
    approve.add_argument("run_id", help="the flow run's id")
    approve.add_argument("--reject", action="store_true", help="keep the current champion")
    approve.add_argument("--comment", default="", help="why (kept in the audit trail)")
    approve.set_defaults(handler=_approve)
    return parser


def _data_dir() -> Path | None:
    """Where the command's log file goes; None when the settings cannot be read (the
    command then meets the same error and reports it)."""
    try:
        return Settings().data_dir
    except ValueError:
        return None


def main(argv: list[str] | None = None) -> int:
    """Exit 0, 2 for an expected failure (bad input or configuration), 1 for any other;
    a failure prints one message and leaves its traceback in the command's log file."""
    args = build_parser().parse_args(argv)
    options = {key: value for key, value in vars(args).items() if not callable(value)}
    with command_logging(args.command, _data_dir(), options) as log_file:
        try:
            return args.handler(args)
        except (Exception, KeyboardInterrupt) as exc:
            return report_failure(exc, args.command, log_file)


if __name__ == "__main__":
    sys.exit(main())
