"""The platform stack for end-to-end tests: `make up` on free ports under a temporary data
directory, the platform's commands run as a user runs them, and `make down` at the end."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


def run_module(module: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=600)


@contextmanager
def running_stack(root: Path, *up_args: str, **extra_env: str) -> Iterator[dict]:
    """Yields the stack's environment, API URL, folder and what `up` printed."""
    env = {**os.environ, "MLOPS_DATA_DIR": str(root / "data"),
           "MLOPS_PREFECT_PORT": str(free_port()), "MLOPS_MLFLOW_PORT": str(free_port()),
           **extra_env}
    env.pop("PREFECT_API_URL", None)
    api = f"http://127.0.0.1:{env['MLOPS_PREFECT_PORT']}/api"
    try:
        started = run_module("infra.services", "up", *up_args, env=env)
        assert started.returncode == 0, started.stdout + started.stderr
        yield {"env": env, "api": api, "root": root, "up": started.stdout}
    finally:
        run_module("infra.services", "down", env=env)
