"""Keep one command running: restart it when it dies, with backoff, and say when it loops.

``python -m mlops.supervisor --state FILE [--on-exit CMD] -- COMMAND [ARGS...]`` runs
COMMAND as its child and, whenever the child exits (killed, crashed, or finished), runs
``--on-exit`` (a shell command: put what the child governs back to safe values) and starts
the child again after a delay that doubles from ``--backoff-s`` up to ``--max-backoff-s``,
back to the start once a child has lived ``--stable-s``. ``--crash-loop`` quick exits in a
row (each lived less than ``--stable-s``) make a crash loop: still retried at the longest
delay, and reported in the state file.

The state file (JSON, replaced atomically) says what ``make status`` shows: the child's
pid, restarts, the last exit status and when, and whether it is in a crash loop. SIGTERM or
SIGINT stops the supervisor and its child (``make down`` signals the whole process group).
Standard library only: it outlives the libraries of what it supervises.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class SupervisedState:
    """What the state file holds."""

    command: str
    pid: int | None = None
    started_at: float | None = None
    restarts: int = 0
    quick_exits: int = 0  # consecutive exits of children that lived less than stable_s
    last_exit: int | None = None  # negative: killed by that signal
    last_exit_at: float | None = None
    crash_loop: bool = False
    next_start_at: float | None = None


def read_state(path: Path) -> SupervisedState | None:
    """The state a supervisor wrote, or None when there is none (or it is unreadable)."""
    try:
        return SupervisedState(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def describe(state: SupervisedState | None) -> str:
    """One phrase for ``make status``: restarts, and a crash loop when there is one."""
    if state is None or not state.restarts:
        return ""
    last = f"last exit {state.last_exit}" if state.last_exit is not None else ""
    loop = "CRASH LOOP, " if state.crash_loop else ""
    return f"{loop}restarted {state.restarts}x, {last}".rstrip(", ")


def next_delay(quick_exits: int, backoff_s: float, max_backoff_s: float) -> float:
    """Delay before the next start: doubled per quick exit in a row, capped."""
    if quick_exits <= 0:
        return backoff_s
    return min(max_backoff_s, backoff_s * 2 ** (quick_exits - 1))


class Supervisor:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.stopping, self.child = args, False, None
        self.state = SupervisedState(command=" ".join(args.command))

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        while not self.stopping:
            self._start()
            status = self.child.wait()
            self._exited(status)
            if self.stopping:
                break
            self._on_exit()
            self._sleep(next_delay(self.state.quick_exits, self.args.backoff_s,
                                   self.args.max_backoff_s))
        return 0

    def _start(self) -> None:
        # The child stays in this process group, so `make down` (killpg) stops both.
        self.child = subprocess.Popen(self.args.command, stdin=subprocess.DEVNULL)
        self.state.pid, self.state.started_at, self.state.next_start_at = (
            self.child.pid, time.time(), None)
        self._write()

    def _exited(self, status: int) -> None:
        lived = time.time() - (self.state.started_at or time.time())
        quick = lived < self.args.stable_s
        self.state.quick_exits = self.state.quick_exits + 1 if quick else 0
        self.state.crash_loop = self.state.quick_exits >= self.args.crash_loop
        self.state.last_exit, self.state.last_exit_at, self.state.pid = status, time.time(), None
        if not self.stopping:
            self.state.restarts += 1
            print(f"supervisor: {self.args.command[0]} exited with {status} after {lived:.1f} s"
                  f"{' (crash loop)' if self.state.crash_loop else ''}; restarting",
                  file=sys.stderr, flush=True)
        self._write()

    def _on_exit(self) -> None:
        if not self.args.on_exit:
            return
        result = subprocess.run(self.args.on_exit, shell=True, stdin=subprocess.DEVNULL,
                                timeout=self.args.on_exit_timeout_s, check=False)
        if result.returncode:
            print(f"supervisor: on-exit command exited with {result.returncode}",
                  file=sys.stderr, flush=True)

    def _sleep(self, delay: float) -> None:
        self.state.next_start_at = time.time() + delay
        self._write()
        deadline = time.monotonic() + delay
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(min(0.2, delay))

    def _stop(self, signum: int, frame: object) -> None:
        self.stopping = True
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)

    def _write(self) -> None:
        path = Path(self.args.state)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(self.state)))
        os.replace(tmp, path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mlops.supervisor",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--state", required=True, help="JSON state file to write")
    parser.add_argument("--on-exit", default="", help="shell command run after each exit")
    parser.add_argument("--on-exit-timeout-s", type=float, default=60.0)
    parser.add_argument("--backoff-s", type=float, default=1.0)
    parser.add_argument("--max-backoff-s", type=float, default=30.0)
    parser.add_argument("--stable-s", type=float, default=60.0,
                        help="a child that lived this long resets the backoff")
    parser.add_argument("--crash-loop", type=int, default=3,
                        help="quick exits in a row that make a crash loop")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    args = parser.parse_args(argv)
    args.command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not args.command:
        parser.error("no command to supervise (give it after --)")
    return args


def main(argv: list[str] | None = None) -> int:
    return Supervisor(parse_args(argv)).run()


if __name__ == "__main__":
    sys.exit(main())
