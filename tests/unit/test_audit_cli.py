"""`mlops audit verify` and `mlops audit show` on the local profile, as a user runs them
(the CLI's entry point, the settings from the environment); and the governance
benchmark's quick mode on the local file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.targets import QUICK_NOTE
from flows.cli import main
from mlops.config import Settings
from mlops.governance.audit.log import audit_file, open_audit_log

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The local profile on tmp_path, the key generated there (none set): six records."""
    monkeypatch.setenv("MLOPS_PROFILE", "local")
    monkeypatch.setenv("MLOPS_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("MLOPS_AUDIT_KEY", raising=False)
    log = open_audit_log(Settings())
    for i in range(6):
        log.append("request.refused" if i % 2 else "run.triggered", f"user{i}",
                   "alpha" if i % 3 else "beta", f"/runs/{i}", {"status": 403, "i": i})
    return tmp_path


def test_verify_exits_0_with_the_count_when_intact(data_dir: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    assert main(["audit", "verify"]) == 0
    out = capsys.readouterr().out
    assert "audit trail intact: 6 records" in out
    key = (data_dir / "audit" / "audit.key").read_text()
    assert key not in out  # the key is never printed


@pytest.mark.parametrize("tamper, expected", [
    (lambda lines: [*lines[:2], lines[2].replace(b"user2", b"eve"), *lines[3:]],
     "record 3 (position 3): hash mismatch: the record was edited"),
    (lambda lines: lines[:1] + lines[2:],
     "record 3 (position 2): sequence broken: a record was deleted, inserted or reordered "
     "(expected 2, found 3)"),
])
def test_verify_exits_1_naming_the_record_and_the_break(data_dir: Path, tamper, expected: str,
                                                        capsys: pytest.CaptureFixture) -> None:
    path = audit_file(Settings())
    path.write_bytes(b"\n".join(tamper(path.read_bytes().splitlines())) + b"\n")
    assert main(["audit", "verify"]) == 1
    out = capsys.readouterr().out
    assert "audit trail BROKEN" in out and expected in out, out


def test_show_filters_and_exports_the_stored_lines(data_dir: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    stored = audit_file(Settings()).read_bytes().splitlines()
    assert main(["audit", "show", "--team", "alpha", "--action", "request.refused",
                 "--json"]) == 0
    exported = capsys.readouterr().out.encode().splitlines()
    assert exported == [stored[1], stored[5]]  # seq 2 and 6: alpha's refusals
    assert [json.loads(line)["seq"] for line in exported] == [2, 6]
    assert main(["audit", "show", "--team", "beta"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["seq", "time", "(UTC)", "action"]
    assert [row.split()[0] for row in table[1:-1]] == ["1", "4"]
    assert table[-1].startswith("2 record(s) from audit file")


def test_show_filters_by_time(data_dir: Path, capsys: pytest.CaptureFixture) -> None:
    times = [json.loads(line)["at"] for line in audit_file(Settings()).read_bytes().splitlines()]
    assert main(["audit", "show", "--since", times[2], "--until", times[4], "--json"]) == 0
    assert [json.loads(line)["seq"] for line in capsys.readouterr().out.splitlines()] == [3, 4]
    naive = times[5].rstrip("Z")  # no zone: UTC
    assert main(["audit", "show", "--since", naive, "--json"]) == 0
    assert [json.loads(line)["seq"] for line in capsys.readouterr().out.splitlines()] == [6]
    with pytest.raises(SystemExit):
        main(["audit", "show", "--since", "yesterday"])


def test_governance_benchmark_quick_on_the_local_file(tmp_path: Path) -> None:
    """`make bench-governance` in quick mode, file rows only (the PostgreSQL rows are in
    tests/e2e/test_audit_postgres.py, the gateway's in tests/benchmarks/test_gateway_bench.py):
    a table row per measure and no verdict."""
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_governance", "--quick",
                           "--triggers", "0",
                           "--stores", "local file", "--out", str(tmp_path)], cwd=REPO,
                          env={**os.environ, "TMPDIR": str(tmp_path)}, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert QUICK_NOTE in done.stdout and "PASS" not in done.stdout
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    measures = [row.split("|")[1].strip() for row in rows[1:]]
    assert measures == ["append, 1 process", "append, 2 processes", "mlops audit verify"]
    assert "chain intact" in rows[2]
