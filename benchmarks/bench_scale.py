"""`make bench-scale`: validation plus feature preparation, in memory vs out of core on Dask.

Three cases on synthetic panels (partitioned parquet, generated once and cached under
data/bench/scale/): (i) pandas in memory on the small dataset (read all, ``validate_frame``,
``prepare_frame``, write one file), the baseline; (ii) Dask on the same small dataset;
(iii) Dask on the big one. Each case runs in a fresh child process; a thread here samples
the resident memory of that child and all its descendants (Dask's nannies and workers)
every 0.2 s and keeps the largest sum. Timed: from the first read to the last file written;
not timed: process start, imports, the cluster start and Great Expectations' first import
in each worker (a warm-up), which happen once per deployment, not per dataset.

Targets, on the big Dask case, judged after the table (exit status 1 when one is missed):
peak RSS of the process tree <= 3 GB, no worker restarted, every row and partition
validated, the dataset valid. ``--quick``: a few thousand rows; targets not checked.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from benchmarks.process_tree import run_measured
from benchmarks.synthetic import (
    PartitionedPanel,
    synthetic_spec,
    write_partitioned_panel,
)
from benchmarks.targets import Target, conclude

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

ROOT = Path(__file__).resolve().parents[1]

BUDGET_GB = 3.0
QUICK_SIZES = {"rows": 4_000, "small_rows": 2_000, "partition_rows": 1_000}
Result = dict[str, object]  # one case: rows, seconds, valid, partitions, restarts, peak_gb


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000_000)
    parser.add_argument("--small-rows", type=int, default=5_000_000)
    parser.add_argument("--partition-rows", type=int, default=500_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data" / "bench" / "scale")
    parser.add_argument("--quick", action="store_true",
                        help=f"tiny sizes ({QUICK_SIZES}); targets not checked")
    parser.add_argument("--case", choices=["pandas", "dask"], help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        vars(args).update(QUICK_SIZES)
    return args


def run_pandas(root: str, out: Path) -> dict[str, object]:
    """Child side of case (i): everything in this one process."""
    import pandas as pd

    from benchmarks.synthetic import generate_panel
    from mlops.data.validation import validate_frame
    from mlops.partitioned.preparation import prepare_frame

    spec = synthetic_spec(root)
    validate_frame(generate_panel(10, 10), spec)  # warm-up: GE's first import and run
    start = time.perf_counter()
    frame = pd.read_parquet(root)
    report = validate_frame(frame, spec)
    prepare_frame(frame, spec).to_parquet(out / "prepared.parquet", index=False)
    return {"rows": report.rows, "seconds": time.perf_counter() - start,
            "valid": report.success, "partitions": 1, "restarts": 0}


def _warm() -> None:
    from benchmarks.synthetic import generate_panel
    from mlops.data.validation import validate_frame

    validate_frame(generate_panel(10, 10), synthetic_spec("warm"))


def run_dask(root: str, out: Path, workers: int) -> dict[str, object]:
    """Child side of cases (ii) and (iii): the default cluster of the platform's code."""
    from mlops.partitioned.cluster import dask_client
    from mlops.partitioned.preparation import prepare_partitions
    from mlops.partitioned.validation import validate_partitions

    spec = synthetic_spec(root)
    with dask_client(None, workers) as client:
        client.run(_warm)
        start = time.perf_counter()
        report = validate_partitions(root, spec, client)
        prepared = prepare_partitions(root, spec, str(out), client)
        seconds = time.perf_counter() - start
        # A restarted worker (killed at its memory limit) joins again: one more add-worker.
        starts = sum(m.get("action") == "add-worker" for _, m in client.get_events("all"))
    assert prepared.rows_in == report.rows
    return {"rows": report.rows, "seconds": seconds, "valid": report.success,
            "partitions": report.partitions, "validate_s": report.seconds,
            "restarts": starts - workers}


def measure(case: str, root: Path, args: argparse.Namespace) -> Result:
    """Run one case in a child process; its result plus the peak RSS of its process tree."""
    out = args.data_dir / f"prepared-{case}-{root.name}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    command = [sys.executable, "-m", "benchmarks.bench_scale", "--case", case, "--root", str(root),
               "--data-dir", str(out), "--workers", str(args.workers)]
    returncode, stdout, peak = run_measured(command)
    shutil.rmtree(out, ignore_errors=True)
    if returncode:
        raise SystemExit(f"case {case} on {root} failed with exit code {returncode}")
    return {**json.loads(stdout.strip().splitlines()[-1]), "peak_gb": peak / 1e9}


def run_cases(args: argparse.Namespace) -> list[tuple[str, Result]]:
    """Both datasets (written unless cached), then each case in its own child process."""
    small = args.data_dir / f"rows-{args.small_rows}"
    big = args.data_dir / f"rows-{args.rows}"
    for root, rows in ((small, args.small_rows), (big, args.rows)):
        started = time.perf_counter()
        write_partitioned_panel(root, rows, args.partition_rows)
        print(f"dataset {root}: ready in {time.perf_counter() - started:.1f}s", flush=True)
    cases = [("pandas in memory (baseline)", "pandas", small), ("Dask", "dask", small),
             ("Dask", "dask", big)]
    results = []
    for label, case, root in cases:
        results.append((label, measure(case, root, args)))
        print(f"done: {label} on {root.name}: {results[-1][1]}", file=sys.stderr, flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.case:  # a child: run one case, print its result as the last line
        out = args.data_dir
        result = (run_pandas(args.root, out) if args.case == "pandas"
                  else run_dask(args.root, out, args.workers))
        print(json.dumps(result))
        return 0
    results = run_cases(args)
    print_table(results, args)
    return conclude(check_targets(results[-1][1], args), args.quick,
                    "Targets (Dask on the big dataset):")


def check_targets(big: Result, args: argparse.Namespace) -> list[Target]:
    """What the big Dask case must get right: memory, no worker deaths, no lost rows,
    validity."""
    partitions = PartitionedPanel(rows=args.rows, partition_rows=args.partition_rows).partitions
    return [
        Target(f"peak RSS of the process tree <= {BUDGET_GB} GB", big["peak_gb"] <= BUDGET_GB,
               f"{big['peak_gb']:.2f} GB"),
        Target("no worker restarted", big["restarts"] == 0, f"{big['restarts']} restarts"),
        Target(f"every row and partition validated ({args.rows:,} in {partitions})",
               (big["rows"], big["partitions"]) == (args.rows, partitions),
               f"{big['rows']:,} rows in {big['partitions']} partitions"),
        Target("the dataset passes validation", bool(big["valid"]), f"valid: {big['valid']}"),
    ]


def print_table(results: list[tuple[str, Result]], args: argparse.Namespace) -> None:
    print(f"\nValidation + feature preparation; {args.workers} Dask workers x 1 thread, "
          f"{args.partition_rows:,} rows per partition, {os.cpu_count()} cores\n")
    print("| case | rows | partitions | seconds | rows/s | peak RSS (GB, process tree) "
          "| worker restarts | valid |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for label, r in results:
        print(f"| {label} | {r['rows']:,} | {r['partitions']} | {r['seconds']:.1f} | "
              f"{r['rows'] / r['seconds']:,.0f} | {r['peak_gb']:.2f} | {r['restarts']} | "
              f"{r['valid']} |")


if __name__ == "__main__":
    raise SystemExit(main())
