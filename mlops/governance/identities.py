"""Who may do what: the identities and governance sections of the teams file.

The teams file (``infra/teams.yaml``) declares, besides pools and quotas (``fairshare``):

- ``platform.admins``: platform operators, admin in every team;
- ``platform.service_accounts``: the platform's own processes and CI, each with one
  platform role (``controller``: the fair-share controller; ``deployer``: CI);
- ``platform.residency``: the regions every team's data may live in (optional);
- per team, ``members`` (people) and ``service_accounts`` (bots) with roles in that team
  (``viewer``, ``runner``, ``approver``), ``approval`` (whether ``champion`` moves only
  after an approver says so) and ``data`` (the team's data roots and allowed regions).

A credential is never in the file: it is an scrypt hash (``scrypt$...``, made by
``mlops hash-secret``), or a reference to where the secret is (``env:NAME``, an environment
variable of the process that checks it; ``file:/path``, a mounted secret). A person may
belong to several teams: the same name with the same credential, roles per team.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

NAME_PATTERN = r"^[a-z][a-z0-9._-]{0,63}$"
PLATFORM = "*"  # the scope of platform roles: every team
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}  # OWASP's minimum for scrypt
_REFERENCE = re.compile(r"^(env:[A-Za-z_][A-Za-z0-9_]*|file:/\S+)$")


class Role(StrEnum):
    VIEWER = "viewer"  # reads
    RUNNER = "runner"  # starts, cancels, pauses and resumes the team's runs
    APPROVER = "approver"  # approves or rejects a champion; starts high-priority runs
    ADMIN = "admin"  # platform operator: everything, in every team
    CONTROLLER = "controller"  # the fair-share controller: queue limits, preemption
    DEPLOYER = "deployer"  # CI: creates and updates deployments


TEAM_ROLES = (Role.VIEWER, Role.RUNNER, Role.APPROVER)
SERVICE_ROLES = (Role.CONTROLLER, Role.DEPLOYER)


class GovernanceError(ValueError):
    """A teams file whose governance sections cannot be used; every problem is listed."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"{source}: {len(self.problems)} governance problem(s)\n{lines}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class MemberEntry(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    roles: list[Literal["viewer", "runner", "approver"]] = Field(min_length=1)
    credential: str


class AdminEntry(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    credential: str


class ServiceEntry(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    role: Literal["controller", "deployer"]
    credential: str


class Residency(_Strict):
    """Regions data may live in (an S3 bucket's region, e.g. me-central-1 for UAE data)."""

    regions: list[str] = Field(min_length=1)


class DataPolicy(_Strict):
    """Where a team's datasets may be read from, and in which regions its data may live."""

    roots: list[str] = Field(default_factory=list, description="Allowed dataset locations "
                             "(local folders or s3://bucket/prefix/) besides the team's own "
                             "<data_dir>/datasets-in/<team>/.")
    regions: list[str] | None = Field(None, min_length=1)


class Approval(_Strict):
    required: bool = False
    timeout_s: float = Field(86_400.0, gt=0)


class TeamGovernance(_Strict):
    name: str
    approval: Approval = Approval()
    data: DataPolicy = DataPolicy()


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: its name, whether a person or a service, and its roles per
    team (``PLATFORM`` holds the roles that apply to every team)."""

    name: str
    kind: Literal["person", "service"]
    roles: Mapping[str, frozenset[Role]] = field(default_factory=dict)

    def roles_in(self, team: str) -> frozenset[Role]:
        return frozenset(self.roles.get(team, frozenset()) | self.roles.get(PLATFORM,
                                                                            frozenset()))

    def teams(self) -> list[str]:
        return sorted(team for team in self.roles if team != PLATFORM)


@dataclass(frozen=True)
class Identity:
    principal: Principal
    credential: str


@dataclass(frozen=True)
class Governance:
    """The governance sections of one teams file."""

    identities: Mapping[str, Identity]
    teams: Mapping[str, TeamGovernance]
    residency: Residency | None = None

    def team(self, name: str) -> TeamGovernance:
        return self.teams.get(name, TeamGovernance(name=name))

    def authenticate(self, name: str, secret: str,
                     environ: Mapping[str, str]) -> Principal | None:
        """The principal whose credential ``secret`` matches, else None (also for an
        unknown name, after the same work, so timing does not tell names apart)."""
        identity = self.identities.get(name)
        credential = identity.credential if identity else _decoy()
        matched = verify_secret(credential, secret, environ)
        return identity.principal if identity and matched else None


def hash_secret(secret: str) -> str:
    """An scrypt hash of a password or token, in the form the teams file stores."""
    if not secret:
        raise ValueError("an empty secret cannot be hashed")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, **_SCRYPT)
    encode = base64.b64encode
    return (f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}$"
            f"{encode(salt).decode()}${encode(digest).decode()}")


def verify_secret(credential: str, secret: str, environ: Mapping[str, str]) -> bool:
    """Whether ``secret`` matches a credential: an scrypt hash, or the secret an env:/file:
    reference points to (a missing variable or file matches nothing)."""
    if credential.startswith("scrypt$"):
        _, n, r, p, salt, digest = credential.split("$")
        got = hashlib.scrypt(secret.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r),
                             p=int(p))
        return hmac.compare_digest(got, base64.b64decode(digest))
    expected = _referenced(credential, environ)
    return expected is not None and hmac.compare_digest(expected.encode(), secret.encode())


def _referenced(credential: str, environ: Mapping[str, str]) -> str | None:
    kind, _, where = credential.partition(":")
    if kind == "env":
        return environ.get(where) or None
    try:
        return Path(where).read_text().strip() or None
    except OSError:
        return None


@cache
def _decoy() -> str:
    return hash_secret(secrets.token_urlsafe(16))


def credential_problem(label: str, credential: Any) -> str | None:
    """Why a credential value cannot stay in the file, or None when it is a hash or a
    reference."""
    if not isinstance(credential, str):
        return f"{label}: credential must be a string"
    if credential.startswith("scrypt$"):
        parts = credential.split("$")
        ok = len(parts) == 6 and all(part.isdigit() for part in parts[1:4])
        return None if ok else f"{label}: credential is not a valid scrypt$N$r$p$salt$hash"
    if _REFERENCE.match(credential):
        return None
    return (f"{label}: credential must be an scrypt hash (`mlops hash-secret`) or a reference "
            "env:NAME or file:/path; a secret itself never goes in the file")


def load_governance(path: str | Path) -> Governance:
    """The governance sections of a teams file; GovernanceError lists every problem."""
    source = str(path)
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise GovernanceError(source, [f"cannot read the file: {exc}"]) from exc
    return parse_governance(raw, source)


def parse_governance(raw: Any, source: str = "teams file") -> Governance:
    """Validate the ``platform`` section and each team's governance keys, all at once."""
    raw = raw if isinstance(raw, dict) else {}
    problems: list[str] = []
    identities: dict[str, Identity] = {}
    platform = raw.get("platform") or {}
    if not isinstance(platform, dict):
        platform, problems = {}, ["platform: must be a mapping"]
    unknown = sorted(set(platform) - {"admins", "service_accounts", "residency"})
    problems += [f"platform: unknown key {key!r}" for key in unknown]
    for entry in _entries(platform, "admins", AdminEntry, "platform", problems):
        _add(identities, entry.name, "person", PLATFORM, {Role.ADMIN}, entry.credential,
             problems)
    for entry in _entries(platform, "service_accounts", ServiceEntry, "platform", problems):
        _add(identities, entry.name, "service", PLATFORM, {Role(entry.role)},
             entry.credential, problems)
    residency = _model(Residency, platform.get("residency"), "platform.residency", problems)
    teams: dict[str, TeamGovernance] = {}
    for body in raw.get("teams") or []:
        if isinstance(body, dict) and isinstance(body.get("name"), str):
            teams[body["name"]] = _team(body, identities, problems)
    if problems:
        raise GovernanceError(source, problems)
    return Governance(identities=identities, teams=teams, residency=residency)


def _team(body: dict[str, Any], identities: dict[str, Identity],
          problems: list[str]) -> TeamGovernance:
    team = body["name"]
    label = f"team {team}"
    for entry in _entries(body, "members", MemberEntry, label, problems):
        _add(identities, entry.name, "person", team, set(map(Role, entry.roles)),
             entry.credential, problems)
    for entry in _entries(body, "service_accounts", MemberEntry, label, problems):
        _add(identities, entry.name, "service", team, set(map(Role, entry.roles)),
             entry.credential, problems)
    approval = _model(Approval, body.get("approval"), f"{label}.approval", problems)
    data = _model(DataPolicy, body.get("data"), f"{label}.data", problems)
    return TeamGovernance(name=team, approval=approval or Approval(), data=data or DataPolicy())


def _entries(section: dict[str, Any], key: str, model: type[_Strict], label: str,
             problems: list[str]) -> list[Any]:
    raw = section.get(key) or []
    if not isinstance(raw, list):
        problems.append(f"{label}.{key}: must be a list")
        return []
    valid = []
    for index, body in enumerate(raw):
        entry = _model(model, body, f"{label}.{key}[{index}]", problems)
        if entry is None:
            continue
        problem = credential_problem(f"{label}.{key}[{index}] ({entry.name})", entry.credential)
        if problem:
            problems.append(problem)
        else:
            valid.append(entry)
    return valid


def _model(model: type[_Strict], raw: Any, label: str, problems: list[str]) -> Any:
    if raw is None:
        return None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems += [f"{label}: {'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}"
                     for e in exc.errors()]
        return None


def _add(identities: dict[str, Identity], name: str, kind: Literal["person", "service"],
         scope: str, roles: set[Role], credential: str, problems: list[str]) -> None:
    """Add roles in one scope to an identity; one name has one kind and one credential."""
    known = identities.get(name)
    if known is None:
        identities[name] = Identity(Principal(name, kind, {scope: frozenset(roles)}),
                                    credential)
        return
    if known.credential != credential or known.principal.kind != kind:
        problems.append(f"identity {name!r} is declared twice with a different credential or "
                        "kind: one name is one identity")
        return
    merged = {**known.principal.roles}
    merged[scope] = frozenset(merged.get(scope, frozenset()) | roles)
    identities[name] = Identity(Principal(name, kind, merged), credential)
