"""`make bench-chaos`: the platform under a seeded schedule of faults, on the real stack.

`make up` (``python -m infra.services up``) on the production profile
(``benchmarks.chaos_stack``: PostgreSQL, a Redis and an S3-compatible store of the run's
own, the store behind a fault proxy) on free ports in a temporary data directory, with
three teams (``--teams``) sharing a gpu pool of two slots and the fair-share controller.
One training run of the first team registers a champion, which an inference service
(``mlops.serving.deploy.start_service``, supervised) serves; wrk then POSTs one row to its
``/v1/predict`` in 2 s slices. For ``--minutes``, each team keeps one small training run
(synthetic panel in its data folder, ``--epochs``) submitted at a time, while the faults of
``benchmarks.chaos_faults`` come at seeded times (``--seed``): SIGKILLs of the gpu worker,
of a whole node (the worker and its runs), of the inference service and of the fair-share
controller; a Redis restart; the object store away for a window. Then no more submissions,
and up to ``--drain-s`` for the runs to end.

Not injected (yet): restarting the Prefect server, PostgreSQL or the MLflow server.

Targets, judged after the whole table: no run stuck (not final after the drain), none
lost (accepted, then unknown to the server), every failed run with a message (a clear
error), at least one run completed; no duplicate model version (two versions with one
``registration.key``); no request failed outside the service's down windows (a wrk slice
that overlaps none); each fault detected and recovered within its kind's bound
(``chaos_faults.BOUNDS_S``). ``--quick``: one team, two runs, a worker kill, a 10 s
object-store window, a service kill and a Redis restart, targets not checked.

``python -m benchmarks.bench_chaos`` (`make bench-chaos`).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any, NamedTuple

from benchmarks.chaos_faults import BOUNDS_S, Fault, Victims, inject, schedule
from benchmarks.chaos_load import LoadGenerator, RunStream, Slice
from benchmarks.chaos_stack import Stack, deploy_pipeline, platform
from benchmarks.synthetic import generate_panel, synthetic_spec
from benchmarks.targets import Target, conclude

TEAMS = ("default", "alpha", "beta")  # default first: quick mode runs it alone
DATASET = "chaos"
MARGIN_S = 1.0  # a slice this close to a down window is in it (wrk's reconnects)
Seconds = list[float | None]  # per fault; None: it never happened


class FaultResult(NamedTuple):
    kind: str
    detected_s: float | None
    recovered_s: float | None
    note: str


class Measured(NamedTuple):
    """What one chaos run measured."""

    runs: dict[str, int]  # submitted, completed, failed (clear), failed (no message), stuck, lost
    versions: dict[str, int]  # versions, distinct registration keys, duplicates
    requests: dict[str, int]  # total, failed inside the down windows, failed outside
    faults: list[FaultResult]
    seconds: float
    reasons: tuple[str, ...] = ()  # each failed run's state and message, each stuck one's


def run_parameters(stack: Stack, team: str, epochs: int) -> dict[str, Any]:
    """The team's run: a small synthetic panel in its own data folder."""
    data = stack.team_folder(team) / f"{DATASET}.parquet"
    generate_panel(n_entities=60, n_periods=8, seed=len(team)).to_parquet(data, index=False)
    spec = synthetic_spec(str(data), name=DATASET).model_dump(mode="json")
    return {"params": {"spec": spec, "team": team, "deploy": False,
                       "model": {"epochs": epochs, "patience": epochs, "hidden": [16]}}}


def start_inference(stack: Stack, team: str, parameters: dict[str, Any]) -> Any:
    """The team's champion served by a supervised inference service, reading the registry
    as the team's MLflow user."""
    from pydantic import SecretStr

    from mlops.config import (
        DatasetSpec,
        MlflowAuth,
        Settings,
        mlflow_password_variable,
        mlflow_username,
    )
    from mlops.serving.deploy import start_service

    settings = Settings()  # the platform's (chaos_stack.operator_settings)
    spec = DatasetSpec.model_validate(parameters["params"]["spec"])
    auth = MlflowAuth(username=mlflow_username(team),
                      password=SecretStr(stack.env[mlflow_password_variable(team)]))
    return settings, start_service(spec, settings, f"{team}.{DATASET}", auth)


def wait_runs(stream: RunStream, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while stream.unfinished() and time.monotonic() < deadline:
        time.sleep(3)


def chaos(stack: Stack, args: argparse.Namespace, folder: Path) -> Measured:
    teams = TEAMS[:1] if args.quick else TEAMS
    parameters = {team: run_parameters(stack, team, args.epochs) for team in teams}
    deployments = {team: deploy_pipeline(stack.api, team, parameters[team]) for team in teams}
    stream = RunStream(stack.api, deployments, parameters, args.seed)
    began = time.monotonic()
    first = stream.submit(teams[0])  # its champion is what the service serves
    wait_runs(stream, 600)
    if first is None or stream.state(first) != "COMPLETED":
        raise RuntimeError(f"the first run did not complete: {stream.refused or first}")
    settings, service = start_inference(stack, teams[0], parameters[teams[0]])
    try:
        load = LoadGenerator(f"{service.url}/v1/predict",
                             {"records": [{f"f{i}": 0.1 * i for i in range(4)}]}, folder)
        load.start()
        faults = schedule(args.seed, args.minutes * 60, args.quick)
        victims = Victims(stack, Path(service.pid_path), service.url, stream.running,
                          stream.state)
        run_faults(stream, faults, victims, args)
        slices = load.stop()
    finally:
        from mlops.serving.deploy import stop_service

        stop_service(settings)
    for fault in faults:
        if fault.kind == "object-store" and fault.recovered_s is not None:
            fault.note += runs_after(stream, fault.killed_at + fault.down_s)
    counts, reasons = count_runs(stream)
    return Measured(counts, count_versions(teams),
                    count_requests(slices, [f for f in faults if f.kind == "service"]),
                    [FaultResult(f.kind, f.detected_s, f.recovered_s, f.note) for f in faults],
                    time.monotonic() - began, tuple(reasons))


def run_faults(stream: RunStream, faults: list[Fault], victims: Victims,
               args: argparse.Namespace) -> None:
    """Submissions and faults for the chaos phase, then the drain."""
    start, pending = time.monotonic(), list(faults)
    phase_s = 70.0 if args.quick else args.minutes * 60
    limit = 2 if args.quick else None
    while time.monotonic() - start < phase_s:
        stream.top_up(limit)
        while pending and time.monotonic() - start >= pending[0].at_s:
            inject(pending.pop(0), victims)
        time.sleep(1.0)
    for fault in pending:  # the phase ended first (a slow machine): inject them now
        inject(fault, victims)
    wait_runs(stream, args.drain_s)
    for fault in faults:
        fault.done.wait(timeout=360)


def runs_after(stream: RunStream, since: float) -> str:
    """How the runs submitted after ``since`` (monotonic) ended, for a fault's note."""
    states = [stream.state(run) for run, at in stream.times.items() if at >= since]
    return f", then {states.count('COMPLETED')} of {len(states)} runs submitted completed"


def count_runs(stream: RunStream) -> tuple[dict[str, int], list[str]]:
    """Runs by outcome, and why each failed one failed (its state and message) or where
    each stuck one is."""
    reasons: list[str] = []
    counts = dict.fromkeys(("submitted", "completed", "failed, clear error",
                            "failed, no message", "stuck", "lost"), 0)
    counts["submitted"] = stream.count() + len(stream.refused)
    counts["lost"] = len(stream.refused)
    for run in stream.ids():
        response = stream.api.call("GET", f"/flow_runs/{run}")
        if response.status_code == 404:
            counts["lost"] += 1
            continue
        state = response.json()["state"]
        if state["type"] == "COMPLETED":
            counts["completed"] += 1
        elif state["type"] in ("FAILED", "CRASHED", "CANCELLED"):
            reasons.append(f"failed run: {state['type']}: {(state.get('message') or '')[:160]}")
            counts["failed, clear error" if state.get("message") else "failed, no message"] += 1
        else:
            reasons.append(f"stuck run: {run} {state['type']} since {state['timestamp']}, "
                           f"last log: {last_log(stream, run)}")
            counts["stuck"] += 1
    return counts, reasons


def last_log(stream: RunStream, run: str) -> str:
    """The run's last log line (where a stuck run stopped), shortened."""
    body = {"logs": {"flow_run_id": {"any_": [run]}}, "sort": "TIMESTAMP_DESC", "limit": 1}
    logs = stream.api.post("/logs/filter", body).json()
    return f"{logs[0]['timestamp']} {logs[0]['message'][:160]!r}" if logs else "none"


def count_versions(teams: tuple[str, ...]) -> dict[str, int]:
    """Each team's model versions, and how many share a registration key with another (read
    from the registry's PostgreSQL database, as the platform's role)."""
    import psycopg2

    from mlops.config import Settings
    from mlops.registry.client import KEY_TAG

    names = [f"{team}.{DATASET}" for team in teams]
    with psycopg2.connect(Settings().database_url("mlflow")) as connection:
        with connection.cursor() as cursor:
            cursor.execute("SELECT v.name, v.version, t.value FROM model_versions v "
                           "LEFT JOIN model_version_tags t ON t.name = v.name AND "
                           "t.version = v.version AND t.key = %s WHERE v.name = ANY(%s)",
                           (KEY_TAG, names))
            rows = cursor.fetchall()
    connection.close()
    keys = {key or f"{name}/{version}" for name, version, key in rows}
    return {"versions": len(rows), "distinct keys": len(keys),
            "duplicates": len(rows) - len(keys)}


def count_requests(slices: list[Slice], downs: list[Fault]) -> dict[str, int]:
    """Requests, and failed ones inside and outside the service's down windows."""
    windows = [fault.window for fault in downs if fault.killed_at]
    counts = {"requests": 0, "failed in down windows": 0, "failed outside": 0, "slices": 0}
    for piece in slices:
        inside = any(piece.start <= end + MARGIN_S and piece.end >= begin - MARGIN_S
                     for begin, end in windows)
        counts["requests"] += piece.requests
        counts["slices"] += 1
        counts["failed in down windows" if inside else "failed outside"] += piece.errors
    return counts


def fault_stats(measured: Measured) -> dict[str, tuple[int, Seconds, Seconds]]:
    """Per kind of fault: how many, and each one's seconds to detection and to recovery."""
    kinds: dict[str, tuple[int, Seconds, Seconds]] = {}
    for fault in measured.faults:
        count, detected, recovered = kinds.get(fault.kind, (0, [], []))
        kinds[fault.kind] = (count + 1, [*detected, fault.detected_s],
                             [*recovered, fault.recovered_s])
    return kinds


def spread(values: Seconds) -> str:
    """Median and max in seconds; 'never' when one of them never happened."""
    known = [v for v in values if v is not None]
    if len(known) < len(values):
        return f"never ({len(values) - len(known)} of {len(values)})"
    return f"{median(known):.1f} / {max(known):.1f}" if known else "-"


def report(measured: Measured) -> None:
    print(f"\nChaos benchmark: {measured.seconds / 60:.1f} min on the real stack")
    print(f"{'measure':36} {'value':>12}")
    for name, value in measured.runs.items():
        print(f"{'runs ' + name:36} {value:>12}")
    for name, value in measured.versions.items():
        print(f"{'model ' + name:36} {value:>12}")
    for name, value in measured.requests.items():
        print(f"{'requests ' + name:36} {value:>12}")
    print(f"\n{'fault':12} {'count':>5} {'detected s (median / max)':>28} "
          f"{'recovered s (median / max)':>28}")
    for kind, (count, detected, recovered) in fault_stats(measured).items():
        print(f"{kind:12} {count:>5} {spread(detected):>28} {spread(recovered):>28}")
    notes = [f"{f.kind}: {f.note}" for f in measured.faults if f.note]
    if notes:
        print("notes: " + "; ".join(notes))
    for reason in measured.reasons:
        print(reason)


def check_targets(measured: Measured) -> list[Target]:
    runs, versions, requests = measured.runs, measured.versions, measured.requests
    targets = [
        Target("0 runs stuck", runs["stuck"] == 0, f"{runs['stuck']}"),
        Target("0 runs lost", runs["lost"] == 0, f"{runs['lost']}"),
        Target("every failed run says why", runs["failed, no message"] == 0,
               f"{runs['failed, no message']} without a message"),
        Target(">= 1 run completed", runs["completed"] >= 1, f"{runs['completed']}"),
        Target("0 duplicate model versions", versions["duplicates"] == 0,
               f"{versions['duplicates']}"),
        Target("0 requests failed outside the service's down windows",
               requests["failed outside"] == 0, f"{requests['failed outside']} of "
               f"{requests['requests']}")]
    for kind, (_, detected, recovered) in fault_stats(measured).items():
        bound_detect, bound_recover = BOUNDS_S[kind]
        ok = all(d is not None and d <= bound_detect for d in detected) and all(
            r is not None and r <= bound_recover for r in recovered)
        targets.append(Target(f"{kind} faults detected <= {bound_detect:.0f} s and recovered "
                              f"<= {bound_recover:.0f} s", ok,
                              f"{spread(detected)} / {spread(recovered)} s (median / max)"))
    return targets


def measure(args: argparse.Namespace) -> Measured:
    with tempfile.TemporaryDirectory(prefix="bench-chaos-") as folder:
        with platform(Path(folder), list(TEAMS[:1] if args.quick else TEAMS)) as stack:
            return chaos(stack, args, Path(folder))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--minutes", type=float, default=6.0, help="the chaos phase")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--drain-s", type=float, default=420.0,
                        help="after the chaos phase, most seconds for the runs to end")
    parser.add_argument("--quick", action="store_true",
                        help="one team, two runs, four faults; targets not checked")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.quick:
        args.epochs, args.drain_s = min(args.epochs, 5), min(args.drain_s, 240.0)
    measured = measure(args)
    report(measured)
    return conclude(check_targets(measured), args.quick)


if __name__ == "__main__":
    raise SystemExit(main())
