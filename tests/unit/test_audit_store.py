"""The audit stores without a server: one chain from many processes on the local file,
the key (generated once, 0600, agreed by concurrent first users), and failing closed when
the store cannot be written (a read-only folder, a PostgreSQL nobody answers on)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mlops.config import Settings
from mlops.governance.audit.log import audit_file, load_audit_key, open_audit_log
from mlops.governance.audit.records import AuditUnavailable
from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]
KEY = "test-audit-key-0123456789abcdef"
APPENDER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from mlops.config import Settings
    from mlops.governance.audit.log import open_audit_log

    go, n = Path(sys.argv[1]), int(sys.argv[2])
    log = open_audit_log(Settings())  # the profile and store from MLOPS_* variables
    while not go.exists():
        time.sleep(0.005)
    for i in range(n):
        log.append("queue.limit_changed", f"writer{os.getpid()}", "alpha", "gpu/alpha",
                   {"limit": i})
""")


def local(tmp_path: Path, key: str | None = KEY) -> Settings:
    return Settings(profile="local", data_dir=tmp_path, audit_key=key)


def test_four_processes_appending_at_once_keep_one_chain(tmp_path: Path) -> None:
    """4 x 200 appends from real processes, started together, with no key yet: one key is
    agreed, every record is in one chain, none lost or forked."""
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLOPS_PROFILE": "local",
           "MLOPS_DATA_DIR": str(tmp_path)}
    env.pop("MLOPS_AUDIT_KEY", None)
    writers = [subprocess.Popen([sys.executable, "-c", APPENDER, str(go), "200"], env=env,
                                cwd=REPO) for _ in range(4)]
    time.sleep(0.5)  # let them import and wait at the start line
    go.touch()
    assert [writer.wait(timeout=120) for writer in writers] == [0, 0, 0, 0]
    log = open_audit_log(local(tmp_path, key=None))
    report = log.verify()
    assert report.intact, report.broken
    assert report.count == 800
    records = list(log.records())
    assert [r.seq for r in records] == list(range(1, 801))
    per_writer = Counter(r.actor for r in records)
    assert sorted(per_writer.values()) == [200, 200, 200, 200]
    for actor in per_writer:  # each process's own records keep its order
        assert [r.details["limit"] for r in records if r.actor == actor] == list(range(200))


def test_threads_of_one_process_share_one_log(tmp_path: Path) -> None:
    """The service and the gateway append from several threads through one AuditLog."""
    from concurrent.futures import ThreadPoolExecutor

    log = open_audit_log(local(tmp_path))
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: log.append("request.refused", f"t{i % 4}", "alpha"),
                      range(400)))
    report = log.verify()
    assert report.intact and report.count == 400


def test_the_local_key_is_generated_once_private_and_reused(tmp_path: Path) -> None:
    settings = local(tmp_path, key=None)
    key = load_audit_key(settings)
    path = tmp_path / "audit" / "audit.key"
    assert len(key) == 64 and path.read_bytes() == key
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_audit_key(settings) == key
    log = open_audit_log(settings)
    log.append("teams.changed", "ops")
    assert key not in audit_file(settings).read_bytes()
    assert open_audit_log(settings).verify().intact
    assert load_audit_key(local(tmp_path, key="from-the-setting")) == b"from-the-setting"


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    load_audit_key(local(tmp_path, key=None))
    (tmp_path / "audit" / "audit.key").chmod(0o640)
    with pytest.raises(AuditUnavailable, match="readable by others"):
        load_audit_key(local(tmp_path, key=None))


def test_the_production_profile_requires_the_key_setting(tmp_path: Path) -> None:
    with pytest.raises(AuditUnavailable, match="MLOPS_AUDIT_KEY is not set"):
        open_audit_log(Settings(profile="production", data_dir=tmp_path, audit_key=None))


@contextmanager
def read_only(path: Path) -> Iterator[None]:
    """A folder or file nobody can write, root included: root ignores modes, so for root
    the immutable attribute (chattr +i), else chmod."""
    as_root = os.geteuid() == 0
    if as_root and shutil.which("chattr") is None:
        pytest.skip("running as root without chattr: cannot make a read-only folder")
    mode = path.stat().st_mode
    if as_root:
        subprocess.run(["chattr", "+i", str(path)], check=True)
    else:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        yield
    finally:
        if as_root:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        else:
            path.chmod(mode)


@pytest.mark.parametrize("what", ["folder", "file"])
def test_append_fails_closed_when_the_store_is_read_only_then_recovers(tmp_path: Path,
                                                                      what: str) -> None:
    log = open_audit_log(local(tmp_path))
    path = audit_file(local(tmp_path))
    if what == "file":
        log.append("run.triggered", "alice", "alpha")
    else:
        path.parent.mkdir(parents=True)
    before = path.read_bytes() if path.exists() else b""
    with read_only(path if what == "file" else path.parent):
        with pytest.raises(AuditUnavailable, match=f"audit file {path} cannot be written"):
            log.append("alias.moved", "alice", "alpha", "wage_panel", {"to": "champion"})
    assert (path.read_bytes() if path.exists() else b"") == before  # nothing recorded
    log.append("alias.moved", "alice", "alpha", "wage_panel", {"to": "champion"})
    report = log.verify()
    assert report.intact and report.count == (2 if what == "file" else 1)


def test_append_fails_closed_when_the_last_record_is_half_written(tmp_path: Path) -> None:
    log = open_audit_log(local(tmp_path))
    log.append("run.triggered", "alice")
    path = audit_file(local(tmp_path))
    path.write_bytes(path.read_bytes() + b'{"action":"run.trig')
    with pytest.raises(AuditUnavailable, match="partial record"):
        log.append("run.triggered", "bob")
    assert log.verify().broken is not None


def test_append_fails_closed_when_the_audit_path_is_not_a_file(tmp_path: Path) -> None:
    audit_file(local(tmp_path)).mkdir(parents=True)
    with pytest.raises(AuditUnavailable, match="cannot be written"):
        open_audit_log(local(tmp_path)).append("run.triggered", "alice")


def test_postgres_down_fails_closed_naming_the_store_never_the_password(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    settings = Settings(profile="production", data_dir=tmp_path, audit_key=KEY,
                        pg_port=port, pg_password="pg-s3cret-password")
    log = open_audit_log(settings)
    with pytest.raises(AuditUnavailable) as caught:
        log.append("service.deployed", "ci", "alpha", "wage_panel", {"version": 3})
    message = str(caught.value)
    assert f"127.0.0.1:{port}/mlops_audit" in message and "unreachable" in message
    assert "pg-s3cret-password" not in message and KEY not in message
    with pytest.raises(AuditUnavailable, match="unreachable"):
        log.verify()
