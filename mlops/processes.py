"""Background processes with a pid file and a log file: start, check, stop.

Each process leads its own session, so stopping it also stops what it started (uvicorn
workers, a server's services) and it outlives the command that started it.
``start_supervised`` starts it under ``mlops.supervisor``, which restarts it when it dies;
the pid file then names the supervisor, and stopping it stops both.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mlops.supervisor import read_state


def start_background(command: list[str], log_path: Path, pid_path: Path,
                     env: dict[str, str] | None = None) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True, env=env)
    pid_path.write_text(str(process.pid))
    return process


def supervisor_state_path(pid_path: Path) -> Path:
    """Where the supervisor of the process named by ``pid_path`` writes its state."""
    return pid_path.with_name(f"{pid_path.stem}.supervisor.json")


class Supervised:
    """A supervised process as its starter sees it: it has exited when its first child
    did (the supervisor would only restart it), or when the supervisor itself did."""

    def __init__(self, process: subprocess.Popen, state_path: Path) -> None:
        self.process, self.state_path, self.returncode = process, state_path, None

    @property
    def pid(self) -> int:
        return self.process.pid

    def poll(self) -> int | None:
        self.returncode = self.process.poll()
        state = read_state(self.state_path)
        if self.returncode is None and state is not None and state.last_exit is not None:
            self.returncode = state.last_exit
        return self.returncode


def start_supervised(command: list[str], log_path: Path, pid_path: Path,
                     env: dict[str, str] | None = None, on_exit: str = "") -> Supervised:
    """``start_background`` under ``mlops.supervisor``: restarted with backoff when it dies,
    after ``on_exit`` (a shell command) has run."""
    state_path = supervisor_state_path(pid_path)
    state_path.unlink(missing_ok=True)
    wrapper = [sys.executable, "-m", "mlops.supervisor", "--state", str(state_path),
               *(["--on-exit", on_exit] if on_exit else []), "--", *command]
    return Supervised(start_background(wrapper, log_path, pid_path, env), state_path)


def running_pid(pid_path: Path) -> int | None:
    """The pid in the file when that process is alive, else None."""
    try:
        pid = int(pid_path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def stop_background(pid_path: Path, timeout_s: float = 15.0) -> bool:
    """SIGTERM the process group named by the pid file, SIGKILL it after the timeout.

    True when a process was running; the pid file is removed either way."""
    pid = running_pid(pid_path)
    if pid is not None:
        _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            _signal(pid, signal.SIGKILL)
    pid_path.unlink(missing_ok=True)
    return pid is not None


class ServerNotReady(RuntimeError):
    """A background server exited, or did not answer its readiness URL, in time."""


def wait_until_ready(url: str, process: subprocess.Popen | Supervised, log_path: Path,
                     timeout_s: float = 180.0, verify: Any = True) -> None:
    """Poll GET ``url`` until it answers 200; ServerNotReady with the end of the log when the
    process exits first, the URL answers 404 (no such route) or the time runs out.
    ``verify``: httpx's (an ``ssl.SSLContext`` for a server of a private CA)."""
    import httpx  # only the callers that wait on a server pay for it

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerNotReady(f"{url}: the server exited with code {process.returncode}:\n"
                           f"{tail(log_path)}")
        try:
            status = httpx.get(url, timeout=2.0, verify=verify).status_code
        except httpx.HTTPError:
            status = None
        if status == 200:
            return
        if status == 404:
            raise ServerNotReady(f"{url}: 404, the server has no such readiness route")
        time.sleep(0.1)
    raise ServerNotReady(f"{url}: not ready after {timeout_s:.0f} s:\n{tail(log_path)}")


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)  # reap our own child if it exited
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """An exited process nobody reaped yet (in containers, pid 1 may never reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _signal(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
