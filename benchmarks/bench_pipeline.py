"""`make bench`: (a) the stages as plain Python vs the Prefect flow, on the default dataset;
(b) ONNX Runtime vs torch eager inference of the trained model at batch 1, 64 and 1024.

Baseline and candidate run in this one process, alternating, each pipeline run on a fresh
data directory (no checkpoint or cache reuse). Excluded, and said so in the table: the
first import of every library (a warm-up run), Prefect's embedded-server start with its
first database migration, and MLflow's first schema migration of each fresh SQLite store.
Machines here are shared and noisy: read medians and ratios, not single numbers.

Targets, each judged after the table (exit status 1 when one is missed): the Prefect flow
takes at most 1.15x the plain-Python median (orchestration overhead <= 15%); ONNX Runtime
is at least 5x faster than torch eager at batch 1 and 2x at batch 64 (the service's
request sizes; batch 1024 is reported, not judged). ``--quick``: one run per variant of a
2-epoch model, no warm-up run, few inference calls; targets not checked.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from benchmarks.targets import Target, conclude
from mlops.config import DEFAULT_SPEC, ModelSettings, Settings, load_spec
from mlops.pipeline.stages import PipelineParams, run_stages
from mlops.serving.deploy import stop_service

MAX_FLOW_OVERHEAD = 1.15  # Prefect flow / plain Python, medians of whole pipeline runs
MIN_ORT_SPEEDUP = {1: 5.0, 64: 2.0}  # torch eager / ONNX Runtime per call, by batch size
# (batch size, timed calls per engine) and alternating rounds, full and quick.
INFERENCE = {False: (((1, 3000), (64, 2000), (1024, 300)), 20),
             True: (((1, 100), (64, 50), (1024, 10)), 2)}
QUICK_EPOCHS = 2


class Measured(NamedTuple):
    plain_s: list[float]  # one whole pipeline run each
    prefect_s: list[float]
    inference_ms: dict[int, tuple[float, float]]  # batch size -> (torch eager, ORT) medians


def fresh_settings(root: Path, label: str) -> Settings:
    """A new data directory whose MLflow store is already migrated (excluded from timing)."""
    from mlflow import MlflowClient

    settings = Settings(data_dir=root / label)
    settings.data_dir.mkdir(parents=True)
    MlflowClient(tracking_uri=settings.tracking).search_experiments()
    return settings


def time_run(run: Callable[[], object], settings: Settings) -> float:
    os.environ["MLOPS_DATA_DIR"] = str(settings.data_dir)  # the flow reads Settings() itself
    started = time.perf_counter()
    try:
        run()
    finally:
        elapsed = time.perf_counter() - started
        stop_service(settings)
    return elapsed


def bench_orchestration(root: Path, params: PipelineParams, reps: int,
                        warm_up: bool = True) -> tuple[list[float], list[float], Settings]:
    """Seconds per run of the plain stages and of the flow, alternating; and a data
    directory holding a trained model (the warm-up's, else the first plain run's)."""
    from prefect import flow

    from flows.training_pipeline import training_pipeline

    flow(name="warm-up")(lambda: None)()  # starts the embedded server and migrates it
    trained = None
    if warm_up:
        trained = fresh_settings(root, "warm-up")
        time_run(lambda: run_stages(params, trained), trained)
    plain, prefect = [], []
    for rep in range(reps):
        settings = fresh_settings(root, f"plain-{rep}")
        plain.append(time_run(lambda s=settings: run_stages(params, s), settings))
        trained = trained or settings
        settings = fresh_settings(root, f"prefect-{rep}")
        prefect.append(time_run(lambda: training_pipeline(params), settings))
    return plain, prefect, trained


def paired_median_ms(calls_a: Callable[[np.ndarray], object],
                     calls_b: Callable[[np.ndarray], object], batch: np.ndarray, calls: int,
                     rounds: int = 20) -> tuple[float, float]:
    """Median call time of two engines, timed in alternating blocks: both see the same
    machine load over time, and each runs warm, as in a process that serves only it."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(rounds):
        for call, out in ((calls_a, times[0]), (calls_b, times[1])):
            for _ in range(5):
                call(batch)
            for _ in range(max(1, calls // rounds)):
                started = time.perf_counter()
                call(batch)
                out.append(time.perf_counter() - started)
    return statistics.median(times[0]) * 1000, statistics.median(times[1]) * 1000


def bench_inference(settings: Settings, spec_name: str, quick: bool
                    ) -> dict[int, tuple[float, float]]:
    """Median ms per call of torch eager and ONNX Runtime on the trained model, by batch."""
    import torch

    from mlops.serving.predictor import OnnxPredictor, session_options
    from mlops.training.model import TorchPredictor, load_model

    model_path = next((settings.data_dir / "training" / spec_name).rglob("model.pt"))
    onnx_path = next((settings.data_dir / "models" / spec_name).rglob("model.onnx"))
    mlp, arch = load_model(model_path)
    threads = session_options().intra_op_num_threads
    torch.set_num_threads(threads)  # the same cores for both engines
    eager = TorchPredictor(mlp, arch.task).eval()
    ort_model = OnnxPredictor.load(str(onnx_path), threads=threads)

    def torch_call(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return eager(torch.from_numpy(batch)).numpy()

    rng = np.random.default_rng(0)
    sizes, rounds = INFERENCE[quick]
    medians = {}
    for size, calls in sizes:
        batch = rng.normal(size=(size, arch.n_features)).astype(np.float32)
        assert np.allclose(torch_call(batch), ort_model.predict(batch), atol=1e-4)
        medians[size] = paired_median_ms(torch_call, ort_model.predict, batch, calls, rounds)
    return medians


def measure(args: argparse.Namespace) -> Measured:
    """Both parts of the benchmark, each pipeline run in a fresh temporary directory."""
    logging.basicConfig(level=logging.WARNING)
    model = ModelSettings(epochs=QUICK_EPOCHS) if args.quick else ModelSettings()
    params = PipelineParams(spec=load_spec(DEFAULT_SPEC), model=model)
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        plain, prefect, trained = bench_orchestration(Path(tmp), params, args.reps,
                                                      warm_up=not args.quick)
        return Measured(plain, prefect, bench_inference(trained, params.spec.name, args.quick))


def flow_overhead(measured: Measured) -> float:
    return statistics.median(measured.prefect_s) / statistics.median(measured.plain_s)


def table_rows(measured: Measured) -> list[tuple[str, str, str]]:
    plain, prefect = (statistics.median(measured.plain_s), statistics.median(measured.prefect_s))
    rows = [("(a) plain Python, all stages", f"{plain:.2f} s", "baseline"),
            ("(a) Prefect flow, all stages", f"{prefect:.2f} s",
             f"{flow_overhead(measured):.3f}x plain (target <= {MAX_FLOW_OVERHEAD})")]
    for size, (t_ms, o_ms) in measured.inference_ms.items():
        target = f" (target >= {MIN_ORT_SPEEDUP[size]:g}x)" if size in MIN_ORT_SPEEDUP else ""
        rows.append((f"(b) batch {size}: torch eager / ONNX Runtime",
                     f"{t_ms * 1000:.0f} us / {o_ms * 1000:.0f} us",
                     f"ORT {t_ms / o_ms:.2f}x faster{target}"))
    return rows


def check_targets(measured: Measured) -> list[Target]:
    ratio = flow_overhead(measured)
    targets = [Target(f"(a) Prefect flow <= {MAX_FLOW_OVERHEAD}x plain Python, all stages",
                      ratio <= MAX_FLOW_OVERHEAD, f"{ratio:.3f}x")]
    for size, minimum in MIN_ORT_SPEEDUP.items():
        speedup = (measured.inference_ms[size][0] / measured.inference_ms[size][1]
                   if size in measured.inference_ms else None)
        targets.append(Target(f"(b) ONNX Runtime >= {minimum:g}x faster than torch eager, "
                              f"batch {size}", None if speedup is None else speedup >= minimum,
                              "not measured" if speedup is None else f"{speedup:.2f}x"))
    return targets


def print_table(rows: list[tuple]) -> None:
    widths = [max(len(str(r[i])) for r in rows) for i in range(3)]
    for row in rows:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))


def describe(args: argparse.Namespace) -> str:
    runs = f"{args.reps} run{'s' if args.reps > 1 else ''} per variant, medians"
    later = "Prefect server start and first migration, MLflow schema migration"
    if args.quick:
        return (f"default dataset {load_spec(DEFAULT_SPEC).name}, {QUICK_EPOCHS} epochs, {runs}; "
                f"no warm-up run (imports included); excluded: {later}")
    return (f"default dataset {load_spec(DEFAULT_SPEC).name}, {runs}; excluded: imports "
            f"(warm-up run), {later}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="pipeline runs per variant")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes (1 run per variant, 2 epochs); targets not checked")
    args = parser.parse_args(argv)
    if args.quick:
        args.reps = 1
    measured = measure(args)
    print(f"\n{describe(args)}")
    print_table([("measure", "median", "ratio"), *table_rows(measured)])
    return conclude(check_targets(measured), args.quick)


if __name__ == "__main__":
    raise SystemExit(main())
