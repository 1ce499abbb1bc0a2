"""The audit trail's records and chain on the local file store: sealing, canonical
encoding, and verify finding every kind of tampering (edited, forged, deleted, inserted,
reordered, spliced, unreadable), each case made by editing the file by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from mlops.config import Settings
from mlops.governance.audit.log import AuditLog, audit_file, open_audit_log
from mlops.governance.audit.records import (
    GENESIS,
    Action,
    AuditQuery,
    AuditRecord,
    draft,
    encode_body,
    parse_line,
    seal,
)
from mlops.governance.audit.verify import BreakKind

KEY = "test-audit-key-0123456789abcdef"
ISSUE_ACTIONS = {  # issue 12, point 7: every governance action is recorded
    "run.triggered", "dataset.validated", "model.registered", "alias.moved",
    "approval.granted", "approval.rejected", "service.deployed", "service.rolled_back",
    "service.reloaded", "teams.changed", "queue.limit_changed", "run.preempted",
    "budget.held", "request.refused",
    "run.requeued",  # issue 13, point 1: a zombie-crashed run's retry
    "service.shadow", "service.canary"}  # issue 15, point 5: the challenger on trial


def local(tmp_path: Path, key: str | None = KEY) -> Settings:
    return Settings(profile="local", data_dir=tmp_path, audit_key=key)


def filled(tmp_path: Path, n: int = 5) -> tuple[AuditLog, Path]:
    """A log of n records (seq 1..n) and its file."""
    log = open_audit_log(local(tmp_path))
    for i in range(n):
        log.append(Action.RUN_TRIGGERED if i % 2 else Action.REQUEST_REFUSED, f"user{i}",
                   team="alpha" if i % 2 else "beta", subject=f"run-{i}",
                   details={"params_sha256": f"{i:064x}", "status": 403})
    return log, audit_file(local(tmp_path))


def test_actions_cover_every_governance_action_of_the_issue() -> None:
    assert {action.value for action in Action} == ISSUE_ACTIONS


def test_records_chain_from_genesis_and_verify_intact(tmp_path: Path) -> None:
    log, path = filled(tmp_path)
    records = list(log.records())
    assert [r.seq for r in records] == [1, 2, 3, 4, 5]
    assert records[0].prev == GENESIS
    assert [r.prev for r in records[1:]] == [r.hash for r in records[:-1]]
    lines = path.read_bytes().splitlines()
    assert [r.line() for r in records] == lines  # what show --json exports is what is stored
    report = log.verify()
    assert report.intact and report.count == 5 and report.head == records[-1].hash


def test_the_hash_is_sha256_of_the_canonical_body_and_the_mac_uses_the_key() -> None:
    import hashlib
    import hmac

    at = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    new = draft("alias.moved", "ops", "alpha", "wage_panel", {"to": 3, "alias": "champion"})
    sealed = seal(new, 41, "ab" * 32, b"k", now=at)
    body = {"action": "alias.moved", "actor": "ops", "at": "2026-01-02T03:04:05.000006Z",
            "details": {"alias": "champion", "to": 3}, "prev": "ab" * 32, "seq": 42,
            "subject": "wage_panel", "team": "alpha"}
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    assert encode_body(42, body["at"], "alias.moved", "ops", "alpha", "wage_panel",
                       new.details_json, "ab" * 32) == canonical
    digest = hashlib.sha256(canonical).digest()
    assert sealed.record.hash == digest.hex()
    assert sealed.record.mac == hmac.new(b"k", digest, "sha256").hexdigest()
    assert parse_line(sealed.line) == sealed.record
    # key order of the details does not change the record
    again = draft("alias.moved", "ops", "alpha", "wage_panel", {"alias": "champion", "to": 3})
    assert seal(again, 41, "ab" * 32, b"k", now=at).record.hash == sealed.record.hash


def test_any_text_survives_the_round_trip(tmp_path: Path) -> None:
    log = open_audit_log(local(tmp_path))
    odd = 'quote " backslash \\ tab \t newline \n ünïcødé 🚀 ,"prev":"x'
    log.append("teams.changed", odd, team=odd, subject=odd, details={odd: [odd, 1.5, None]})
    log.append("budget.held", "controller", details={"prev": "0" * 64, "seq": 7})
    assert log.verify().intact
    first = next(log.records())
    assert first.actor == odd and first.details == {odd: [odd, 1.5, None]}


@pytest.mark.parametrize("bad, message", [
    ({"action": "run.deleted"}, "unknown audit action"),
    ({"actor": ""}, "needs an actor"),
    ({"team": 7}, "team must be text"),
    ({"subject": "a\x00b"}, "without NUL"),
    ({"details": {1: "x"}}, "JSON with string keys"),
    ({"details": {"blob": object()}}, "JSON with string keys"),
    ({"details": {"blob": "x" * 70_000}}, "at most"),
])
def test_an_invalid_record_is_refused_before_anything_is_written(tmp_path: Path, bad: dict,
                                                                  message: str) -> None:
    log = open_audit_log(local(tmp_path))
    fields = {"action": "run.triggered", "actor": "alice", "details": {}} | bad
    with pytest.raises(ValueError, match=message):
        log.append(**fields)
    assert not audit_file(local(tmp_path)).exists()


def test_records_filter_by_team_action_and_time(tmp_path: Path) -> None:
    log, _ = filled(tmp_path, 6)
    every = list(log.records())
    assert [r.seq for r in log.records(AuditQuery(team="alpha"))] == [2, 4, 6]
    assert [r.seq for r in log.records(AuditQuery(action="request.refused"))] == [1, 3, 5]
    assert [r.seq for r in log.records(AuditQuery(team="beta",
                                                  action="run.triggered"))] == []
    since, until = every[2].at, every[4].at
    assert [r.seq for r in log.records(AuditQuery(since=since, until=until))] == [3, 4]
    later = every[-1].at + timedelta(seconds=1)
    assert list(log.records(AuditQuery(since=later))) == []


# Tampering, by hand, on a file of records 1..5. Each case: what is done to the lines,
# and the break verify must report: (position, seq found there, kind).
def _edit(lines: list[bytes], key: bytes) -> list[bytes]:
    lines[2] = lines[2].replace(b'"actor":"user2"', b'"actor":"mallory"')
    return lines


def _rehash(lines: list[bytes], key: bytes) -> list[bytes]:
    """Edited and its hash recomputed, without the key: the MAC gives it away."""
    record = parse_line(lines[2])
    forged = seal(draft(record.action, "mallory", record.team, record.subject,
                        record.details), 2, record.prev, b"not the platform key",
                  now=record.at)
    lines[2] = AuditRecord(**{**vars(forged.record), "mac": record.mac}).line()
    return lines


def _forge(lines: list[bytes], key: bytes) -> list[bytes]:
    """A whole record sealed with another key, linked correctly, put in place of 3."""
    second = parse_line(lines[1])
    lines[2] = seal(draft("approval.granted", "mallory", "alpha"), 2, second.hash,
                    b"another key").line
    return lines


def _delete(lines: list[bytes], key: bytes) -> list[bytes]:
    return lines[:2] + lines[3:]


def _insert(lines: list[bytes], key: bytes) -> list[bytes]:
    """A genuine record replayed: record 2 again after record 3."""
    return lines[:3] + [lines[1]] + lines[3:]


def _reorder(lines: list[bytes], key: bytes) -> list[bytes]:
    return [lines[0], lines[1], lines[3], lines[2], lines[4]]


def _splice(lines: list[bytes], key: bytes) -> list[bytes]:
    """Record 4 replaced by a record 4 sealed with the key on another chain (a fork)."""
    lines[3] = seal(draft("alias.moved", "ops"), 3, "f" * 64, key).line
    return lines


def _garble(lines: list[bytes], key: bytes) -> list[bytes]:
    lines[1] = lines[1][:50]
    return lines


TAMPERING = {
    "edited": (_edit, (3, 3, BreakKind.EDITED)),
    "edited and rehashed without the key": (_rehash, (3, 3, BreakKind.FORGED)),
    "forged with another key": (_forge, (3, 3, BreakKind.FORGED)),
    "deleted": (_delete, (3, 4, BreakKind.SEQUENCE)),
    "inserted (a replay)": (_insert, (4, 2, BreakKind.SEQUENCE)),
    "reordered": (_reorder, (3, 4, BreakKind.SEQUENCE)),
    "spliced from another chain": (_splice, (4, 4, BreakKind.LINK)),
    "unreadable": (_garble, (2, None, BreakKind.MALFORMED)),
}


@pytest.mark.parametrize("case", TAMPERING)
def test_verify_finds_each_kind_of_tampering(tmp_path: Path, case: str) -> None:
    log, path = filled(tmp_path)
    tamper, (position, seq, kind) = TAMPERING[case]
    path.write_bytes(b"\n".join(tamper(path.read_bytes().splitlines(), KEY.encode())) + b"\n")
    report = log.verify()
    assert report.broken is not None, case
    assert (report.broken.position, report.broken.seq, report.broken.kind) == (position, seq,
                                                                                kind)
    assert report.count == position - 1  # the records before the break hold
    if seq is not None:
        assert f"record {seq} (position {position})" in str(report.broken)


def test_a_different_key_fails_verification_at_the_first_record(tmp_path: Path) -> None:
    filled(tmp_path)
    other = open_audit_log(local(tmp_path, key="some other key"))
    broken = other.verify().broken
    assert broken is not None and (broken.seq, broken.kind) == (1, BreakKind.FORGED)


def test_an_empty_log_verifies_with_no_records(tmp_path: Path) -> None:
    report = open_audit_log(local(tmp_path)).verify()
    assert report.intact and report.count == 0 and report.head == GENESIS
