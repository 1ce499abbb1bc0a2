"""Verifying the audit trail: walk the chain, recompute every hash and MAC, and name the
first record where it does not hold and how (edited, forged, deleted/inserted/reordered,
unreadable).

It is the hot loop of ``mlops audit verify`` over millions of records, so a stored line is
not decoded as JSON: the body that was hashed is the line without its seal, and the few
fields the chain needs are read from its bytes (and trusted only once hash and MAC hold).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from mlops.governance.audit.records import GENESIS, SEAL_BYTES, SEAL_HEAD, SEAL_MID, SEAL_TAIL

Entry = tuple[int | None, str, bytes, str, str]
"""What verification needs of one stored record: its sequence number and previous hash
(None when they cannot be read), the bytes that were hashed, and the seal as stored. A
plain tuple: a million are made per million records verified."""


class Malformed(NamedTuple):
    """A stored record that cannot be read at all."""

    reason: str


_PREV, _SEQ = b',"prev":"', b'","seq":'


def line_entry(line: bytes) -> Entry | Malformed:
    """The verification entry of one stored line, read from its bytes without decoding the
    JSON: the body is the line without its seal, and the fields after the details are
    found from the end (a string value cannot hold an unescaped quote, so the last
    ``,"prev":"`` is the record's own). Whatever is read here is trusted only once the
    hash and MAC over the body hold."""
    seal_at = len(line) - SEAL_BYTES
    if (seal_at < 2 or not line.startswith(SEAL_HEAD, seal_at)
            or not line.startswith(SEAL_MID, seal_at + 73) or not line.endswith(SEAL_TAIL)):
        return Malformed("no hash and mac at the end of the line")
    body = line[:seal_at] + b"}"
    hash_hex = line[seal_at + 9:seal_at + 73].decode("ascii", "replace")
    mac_hex = line[seal_at + 82:-2].decode("ascii", "replace")
    at = body.rfind(_PREV)
    prev = body[at + 9:at + 73].decode("ascii", "replace")
    start = at + 73 + len(_SEQ)
    end = body.find(b",", start)
    try:
        seq = int(body[start:end]) if at >= 0 and body.startswith(_SEQ, at + 73) else None
    except ValueError:
        seq = None
    return (seq, prev, body, hash_hex, mac_hex)


class BreakKind(StrEnum):
    MALFORMED = "malformed"  # not a record
    EDITED = "edited"  # hash mismatch: the body changed after sealing
    FORGED = "forged"  # MAC mismatch: sealed without the platform key
    SEQUENCE = "sequence"  # gap or repeat: a record deleted, inserted or moved
    LINK = "link"  # prev-hash mismatch: the chain was cut or forked here


_EXPLAIN = {
    BreakKind.MALFORMED: "cannot be read as an audit record",
    BreakKind.EDITED: "hash mismatch: the record was edited after it was sealed",
    BreakKind.FORGED: "MAC mismatch: the record was not sealed with the platform key",
    BreakKind.SEQUENCE: "sequence broken: a record was deleted, inserted or reordered",
    BreakKind.LINK: "prev-hash mismatch: the chain was cut, spliced or forked here",
}


@dataclass(frozen=True)
class AuditBreak:
    """The first place a chain does not hold: the position (1-based line or row), the
    sequence number found there, what kind of break, and the detail."""

    position: int
    seq: int | None
    kind: BreakKind
    detail: str

    def __str__(self) -> str:
        named = f"record {self.seq}" if self.seq is not None else "a record"
        return (f"{named} (position {self.position}): {_EXPLAIN[self.kind]} "
                f"({self.detail})")


@dataclass(frozen=True)
class VerifyReport:
    """How many records were checked, the last good hash, and the first break if any."""

    count: int
    head: str
    broken: AuditBreak | None = None

    @property
    def intact(self) -> bool:
        return self.broken is None


def verify_chain(entries: Iterable[Entry | Malformed], key: bytes) -> VerifyReport:
    """Walk the chain from the first record: recompute each hash and MAC, and check that
    sequence numbers run 1, 2, 3... and each record names its predecessor's hash. Stops
    at the first break."""
    sha256, keyed = hashlib.sha256, hmac.new(key, digestmod="sha256")
    expected, prev = 1, GENESIS
    for position, entry in enumerate(entries, 1):
        if type(entry) is Malformed:
            broken = AuditBreak(position, None, BreakKind.MALFORMED, entry.reason)
            return VerifyReport(expected - 1, prev, broken)
        seq, stated_prev, body, hash_hex, mac_hex = entry
        digest = sha256(body).digest()
        mac = keyed.copy()  # the key's HMAC state, prepared once
        mac.update(digest)
        if (digest.hex() == hash_hex and mac.hexdigest() == mac_hex and seq == expected
                and stated_prev == prev):
            expected, prev = expected + 1, hash_hex
            continue
        kind, detail = _diagnose(entry, digest.hex(), mac.hexdigest(), expected, prev)
        return VerifyReport(expected - 1, prev, AuditBreak(position, seq, kind, detail))
    return VerifyReport(expected - 1, prev)


def _diagnose(entry: Entry, hash_hex: str, mac_hex: str, expected: int,
              prev: str) -> tuple[BreakKind, str]:
    """Why an entry broke the chain, the first check that fails in the order of trust."""
    seq, stated_prev, _, stored_hash, stored_mac = entry
    if hash_hex != stored_hash:
        return BreakKind.EDITED, f"stored {stored_hash[:12]}..., computed {hash_hex[:12]}..."
    if mac_hex != stored_mac:
        return BreakKind.FORGED, "or the key is not the one that sealed it"
    if seq != expected:
        return BreakKind.SEQUENCE, f"expected {expected}, found {seq}"
    return BreakKind.LINK, f"names {stated_prev[:12]}..., the previous is {prev[:12]}..."
