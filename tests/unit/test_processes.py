"""Background processes: started in their own session, found by pid file, stopped whole."""

import sys
import time
from pathlib import Path

from mlops.processes import _alive, running_pid, start_background, stop_background, tail


def test_start_find_and_stop_a_process_group(tmp_path: Path) -> None:
    pid_path, log_path = tmp_path / "p.pid", tmp_path / "p.log"
    # The child starts a grandchild: stopping the group must end both.
    code = ("import subprocess, sys, time; "
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            "print('child', child.pid, flush=True); time.sleep(60)")
    process = start_background([sys.executable, "-c", code], log_path, pid_path)
    assert running_pid(pid_path) == process.pid
    deadline = time.monotonic() + 10
    while "child" not in tail(log_path) and time.monotonic() < deadline:
        time.sleep(0.05)
    grandchild = int(tail(log_path).split()[-1])
    assert stop_background(pid_path, timeout_s=5)
    assert running_pid(pid_path) is None and not pid_path.exists()
    time.sleep(0.2)
    assert not _alive(grandchild)
    assert not stop_background(pid_path)  # nothing left to stop


def test_a_stale_pid_file_is_not_running(tmp_path: Path) -> None:
    pid_path = tmp_path / "stale.pid"
    pid_path.write_text("999999")
    assert running_pid(pid_path) is None
    pid_path.write_text("not a pid")
    assert running_pid(pid_path) is None
