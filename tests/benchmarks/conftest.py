"""Run a benchmark as `make bench*` does (``python -m benchmarks.<name>`` from the repository
root), in a child process whose temporary files and Prefect home are the test's own."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def run_benchmark(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess]:
    """``run_benchmark(name, *args, timeout=...)``: its exit status and output (stderr apart)."""
    env = {**os.environ, "TMPDIR": str(tmp_path), "PREFECT_HOME": str(tmp_path / "prefect"),
           "MLOPS_DATA_DIR": str(tmp_path / "data"), "PYTHONUNBUFFERED": "1"}
    env.pop("PREFECT_API_URL", None)  # Prefect's embedded server, never a running one

    def run(name: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", f"benchmarks.{name}", *args], cwd=REPO,
                              env=env, capture_output=True, text=True, timeout=timeout)

    return run


@pytest.fixture
def benchmark_module() -> Callable[[str], ModuleType]:
    """Import ``benchmarks.<name>`` in this process, without letting the environment
    defaults it sets on import (Prefect's log level) leak into the rest of the session."""

    def load(name: str) -> ModuleType:
        saved = dict(os.environ)
        try:
            return importlib.import_module(f"benchmarks.{name}")
        finally:
            os.environ.clear()
            os.environ.update(saved)

    return load
