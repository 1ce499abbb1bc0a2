"""The teams file as the gateway uses it: who may log in, the policy, the queues' owners.

Reloaded when the file changes (its modification time and size), so a new member or a
changed role applies at the next request without a restart; an invalid edit is logged and
the last valid file kept. Verified credentials are remembered briefly, keyed by a keyed
hash of the secret, so an scrypt-hashed credential costs its hash once, not per request.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from infra.gateway.ownership import QueueOwners
from mlops.fairshare.policy import PRIORITIES
from mlops.fairshare.teams import TeamsConfigError, load_teams, queue_name
from mlops.governance.identities import Governance, GovernanceError, Principal, load_governance
from mlops.governance.policy import Policy

log = logging.getLogger(__name__)
VERIFIED_TTL_S = 300.0


@dataclass(frozen=True)
class AccessState:
    governance: Governance
    policy: Policy
    owners: QueueOwners


def load_access(path: Path) -> AccessState:
    """Read and check the teams file; TeamsConfigError or GovernanceError lists problems."""
    config = load_teams(path)
    governance = load_governance(path)
    owners: dict[str, tuple[str, str]] = {}
    for team in config.teams:
        for level in PRIORITIES:
            owners.setdefault(queue_name(team.name, level), (team.name, level))
    return AccessState(governance, Policy(governance), owners)


class Access:
    """The current teams file, and authentication against it."""

    def __init__(self, path: Path, environ: Mapping[str, str]) -> None:
        self.path, self._environ = path, environ
        self._stamp = self._file_stamp()
        self._state = load_access(path)
        self._key = secrets.token_bytes(32)
        self._verified: dict[tuple[str, bytes], float] = {}

    @property
    def state(self) -> AccessState:
        stamp = self._file_stamp()
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self._state = load_access(self.path)
            except (TeamsConfigError, GovernanceError) as exc:
                log.error("keeping the last valid teams file: %s", exc)
            self._verified.clear()
        return self._state

    def authenticate(self, name: str, secret: str) -> Principal | None:
        """The principal whose credential ``secret`` is, else None."""
        governance = self.state.governance
        key = (name, hmac.digest(self._key, secret.encode(), hashlib.sha256))
        if self._verified.get(key, 0.0) > time.monotonic() and name in governance.identities:
            return governance.identities[name].principal
        principal = governance.authenticate(name, secret, self._environ)
        if principal is not None:
            self._verified[key] = time.monotonic() + VERIFIED_TTL_S
        return principal

    def principal(self, name: str) -> Principal | None:
        """A logged-in identity as the file declares it now (None once removed)."""
        identity = self.state.governance.identities.get(name)
        return identity.principal if identity else None

    def _file_stamp(self) -> tuple[int, int]:
        try:
            stat = self.path.stat()
        except OSError:
            return (0, 0)
        return (stat.st_mtime_ns, stat.st_size)
