"""`make bench`: (a) the stages as plain Python vs the Prefect flow, on the default dataset;
(b) ONNX Runtime vs torch eager inference of the trained model at batch 1, 64 and 1024.

Baseline and candidate run in this one process, alternating, each pipeline run on a fresh
data directory (no checkpoint or cache reuse). Excluded, and said so in the table: the
first import of every library (a warm-up run), Prefect's embedded-server start with its
first database migration, and MLflow's first schema migration of each fresh SQLite store.
Machines here are shared and noisy: read medians and ratios, not single numbers.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from mlops.config import DEFAULT_SPEC, Settings, load_spec
from mlops.pipeline.stages import PipelineParams, run_stages
from mlops.serving.deploy import stop_service


def fresh_settings(root: Path, label: str) -> Settings:
    """A new data directory whose MLflow store is already migrated (excluded from timing)."""
    from mlflow import MlflowClient

    settings = Settings(data_dir=root / label)
    settings.data_dir.mkdir(parents=True)
    MlflowClient(tracking_uri=settings.tracking).search_experiments()
    return settings


def time_run(run, settings: Settings) -> float:  # noqa: ANN001
    os.environ["MLOPS_DATA_DIR"] = str(settings.data_dir)  # the flow reads Settings() itself
    started = time.perf_counter()
    try:
        run()
    finally:
        elapsed = time.perf_counter() - started
        stop_service(settings)
    return elapsed


def bench_orchestration(root: Path, params: PipelineParams, reps: int) -> list[tuple]:
    from prefect import flow

    from flows.training_pipeline import training_pipeline

    flow(name="warm-up")(lambda: None)()  # starts the embedded server and migrates it
    warm = fresh_settings(root, "warm-up")
    time_run(lambda: run_stages(params, warm), warm)
    plain, prefect = [], []
    for rep in range(reps):
        settings = fresh_settings(root, f"plain-{rep}")
        plain.append(time_run(lambda s=settings: run_stages(params, s), settings))
        settings = fresh_settings(root, f"prefect-{rep}")
        prefect.append(time_run(lambda: training_pipeline(params), settings))
    ratio = statistics.median(prefect) / statistics.median(plain)
    return [("(a) plain Python, all stages", f"{statistics.median(plain):.2f} s", "baseline"),
            ("(a) Prefect flow, all stages", f"{statistics.median(prefect):.2f} s",
             f"{ratio:.3f}x plain (target <= 1.15)")], warm


def paired_median_ms(calls_a, calls_b, batch: np.ndarray, calls: int,  # noqa: ANN001
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


def bench_inference(settings: Settings, spec_name: str) -> list[tuple]:
    import torch

    from mlops.serving.predictor import OnnxPredictor, session_options
    from mlops.training.model import TorchPredictor, load_model

    model_path = next((settings.data_dir / "training" / spec_name).rglob("model.pt"))
    onnx_path = settings.data_dir / "models" / spec_name / "model.onnx"
    mlp, arch = load_model(model_path)
    threads = session_options().intra_op_num_threads
    torch.set_num_threads(threads)  # the same cores for both engines
    eager = TorchPredictor(mlp, arch.task).eval()
    ort_model = OnnxPredictor.load(str(onnx_path), threads=threads)

    def torch_call(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return eager(torch.from_numpy(batch)).numpy()

    rng = np.random.default_rng(0)
    rows = []
    for size, calls in ((1, 3000), (64, 2000), (1024, 300)):
        batch = rng.normal(size=(size, arch.n_features)).astype(np.float32)
        assert np.allclose(torch_call(batch), ort_model.predict(batch), atol=1e-4)
        t_ms, o_ms = paired_median_ms(torch_call, ort_model.predict, batch, calls)
        target = {1: " (target >= 5x)", 64: " (target >= 2x)"}.get(size, "")
        rows.append((f"(b) batch {size}: torch eager / ONNX Runtime",
                     f"{t_ms * 1000:.0f} us / {o_ms * 1000:.0f} us",
                     f"ORT {t_ms / o_ms:.2f}x faster{target}"))
    return rows


def print_table(rows: list[tuple]) -> None:
    widths = [max(len(str(r[i])) for r in rows) for i in range(3)]
    for row in rows:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="pipeline runs per variant")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    params = PipelineParams(spec=load_spec(DEFAULT_SPEC))
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        rows, warm = bench_orchestration(Path(tmp), params, args.reps)
        rows += bench_inference(warm, params.spec.name)
    print(f"\ndefault dataset {params.spec.name}, {args.reps} runs per variant, medians; "
          "excluded: imports (warm-up run), Prefect server start and first migration, "
          "MLflow schema migration")
    print_table([("measure", "median", "ratio"), *rows])


if __name__ == "__main__":
    main()
