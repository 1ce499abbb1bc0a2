"""The audit trail as the platform uses it: ``open_audit_log(settings)``, then
``append`` one record per governance action, and ``records``/``verify`` for auditors.

The store follows the profile (a file on the local profile, a PostgreSQL table on the
production one) and the key follows ``MLOPS_AUDIT_KEY``; on the local profile an unset key
is generated once into ``<data_dir>/audit/audit.key`` (mode 0600). Every process opens
its own log; appends from all of them form one chain.

Failing closed: ``append`` returns only once the record is stored, and raises
``AuditUnavailable`` (naming the store, never a password) when it cannot be, so the
action that asked for it fails too. Nothing else is touched: a run already going is not
the audit log's to stop, and the next ``append`` tries the store again.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from mlops.config import Settings
from mlops.governance.audit.file_store import AuditStore, FileAuditStore
from mlops.governance.audit.records import (
    Action,
    AuditQuery,
    AuditRecord,
    AuditUnavailable,
    draft,
    seal,
)
from mlops.governance.audit.verify import VerifyReport, verify_chain

AUDIT_DIR = "audit"
KEY_FILE = "audit.key"
LOG_FILE = "audit.jsonl"


class AuditLog:
    """One process's handle on the audit trail: a store and the key that seals records."""

    def __init__(self, store: AuditStore, key: bytes) -> None:
        if not key:
            raise AuditUnavailable("the audit key is empty")
        self.store, self._key = store, key

    @property
    def name(self) -> str:
        return self.store.name

    def append(self, action: Action | str, actor: str, team: str | None = None,
               subject: str | None = None,
               details: Mapping[str, Any] | None = None) -> AuditRecord:
        """Record one governance action; returns the stored record. ValueError for a
        record that is not valid (unknown action, no actor, details not JSON);
        AuditUnavailable when the store cannot take it."""
        new = draft(action, actor, team, subject, details)
        return self.store.append(partial(seal, new, key=self._key))

    def records(self, query: AuditQuery | None = None) -> Iterator[AuditRecord]:
        """The records that match, oldest first."""
        return self.store.records(query or AuditQuery())

    def verify(self) -> VerifyReport:
        """Walk the whole chain: hashes, MACs, sequence and links (see ``verify_chain``)."""
        return verify_chain(self.store.entries(), self._key)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_audit_log(settings: Settings | None = None) -> AuditLog:
    """The audit log of the settings' profile (nothing is connected or written yet)."""
    settings = settings or Settings()
    key = load_audit_key(settings)
    if settings.profile == "production":
        from mlops.governance.audit.postgres_store import PostgresAuditStore

        return AuditLog(PostgresAuditStore(settings), key)
    return AuditLog(FileAuditStore(audit_file(settings)), key)


def audit_file(settings: Settings) -> Path:
    return settings.data_dir / AUDIT_DIR / LOG_FILE


def load_audit_key(settings: Settings) -> bytes:
    """``MLOPS_AUDIT_KEY``; unset on the local profile, the key file under the data
    directory, created on first use. The production profile requires the setting (the
    same key in every process, e.g. from a mounted secret)."""
    if settings.audit_key is not None:
        return settings.audit_key.get_secret_value().encode()
    if settings.profile == "production":
        raise AuditUnavailable("MLOPS_AUDIT_KEY is not set: the production profile's audit "
                               "trail needs the platform's audit key in every process")
    return _local_key(settings.data_dir / AUDIT_DIR / KEY_FILE)


def _local_key(path: Path) -> bytes:
    """Read the key file, creating it (0600) if absent; concurrent first uses agree on one
    key, because the file appears complete or not at all (a hard link of a written temp)."""
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            temp = path.with_name(f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, secrets.token_hex(32).encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(temp, path)
            except FileExistsError:
                pass  # another process created it first: use theirs
            finally:
                temp.unlink()
        if path.stat().st_mode & 0o077:
            raise AuditUnavailable(f"the audit key file {path} is readable by others: "
                                   "chmod 600 it")
        key = path.read_bytes().strip()
    except OSError as exc:
        raise AuditUnavailable(f"the audit key file {path} cannot be used: "
                               f"{exc.strerror or exc}") from None
    if not key:
        raise AuditUnavailable(f"the audit key file {path} is empty")
    return key
