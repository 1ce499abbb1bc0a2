"""Feast online lookups, Redis (production profile) against SQLite (local profile).

Both stores are filled by the features stage (``prepare_features``) from the
same synthetic panel, then read through the service's own path (``OnlineFeatures.matrix``)
in alternating blocks, so both see the same machine: p50 and p99 of 1 and 100 entities per
lookup. The Redis store uses the machine's Redis (database 14, emptied first) and Feast's
SQL registry on the machine's PostgreSQL (role and databases ``mlops_bench*``, created
if missing); its offline data goes to moto's S3 server, started on loopback for the run
(the one stand-in: lookups never touch it). Target: p99 <= 2 ms for one entity on Redis,
judged after the table (exit status 1 when missed). ``--quick``: a few hundred entities and
calls; target not checked.

``python -m benchmarks.bench_online_lookup`` (part of `make bench-scale`).
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import time
from pathlib import Path

import numpy as np
import redis
from moto.server import ThreadedMotoServer

from benchmarks.synthetic import generate_panel, synthetic_spec
from benchmarks.targets import Target, conclude
from infra.production import ensure_bucket, ensure_postgres
from mlops.config import Settings
from mlops.features.online import OnlineFeatures, online_lookup
from mlops.features.training_set import prepare_features

REPO = Path(__file__).resolve().parents[1]
REDIS_DB = 14
TARGET_P99_MS = 2.0
QUICK_SIZES = {"entities": 300, "calls": 20, "rounds": 1}
Samples = dict[tuple[str, int], list[float]]  # (store, entities per lookup) -> ms per lookup


def build(data_dir: Path, entities: int,
          s3_endpoint: str) -> dict[str, tuple[OnlineFeatures, list[int]]]:
    """The same panel in both stores; returns each store's lookup and the entity ids."""
    frame = generate_panel(n_entities=entities, n_periods=4, seed=11)
    ids = sorted(frame["entity_id"].unique().tolist())
    profiles = {
        "SQLite (local)": Settings(profile="local", data_dir=data_dir / "local"),
        "Redis (production)": Settings(profile="production", data_dir=data_dir / "production",
                                       pg_user="mlops_bench", pg_database_prefix="mlops_bench",
                                       redis_url=f"redis://127.0.0.1:6379/{REDIS_DB}",
                                       s3_endpoint_url=s3_endpoint, s3_bucket="lookup-bench"),
    }
    ensure_postgres(profiles["Redis (production)"])
    ensure_bucket(profiles["Redis (production)"])
    redis.Redis(db=REDIS_DB).flushdb()
    lookups = {}
    for name, settings in profiles.items():
        spec = synthetic_spec(str(settings.data_dir / "panel.parquet"), name="lookup_bench")
        prepare_features(frame, spec, settings.data_dir, settings)
        lookups[name] = (online_lookup(spec, settings.data_dir, settings), ids)
    return lookups


def measure(lookups: dict[str, tuple[OnlineFeatures, list[int]]], sizes: tuple[int, ...],
            calls: int, rounds: int, seed: int) -> Samples:
    """Milliseconds per lookup, the stores taking turns block by block."""
    rng = random.Random(seed)
    samples: Samples = {}
    for _ in range(rounds):
        for size in sizes:
            for name, (lookup, ids) in lookups.items():
                batches = [rng.sample(ids, size) for _ in range(calls)]
                times = samples.setdefault((name, size), [])
                for batch in batches:
                    start = time.perf_counter()
                    lookup.matrix(batch)
                    times.append((time.perf_counter() - start) * 1000)
    return samples


def report(samples: Samples) -> None:
    print("| store | entities per lookup | lookups | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|")
    for (name, size), times in samples.items():
        print(f"| {name} | {size} | {len(times)} | {np.percentile(times, 50):.3f} "
              f"| {np.percentile(times, 99):.3f} |")


def check_targets(samples: Samples) -> list[Target]:
    p99 = float(np.percentile(samples[("Redis (production)", 1)], 99))
    return [Target(f"Feast online lookup p99 <= {TARGET_P99_MS} ms for one entity on Redis",
                   p99 <= TARGET_P99_MS, f"{p99:.3f} ms")]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=300, help="lookups per block")
    parser.add_argument("--rounds", type=int, default=5, help="alternating blocks per store")
    parser.add_argument("--out", type=Path, default=REPO / "data" / "bench" / "lookup")
    parser.add_argument("--quick", action="store_true",
                        help=f"tiny sizes ({QUICK_SIZES}); target not checked")
    args = parser.parse_args(argv)
    if args.quick:
        vars(args).update(QUICK_SIZES)
    return args


def collect(args: argparse.Namespace) -> Samples:
    """Fill both stores (S3 on moto for the run), warm them, then time their lookups."""
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # moto's: any will do
        os.environ.setdefault(key, "testing")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)  # a free port
    s3.start()
    try:
        host, port = s3.get_host_and_port()
        lookups = build(args.out, args.entities, f"http://{host}:{port}")
    finally:
        s3.stop()
    for lookup, ids in lookups.values():  # warm both before timing
        for entity in ids[:200]:
            lookup.matrix([entity])
    return measure(lookups, (1, 100), args.calls, args.rounds, seed=5)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    samples = collect(args)
    report(samples)
    return conclude(check_targets(samples), args.quick)


if __name__ == "__main__":
    raise SystemExit(main())
