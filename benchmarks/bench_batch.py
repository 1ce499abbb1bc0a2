"""`make bench-batch`: batch scoring of a partitioned dataset, the platform's Dask scorer vs
a single-process pandas + ONNX Runtime baseline.

The synthetic panels are bench-scale's (partitioned parquet, generated once and cached
under data/bench/scale/), the model a small MLP trained and exported once on a synthetic
panel of the same columns. Three cases, each in a fresh child process whose process tree's
resident memory is sampled every 0.2 s: (i) the baseline on the small dataset: one
process reads each partition with pandas, scores it with an ONNX Runtime session of the
default options and writes the same scores file the scorer writes; (ii) the scorer
(``mlops.partitioned.scoring``: 2 Dask workers x 1 thread, one session each) on the same
rows; (iii) the scorer on the big dataset. Timed: from the first read to the last file
written; not timed: process and cluster start, and the libraries' first import (in the
baseline's process, and once in each worker, as bench-scale does, with the freeze of the
collector's long-lived objects that a worker does once, before its first partition). The
small cases run alternately, ``--rounds`` times each, and the medians are compared.

Targets (exit status 1 when one is missed): the scorer >= 1.7x the baseline's rows/s on
the small dataset, peak RSS of the scorer's process tree <= 3 GB on the big dataset, and
every row of it scored. ``--quick``: a few thousand rows, one round; targets not checked.
``--small-only``: cases (i) and (ii) alone, the big dataset's targets n/a.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

from benchmarks.process_tree import run_measured
from benchmarks.synthetic import generate_panel, synthetic_spec, write_partitioned_panel
from benchmarks.targets import Target, conclude

ROOT = Path(__file__).resolve().parents[1]
BUDGET_GB = 3.0
SPEEDUP = 1.7
QUICK_SIZES = {"rows": 6_000, "small_rows": 3_000, "partition_rows": 1_000, "rounds": 1}
Result = dict[str, float]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000_000)
    parser.add_argument("--small-rows", type=int, default=5_000_000)
    parser.add_argument("--partition-rows", type=int, default=500_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data" / "bench" / "scale")
    parser.add_argument("--quick", action="store_true",
                        help=f"tiny sizes ({QUICK_SIZES}); targets not checked")
    parser.add_argument("--small-only", action="store_true",
                        help="only the speed comparison on the small dataset (the big "
                             "dataset is neither generated nor scored)")
    parser.add_argument("--case", choices=["baseline", "scorer"], help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        vars(args).update(QUICK_SIZES)
    return args


def prepare_model(folder: Path) -> Path:
    """A small exported MLP over f0..f3 (trained once, then cached)."""
    model = folder / "model" / "model.onnx"
    if model.is_file():
        return model
    from mlops.config import ModelSettings
    from mlops.training.export import export_onnx
    from mlops.training.train import train_model

    work = folder / "model-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    generate_panel(n_entities=400, n_periods=10, seed=3).to_parquet(work / "t.parquet")
    spec = synthetic_spec(str(work / "t.parquet"))
    trained = train_model(str(work / "t.parquet"), spec, ModelSettings(epochs=5), work)
    export_onnx(trained.model_path, trained.test_path, model.parent)
    shutil.rmtree(work, ignore_errors=True)
    return model


def run_baseline(root: str, model: str, out: Path) -> Result:
    """Child side of case (i): one process, pandas and ONNX Runtime's default session."""
    import numpy as np
    import onnxruntime as ort
    import pandas as pd

    from mlops.atomic_files import sha256_file
    from mlops.partitioned.partitions import list_partitions

    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    features = [f"f{i}" for i in range(4)]
    start, rows = time.perf_counter(), 0
    for partition in list_partitions(root):
        frame = pd.read_parquet(partition, columns=["entity_id", "event_timestamp", *features])
        scores = session.run(["prediction"],
                             {"features": frame[features].to_numpy(np.float32)})[0]
        one = np.zeros(len(frame), dtype=np.int8)  # a constant column, as a dictionary
        pd.DataFrame({"entity_id": frame["entity_id"], "event_timestamp": frame[
            "event_timestamp"], "prediction": scores, "label": (scores >= 0.5).astype("int64"),
            "model_version": pd.Categorical.from_codes(one, categories=["1"]),
            "input_sha256": pd.Categorical.from_codes(
                one, categories=[sha256_file(Path(partition))])},
        ).to_parquet(out / Path(partition).name, index=False)
        rows += len(frame)
    return {"rows": rows, "seconds": time.perf_counter() - start}


def run_scorer(root: str, model: str, out: Path, workers: int) -> Result:
    """Child side of cases (ii) and (iii): the platform's scorer on its default cluster."""
    import hashlib

    from mlops.partitioned.cluster import dask_client
    from mlops.partitioned.scoring import describe_model, score_dataset

    data = Path(model).read_bytes()
    described = describe_model(data, "bench", "1", hashlib.sha256(data).hexdigest())
    with dask_client(None, workers) as client:
        client.run(_warm)  # once per worker process, not per dataset: not timed
        result = score_dataset(client, root, str(out), data, described, "entity_id",
                               "event_timestamp")
    return {"rows": result.rows, "seconds": result.seconds, "partitions": result.partitions}


def _warm() -> None:
    """Once per worker process, as in a long-lived worker: the libraries' first import and
    the freeze of what they hold (the scorer's first task would do it, once per process)."""
    import onnxruntime  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    import mlops.partitioned.scoring  # noqa: F401
    from mlops.partitioned.worker_memory import freeze_long_lived

    freeze_long_lived()


def measure(case: str, root: Path, model: Path, args: argparse.Namespace) -> Result:
    """One case in a child process: its result and the peak RSS of its process tree."""
    out = args.data_dir / f"scores-{case}-{root.name}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    command = [sys.executable, "-m", "benchmarks.bench_batch", "--case", case, "--root",
               str(root), "--model", str(model), "--out", str(out), "--workers",
               str(args.workers)]
    returncode, stdout, peak = run_measured(command)
    shutil.rmtree(out, ignore_errors=True)
    if returncode:
        raise SystemExit(f"case {case} on {root} failed with exit code {returncode}")
    return {**json.loads(stdout.strip().splitlines()[-1]), "peak_gb": peak / 1e9}


def run_cases(args: argparse.Namespace) -> dict[str, list[Result]]:
    small = args.data_dir / f"rows-{args.small_rows}"
    big = args.data_dir / f"rows-{args.rows}"
    datasets = [(small, args.small_rows)] + ([] if args.small_only else [(big, args.rows)])
    for root, rows in datasets:
        started = time.perf_counter()
        write_partitioned_panel(root, rows, args.partition_rows)
        print(f"dataset {root}: ready in {time.perf_counter() - started:.1f}s", flush=True)
    model = prepare_model(args.data_dir)
    results: dict[str, list[Result]] = {"baseline": [], "scorer": [], "big": []}
    for _ in range(args.rounds):  # alternating, so a noisy moment hits both sides
        for case in ("baseline", "scorer"):
            results[case].append(measure(case, small, model, args))
            print(f"done: {case} on {small.name}: {results[case][-1]}", file=sys.stderr,
                  flush=True)
    if args.small_only:
        del results["big"]
        return results
    results["big"].append(measure("scorer", big, model, args))
    print(f"done: scorer on {big.name}: {results['big'][-1]}", file=sys.stderr, flush=True)
    return results


def median_rate(runs: list[Result]) -> float:
    return statistics.median(r["rows"] / r["seconds"] for r in runs)


def print_table(results: dict[str, list[Result]], args: argparse.Namespace) -> None:
    print(f"\nBatch scoring; scorer: {args.workers} Dask workers x 1 thread; "
          f"{args.partition_rows:,} rows per partition; {os.cpu_count()} cores; medians of "
          f"{args.rounds} alternating rounds on the small dataset\n")
    print("| case | rows | seconds (median) | rows/s (median) | peak RSS (GB, process tree) |")
    print("|---|---:|---:|---:|---:|")
    labels = {"baseline": "pandas + ONNX Runtime, one process (baseline)",
              "scorer": "Dask scorer", "big": "Dask scorer"}
    for key, runs in results.items():
        print(f"| {labels[key]} | {runs[0]['rows']:,} | "
              f"{statistics.median(r['seconds'] for r in runs):.1f} | "
              f"{median_rate(runs):,.0f} | {max(r['peak_gb'] for r in runs):.2f} |")


def check_targets(results: dict[str, list[Result]], args: argparse.Namespace) -> list[Target]:
    ratio = median_rate(results["scorer"]) / median_rate(results["baseline"])
    big = results.get("big", [{"peak_gb": None, "rows": None}])[0]  # absent: --small-only
    ran = big["rows"] is not None
    return [
        Target(f"scorer >= {SPEEDUP}x the baseline's rows/s on {args.small_rows:,} rows",
               ratio >= SPEEDUP, f"{ratio:.2f}x"),
        Target(f"peak RSS of the scorer's process tree <= {BUDGET_GB} GB on "
               f"{args.rows:,} rows", big["peak_gb"] <= BUDGET_GB if ran else None,
               f"{big['peak_gb']:.2f} GB" if ran else "not run (--small-only)"),
        Target(f"every row scored ({args.rows:,})", big["rows"] == args.rows if ran else None,
               f"{big['rows']:,} rows" if ran else "not run (--small-only)"),
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.case:  # a child: run one case, print its result as the last line
        out = Path(args.out)
        result = (run_baseline(args.root, args.model, out) if args.case == "baseline"
                  else run_scorer(args.root, args.model, out, args.workers))
        print(json.dumps(result))
        return 0
    results = run_cases(args)
    print_table(results, args)
    return conclude(check_targets(results, args), args.quick)


if __name__ == "__main__":
    raise SystemExit(main())
