"""`make bench-chaos`: its quick mode on the real stack, production profile (a worker and the
inference service killed, the object store away for a window and Redis restarted while a
run and wrk's load go on), and its full mode's exit status when a target is missed, on
measured values put in place of the measuring step."""

from __future__ import annotations

import re
import time

import pytest

from benchmarks.targets import QUICK_NOTE

VERDICT_LINE = re.compile(r"^(- (PASS|FAIL) |(PASS|FAIL): )", re.MULTILINE)


@pytest.mark.slow
def test_quick_mode_survives_kills_and_outages(run_benchmark) -> None:
    result = run_benchmark("bench_chaos", "--quick", timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    out = result.stdout
    assert QUICK_NOTE in out and not VERDICT_LINE.search(out), out
    value = {m[1]: int(m[2]) for m in re.finditer(r"^(runs [a-z, ]+?|model [a-z ]+?|requests "
                                                  r"[a-z ]+?) +(\d+)$", out, re.MULTILINE)}
    assert value["runs submitted"] == 2 and value["runs stuck"] == 0, out
    assert value["runs lost"] == 0 and value["runs completed"] >= 1, out
    assert value["model duplicates"] == 0 and value["model versions"] >= 1, out
    assert value["requests requests"] > 0 and value["requests failed outside"] == 0, out
    for kind in ("worker", "object-store", "service", "redis"):  # each detected, recovered
        row = next(line for line in out.splitlines() if line.startswith(kind))
        assert "never" not in row and " - " not in row, out


def measured(bench, **changes):
    """Values that meet every target, but for ``changes``."""
    runs = {"submitted": 9, "completed": 7, "failed, clear error": 2, "failed, no message": 0,
            "stuck": 0, "lost": 0}
    faults = [bench.FaultResult("worker", 0.5, 3.0, ""),
              bench.FaultResult("node", 80.0, 81.0, "run 1 and 2 processes"),
              bench.FaultResult("service", 0.4, 12.0, ""),
              bench.FaultResult("controller", 0.5, 6.0, ""),
              bench.FaultResult("redis", 4.0, 0.1, "away 10 s"),
              bench.FaultResult("object-store", 0.1, 0.0, "away 37 s")]
    values = {"runs": runs, "versions": {"versions": 7, "distinct keys": 7, "duplicates": 0},
              "requests": {"requests": 900, "failed in down windows": 40, "failed outside": 0,
                           "slices": 100}, "faults": faults, "seconds": 600.0}
    return bench.Measured(**{**values, **changes})


@pytest.mark.parametrize("change, missed", [
    ({"runs": {"submitted": 9, "completed": 7, "failed, clear error": 1,
               "failed, no message": 0, "stuck": 1, "lost": 0}}, "0 runs stuck"),
    ({"versions": {"versions": 8, "distinct keys": 7, "duplicates": 1}},
     "0 duplicate model versions"),
    ({"requests": {"requests": 900, "failed in down windows": 40, "failed outside": 3,
                   "slices": 100}}, "0 requests failed outside"),
])
def test_full_mode_exits_1_after_the_whole_table_when_a_target_is_missed(
        benchmark_module, monkeypatch, capsys, change, missed) -> None:
    bench = benchmark_module("bench_chaos")
    monkeypatch.setattr(bench, "measure", lambda args: measured(bench, **change))
    assert bench.main([]) == 1
    out = capsys.readouterr().out
    assert out.index("object-store") < out.index(f"- FAIL {missed}")
    assert "FAIL: 1 of 12 targets missed" in out
    monkeypatch.setattr(bench, "measure", lambda args: measured(bench))
    assert bench.main([]) == 0
    assert "PASS: every target met (12)" in capsys.readouterr().out


def test_a_fault_never_recovered_or_too_slow_misses_its_target(benchmark_module) -> None:
    bench = benchmark_module("bench_chaos")
    never = measured(bench, faults=[bench.FaultResult("service", 0.4, None, "")])
    slow = measured(bench, faults=[bench.FaultResult("worker", 0.5, 400.0, "")])
    for values in (never, slow):
        assert [t.passed for t in bench.check_targets(values)][-1] is False


def test_requests_fail_outside_only_away_from_a_down_window(benchmark_module) -> None:
    bench = benchmark_module("bench_chaos")
    down = bench.Fault("service", 0.0, killed_at=100.0, recovered_s=10.0)
    slices = [bench.Slice(95.0, 97.0, 50, 0), bench.Slice(99.5, 101.5, 10, 8),
              bench.Slice(110.5, 112.5, 40, 2), bench.Slice(130.0, 132.0, 60, 1)]
    counts = bench.count_requests(slices, [down])
    assert counts == {"requests": 160, "failed in down windows": 10, "failed outside": 1,
                      "slices": 4}


def test_the_schedule_lets_no_fault_fall_in_an_outage(benchmark_module) -> None:
    faults = benchmark_module("chaos_faults").schedule(7, 360.0, quick=False)
    kinds = benchmark_module("chaos_faults").KINDS
    assert sorted(f.kind for f in faults) == sorted(kinds)
    for fault, following in zip(faults, faults[1:], strict=False):
        assert following.at_s > fault.at_s + fault.down_s
    assert faults[-1].at_s + faults[-1].down_s <= 300.0


def test_the_fault_proxy_refuses_while_cut_and_forwards_again(benchmark_module) -> None:
    """A real socket server behind the proxy: cut, a connection is refused and an open one
    dropped; restored, on the same port, bytes flow again."""
    import socket
    import socketserver
    import threading

    class Echo(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            while line := self.rfile.readline():
                self.wfile.write(line)

    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo) as echo:
        threading.Thread(target=echo.serve_forever, daemon=True).start()
        proxy = benchmark_module("fault_proxy").FaultProxy(echo.server_address[1])
        proxy.start()
        try:
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as held:
                held.sendall(b"one\n")
                assert held.recv(16) == b"one\n"
                proxy.cut()
                try:
                    assert held.recv(16) == b""  # dropped
                except ConnectionResetError:
                    pass
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
            proxy.restore()
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as again:
                again.sendall(b"two\n")
                assert again.recv(16) == b"two\n"
        finally:
            proxy.stop()
            echo.shutdown()


def test_a_node_fault_finds_the_runs_of_the_worker_s_process_tree(benchmark_module) -> None:
    """The runs a worker's processes run, from their environment: a run orphaned by an
    earlier worker kill is not among them, so a node fault never picks it."""
    import os
    import subprocess
    import sys

    stack = benchmark_module("chaos_stack")
    env = {**os.environ, "PREFECT__FLOW_RUN_ID": "run-1"}
    worker = subprocess.Popen([sys.executable, "-c", "import subprocess, sys; subprocess.run("
                               "[sys.executable, '-c', 'import time; time.sleep(30)'])"], env=env)
    try:
        for _ in range(50):
            children = stack.descendants(worker.pid)
            if children:
                break
            time.sleep(0.1)
        assert stack.flow_runs(children) == ["run-1"]
        assert stack.flow_runs([os.getpid()]) == []
    finally:
        for pid in stack.descendants(worker.pid):
            os.kill(pid, 9)
        worker.kill()
        worker.wait()
