"""The audit trail's records: what is recorded, and how a record is sealed into the hash
chain.

A record's body (sequence number, UTC time, action, actor, team, subject, details and the
previous record's hash) is encoded canonically: a JSON object with its keys in sorted
order, no whitespace, UTF-8, the details themselves with sorted keys (as orjson writes
them). Its ``hash`` is the sha256 of that encoding and its ``mac`` the HMAC-SHA256 of the
hash with the platform's audit key, so a record cannot be edited, dropped, added or moved
without the chain or a MAC showing it, and nobody without the key can reseal a chain.

A stored record is one line: the body with ``hash`` and ``mac`` appended (the same line in
the file store, in ``mlops audit show --json`` and for auditors). ``verify`` walks a
chain; the stores are ``file_store`` (a file) and ``postgres_store`` (a table);
``log`` ties a store to the key.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NamedTuple

import orjson

GENESIS = "0" * 64  # the "previous hash" of the first record
MAX_DETAILS_BYTES = 64 * 1024  # a record is a line; details are a summary, not a payload
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # fixed width, so times also sort as text
SEAL_HEAD, SEAL_MID, SEAL_TAIL = b',"hash":"', b'","mac":"', b'"}'
SEAL_BYTES = len(SEAL_HEAD) + 64 + len(SEAL_MID) + 64 + len(SEAL_TAIL)


class AuditUnavailable(RuntimeError):
    """The audit store cannot record (or read) right now: the governance action that
    needed the record must fail. The message names the store, never a password."""


class Action(StrEnum):
    """Every governance action the platform records."""

    RUN_TRIGGERED = "run.triggered"  # who, team, deployment, sha256 of the parameters
    DATASET_VALIDATED = "dataset.validated"  # content hash, outcome
    MODEL_REGISTERED = "model.registered"
    ALIAS_MOVED = "alias.moved"
    APPROVAL_GRANTED = "approval.granted"
    APPROVAL_REJECTED = "approval.rejected"
    SERVICE_DEPLOYED = "service.deployed"
    SERVICE_ROLLED_BACK = "service.rolled_back"
    SERVICE_RELOADED = "service.reloaded"  # an admin's reload
    SERVICE_SHADOW = "service.shadow"  # an admin's shadow rate of the challenger
    SERVICE_CANARY = "service.canary"  # an admin's canary share of the challenger
    TEAMS_CHANGED = "teams.changed"  # the teams file
    QUEUE_LIMIT_CHANGED = "queue.limit_changed"  # by the fair-share controller
    RUN_PREEMPTED = "run.preempted"
    RUN_REQUEUED = "run.requeued"  # a run that died with its machine, retried once
    BUDGET_HELD = "budget.held"
    REQUEST_REFUSED = "request.refused"  # every 401 and 403


@dataclass(frozen=True)
class AuditRecord:
    """One sealed record, as stored."""

    seq: int
    at: datetime
    action: str
    actor: str
    team: str | None
    subject: str | None
    details: dict[str, Any]
    prev: str
    hash: str
    mac: str

    def line(self) -> bytes:
        """The record as one JSON line without its newline (what the file holds)."""
        details = orjson.dumps(self.details, option=orjson.OPT_SORT_KEYS)
        body = encode_body(self.seq, format_time(self.at), self.action, self.actor, self.team,
                           self.subject, details, self.prev)
        return seal_line(body, self.hash, self.mac)


class Sealed(NamedTuple):
    """A record just sealed, with the exact bytes a store keeps."""

    record: AuditRecord
    at: str  # the time as encoded
    details_json: bytes
    line: bytes  # body and seal, no newline


@dataclass(frozen=True)
class Draft:
    """What a caller records, checked and canonicalised before any store is locked."""

    action: Action
    actor: str
    team: str | None
    subject: str | None
    details: dict[str, Any] = field(default_factory=dict)
    details_json: bytes = b"{}"


def draft(action: Action | str, actor: str, team: str | None = None,
          subject: str | None = None, details: Mapping[str, Any] | None = None) -> Draft:
    """A checked record to be: a known action, an actor, text team and subject, JSON
    details (string keys) within ``MAX_DETAILS_BYTES``. ValueError names what is wrong."""
    try:
        known = Action(action)
    except ValueError:
        raise ValueError(f"unknown audit action {action!r}: one of "
                         f"{', '.join(a.value for a in Action)}") from None
    if not actor:
        raise ValueError("an audit record needs an actor")
    for name, text in (("actor", actor), ("team", team), ("subject", subject)):
        if text is not None and (not isinstance(text, str) or "\x00" in text):
            raise ValueError(f"the audit {name} must be text without NUL characters")
    try:  # plain JSON values (a dataclass or datetime becomes what orjson writes for it)
        plain = orjson.loads(orjson.dumps(dict(details or {})))
        details_json = orjson.dumps(plain, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise ValueError(f"audit details must be JSON with string keys: {exc}") from None
    if len(details_json) > MAX_DETAILS_BYTES:
        raise ValueError(f"audit details are {len(details_json)} bytes; at most "
                         f"{MAX_DETAILS_BYTES}")
    return Draft(known, actor, team, subject, plain, details_json)


def format_time(at: datetime) -> str:
    return at.astimezone(UTC).strftime(TIME_FORMAT)


def parse_time(text: str) -> datetime:
    if len(text) != 27 or not text.endswith("Z"):
        raise ValueError(f"not an audit time ({TIME_FORMAT}): {text!r}")
    return datetime.fromisoformat(text)


def encode_body(seq: int, at: str, action: str, actor: str, team: str | None,
                subject: str | None, details_json: bytes, prev: str) -> bytes:
    """The canonical encoding that is hashed: keys already in sorted order, the details
    inserted as the canonical JSON they were encoded to."""
    return orjson.dumps({"action": action, "actor": actor, "at": at,
                         "details": orjson.Fragment(details_json), "prev": prev, "seq": seq,
                         "subject": subject, "team": team})


def seal_line(body: bytes, hash_hex: str, mac_hex: str) -> bytes:
    return b"".join((body[:-1], SEAL_HEAD, hash_hex.encode(), SEAL_MID, mac_hex.encode(),
                     SEAL_TAIL))


def seal(new: Draft, prev_seq: int, prev_hash: str, key: bytes,
         now: datetime | None = None) -> Sealed:
    """The record that follows (prev_seq, prev_hash): its body, hash and MAC."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    at = format_time(moment)
    seq = prev_seq + 1
    body = encode_body(seq, at, new.action.value, new.actor, new.team, new.subject,
                       new.details_json, prev_hash)
    digest = hashlib.sha256(body).digest()
    hash_hex, mac_hex = digest.hex(), hmac.digest(key, digest, "sha256").hex()
    record = AuditRecord(seq, moment, new.action.value, new.actor, new.team,
                         new.subject, new.details, prev_hash, hash_hex, mac_hex)
    return Sealed(record, at, new.details_json, seal_line(body, hash_hex, mac_hex))


def parse_line(line: bytes) -> AuditRecord:
    """A stored line back into its record; ValueError when it is not one."""
    try:
        raw = orjson.loads(line)
        return AuditRecord(raw["seq"], parse_time(raw["at"]), raw["action"], raw["actor"],
                           raw["team"], raw["subject"], raw["details"], raw["prev"],
                           raw["hash"], raw["mac"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not an audit record: {exc}") from None


@dataclass(frozen=True)
class AuditQuery:
    """Which records ``show`` lists: all of a team, an action, a time window (UTC,
    ``since`` inclusive, ``until`` exclusive); None matches anything."""

    team: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def matches(self, record: AuditRecord) -> bool:
        return ((self.team is None or record.team == self.team)
                and (self.action is None or record.action == self.action)
                and (self.since is None or record.at >= self.since)
                and (self.until is None or record.at < self.until))
