"""mlops.supervisor with real child processes: restarts, backoff, crash loops, stopping."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from mlops.processes import (
    running_pid,
    start_supervised,
    stop_background,
    supervisor_state_path,
)
from mlops.supervisor import SupervisedState, describe, next_delay, read_state
from tests.conftest import wait_for

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


def test_backoff_doubles_per_quick_exit_up_to_its_cap() -> None:
    assert [next_delay(n, 1.0, 30.0) for n in range(7)] == [1, 1, 2, 4, 8, 16, 30]


def test_describe_says_restarts_and_crash_loops() -> None:
    assert describe(None) == "" and describe(SupervisedState(command="x")) == ""
    looping = SupervisedState(command="x", restarts=4, last_exit=-9, crash_loop=True)
    assert describe(looping) == "CRASH LOOP, restarted 4x, last exit -9"


def test_a_killed_child_is_restarted_after_its_on_exit_command(tmp_path: Path) -> None:
    pid_path, marker = tmp_path / "svc.pid", tmp_path / "on-exit-ran"
    supervised = start_supervised(SLEEPER, tmp_path / "svc.log", pid_path,
                                  on_exit=f"touch {marker}")
    state_path = supervisor_state_path(pid_path)
    try:
        first = wait_for(lambda: (read_state(state_path) or SupervisedState("")).pid)
        os.kill(first, signal.SIGKILL)
        second = wait_for(lambda: (s := read_state(state_path)) and s.restarts == 1 and s.pid)
        assert second != first and marker.exists()
        state = read_state(state_path)
        assert state.last_exit == -signal.SIGKILL and not state.crash_loop
        assert running_pid(pid_path) == supervised.pid  # the pid file names the supervisor
    finally:
        assert stop_background(pid_path)
    assert wait_for(lambda: not _alive(second), 10)


def test_a_child_that_keeps_dying_is_a_crash_loop_retried_ever_later(tmp_path: Path) -> None:
    pid_path = tmp_path / "loop.pid"
    supervised = start_supervised([sys.executable, "-c", "raise SystemExit(3)"],
                                  tmp_path / "loop.log", pid_path)
    try:
        state = wait_for(lambda: (s := read_state(supervisor_state_path(pid_path)))
                         and s.crash_loop and s, 30)
        assert state.last_exit == 3 and state.restarts >= 3 and state.quick_exits >= 3
        assert supervised.poll() == 3  # its starter sees the first exit
        assert "CRASH LOOP" in describe(state)
        assert "exited with 3" in (tmp_path / "loop.log").read_text()
    finally:
        stop_background(pid_path)


def test_stopping_the_supervisor_stops_its_child_for_good(tmp_path: Path) -> None:
    pid_path = tmp_path / "svc.pid"
    start_supervised(SLEEPER, tmp_path / "svc.log", pid_path)
    child = wait_for(lambda: (read_state(supervisor_state_path(pid_path))
                              or SupervisedState("")).pid)
    assert stop_background(pid_path)
    assert wait_for(lambda: not _alive(child), 10)
    time.sleep(1.5)  # longer than the first backoff: nothing came back
    assert (read_state(supervisor_state_path(pid_path)) or SupervisedState("")).restarts == 0


@pytest.mark.parametrize("argv", [["--state", "x"], ["--state", "x", "--"]])
def test_the_supervisor_needs_a_command(argv: list[str], capsys) -> None:
    from mlops.supervisor import parse_args

    with pytest.raises(SystemExit):
        parse_args(argv)
    assert "no command" in capsys.readouterr().err


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text() if Path(f"/proc/{pid}").exists() else ""
    return bool(stat) and stat.rsplit(")", 1)[1].split()[0] != "Z"
