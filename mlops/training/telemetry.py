"""A training run's series for Prometheus, through the node exporter's textfile collector.

Why a file and not an HTTP endpoint per run: runs are short-lived processes on workers whose
ports nobody knows in advance; the machine's node exporter (which Prometheus already
scrapes) exports every ``*.prom`` file in one folder on each scrape. Each run rewrites its
own file atomically after every epoch and removes it when it ends, so a run that stops
making progress keeps an old ``mlops_training_progress_timestamp_seconds`` (what the stall
alert and the anomaly detector look at) and a finished run leaves no series behind.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import psutil

from mlops.atomic_files import write_atomic

EPOCH = "mlops_training_epoch"
SAMPLES_PER_SECOND = "mlops_training_samples_per_second"
LOSS = "mlops_training_loss"
MEMORY = "mlops_training_memory_bytes"
MEMORY_LIMIT = "mlops_training_memory_limit_bytes"
PROGRESS = "mlops_training_progress_timestamp_seconds"
GPU_UTILISATION = "mlops_training_gpu_utilization_ratio"
METRIC_NAMES = (EPOCH, SAMPLES_PER_SECOND, LOSS, MEMORY, MEMORY_LIMIT, PROGRESS,
                GPU_UTILISATION)
_HELP = {EPOCH: "Epochs finished.", SAMPLES_PER_SECOND: "Training samples per second in the "
         "last epoch.", LOSS: "Loss after the last epoch, by split.",
         MEMORY: "Resident memory of the training process.",
         MEMORY_LIMIT: "Memory the training process may use (its cgroup's limit, else RAM).",
         PROGRESS: "Unix time the last epoch finished.",
         GPU_UTILISATION: "GPU utilisation (0-1) sampled at the end of the last epoch."}
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class RunLabels:
    """Who the series belong to: the flow run, its team, its work pool and its model."""

    run: str
    team: str
    pool: str
    model: str

    def render(self) -> str:
        pairs = (f'{name}="{_escape(value)}"' for name, value in vars(self).items())
        return "{" + ",".join(pairs) + "}"


@dataclass(frozen=True)
class EpochSample:
    epoch: int
    samples_per_second: float
    train_loss: float
    validation_loss: float
    gpu_utilisation: float | None = None


class TextfileExporter:
    """Writes ``<folder>/mlops_training_<run>.prom`` after each epoch; ``close`` removes it."""

    def __init__(self, folder: Path, labels: RunLabels,
                 memory_limit_bytes: int | None = None) -> None:
        self.path = folder / f"mlops_training_{_UNSAFE.sub('_', labels.run)}.prom"
        self.labels = labels
        self.memory_limit = memory_limit_bytes or memory_limit()
        self._process = psutil.Process()
        folder.mkdir(parents=True, exist_ok=True)

    def epoch_end(self, sample: EpochSample, now: float | None = None) -> None:
        self._write(render(self.labels, sample, self._process.memory_info().rss,
                               self.memory_limit, time.time() if now is None else now))

    def _write(self, text: str) -> None:
        write_atomic(self.path, lambda tmp: tmp.write_text(text))

    def close(self) -> None:
        self.path.unlink(missing_ok=True)


def render(labels: RunLabels, sample: EpochSample, rss: int, limit: int, now: float) -> str:
    """The exposition text of one run after one epoch."""
    base = labels.render()
    split = lambda name: base[:-1] + f',split="{name}"}}'  # noqa: E731
    values: list[tuple[str, str, float]] = [
        (EPOCH, base, sample.epoch), (SAMPLES_PER_SECOND, base, sample.samples_per_second),
        (LOSS, split("train"), sample.train_loss),
        (LOSS, split("validation"), sample.validation_loss),
        (MEMORY, base, rss), (MEMORY_LIMIT, base, limit), (PROGRESS, base, now)]
    if sample.gpu_utilisation is not None:
        values.append((GPU_UTILISATION, base, sample.gpu_utilisation))
    lines, described = [], set()
    for name, labelled, value in values:
        if name not in described:
            described.add(name)
            lines += [f"# HELP {name} {_HELP[name]}", f"# TYPE {name} gauge"]
        lines.append(f"{name}{labelled} {float(value)!r}")
    return "\n".join(lines) + "\n"


def memory_limit() -> int:
    """The cgroup v2 limit of this process when one is set, else the machine's RAM."""
    try:
        text = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if text.isdigit():
            return min(int(text), psutil.virtual_memory().total)
    except OSError:
        pass
    return psutil.virtual_memory().total


def gpu_utilisation() -> float | None:
    """The first visible GPU's utilisation (0-1) through NVML, or None without one."""
    handle = _nvml_handle()
    if handle is None:
        return None
    import pynvml

    try:
        return pynvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0
    except pynvml.NVMLError:
        return None


@cache
def _nvml_handle() -> object | None:
    """Looked up once per process: without a driver every epoch would retry loading it."""
    try:
        import pynvml

        pynvml.nvmlInit()
        first = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]
        return pynvml.nvmlDeviceGetHandleByIndex(int(first) if first.isdigit() else 0)
    except Exception:  # no NVML library, no driver, no GPU: nothing to report
        return None


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
