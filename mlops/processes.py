"""Background processes with a pid file and a log file: start, check, stop.

Each process leads its own session, so stopping it also stops what it started (uvicorn
workers, a server's services) and it outlives the command that started it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def start_background(command: list[str], log_path: Path, pid_path: Path,
                     env: dict[str, str] | None = None) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True, env=env)
    pid_path.write_text(str(process.pid))
    return process


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


def wait_until_ready(url: str, process: subprocess.Popen, log_path: Path,
                     timeout_s: float = 180.0) -> None:
    """Poll GET ``url`` until it answers 200; ServerNotReady with the end of the log when the
    process exits first, the URL answers 404 (no such route) or the time runs out."""
    import httpx  # only the callers that wait on a server pay for it

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerNotReady(f"{url}: the server exited with code {process.returncode}:\n"
                           f"{tail(log_path)}")
        try:
            status = httpx.get(url, timeout=2.0).status_code
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
