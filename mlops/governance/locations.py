"""Dataset locations: where a run may read a dataset from, checked before anything is read.

A dataset spec's ``path`` comes from whoever starts a run (the Prefect UI's form), so it is
untrusted input. Always refused: http(s):// and file:// URLs, every scheme but ``s3://`` and
``builtin://``, fsspec chains (``::``), NUL and other control characters, ``..`` segments
(and ``.`` segments in an S3 key). With a teams file (``MLOPS_TEAMS_FILE``, set by
``make up``), the location must also lie under one of the team's data roots: its
``data.roots`` plus, always, its own folder ``<data root>/datasets-in/<team>/`` (the data
directory, and on the production profile also the bucket). A location under a more
specific root of another team, or one holding another team's root, is that team's, and a
symbolic link counts where it leads. ``builtin://`` datasets are every team's. Without a
teams file (``make run`` on a laptop) any local path or ``s3://`` location passes.

A local path is taken as pandas would read it: ``~`` expanded, relative to the working
directory; the check returns it resolved, and the stage reads what was checked.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from mlops.config import ConfigError, Settings
from mlops.governance.identities import Governance, load_governance

BUILTIN = "builtin://"
S3 = "s3://"
TEAM_FOLDER = "datasets-in"  # <data root>/datasets-in/<team>/: every team's own root
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class LocationRefused(ConfigError):
    """A dataset location the run's team may not read: a setting to fix, never retried."""


@dataclass(frozen=True)
class Root:
    """One allowed prefix of one team: a resolved local folder, or a bucket and key prefix."""

    team: str
    kind: str  # "local" or "s3"
    parts: tuple[str, ...]  # local: the folder's path parts; s3: (bucket, *key segments)
    text: str

    def holds(self, kind: str, parts: tuple[str, ...]) -> bool:
        return kind == self.kind and parts[:len(self.parts)] == self.parts


@dataclass(frozen=True)
class LocationPolicy:
    """Every team's data roots, and the team a run reads for (None: a stage that was not
    told the team accepts any team's root). ``roots`` None: no teams file, no containment."""

    team: str | None
    roots: tuple[Root, ...] | None = None

    def allowed(self) -> str:
        if self.roots is None:
            return "builtin://, s3:// or a local path (no teams file: MLOPS_TEAMS_FILE unset)"
        mine = [r.text for r in self.roots if self.team is None or r.team == self.team]
        return ", ".join([BUILTIN, *dict.fromkeys(mine)])

    def who(self) -> str:
        return f"team {self.team}" if self.team else "a run of any team"


def platform_governance(settings: Settings) -> Governance | None:
    """The teams file's governance sections, or None when the platform has no teams file."""
    return load_governance(settings.teams_file) if settings.teams_file else None


def team_folders(team: str, settings: Settings) -> list[str]:
    """The team's own folder under the data directory, and under the bucket on production."""
    folders = [str(settings.data_dir / TEAM_FOLDER / team) + "/"]
    if settings.profile == "production":
        folders.append(f"{S3}{settings.s3_bucket}/{TEAM_FOLDER}/{team}/")
    return folders


def location_policy(settings: Settings, governance: Governance | None,
                    team: str | None) -> LocationPolicy:
    """The data roots of every team in the teams file (and of ``team``, declared or not)."""
    if governance is None:
        return LocationPolicy(team=team)
    names = sorted({*governance.teams, *([team] if team else [])})
    roots = [_root(name, text, settings)
             for name in names
             for text in [*governance.team(name).data.roots, *team_folders(name, settings)]]
    return LocationPolicy(team=team, roots=tuple(roots))


def check_location(path: str, policy: LocationPolicy) -> str:
    """The location to read for ``path`` (a local path resolved), else LocationRefused
    naming the path, the team and what it may read."""
    problem = syntax_problem(path)
    if problem is None and not path.startswith(BUILTIN):
        location, problem = _contained(path, policy)
    else:
        location = path
    if problem:
        raise LocationRefused(f"dataset location {path!r} refused for {policy.who()}: {problem}; "
                              f"allowed: {policy.allowed()}")
    return location


def syntax_problem(path: str) -> str | None:
    """What makes ``path`` unreadable for every team, whatever its roots; None when nothing."""
    if not path.strip():
        return "it is empty"
    if _CONTROL.search(path):
        return "it holds a NUL byte or another control character"
    if "::" in path:
        return "it chains filesystems ('::'), which the readers would follow"
    scheme = _SCHEME.match(path)
    if scheme and not path.startswith((S3, BUILTIN)):
        name = scheme.group(1).lower()
        if name in ("http", "https"):
            return ("http(s) URLs are never fetched: a worker would request them from inside "
                    "the platform")
        if name == "file":
            return "file:// URLs are refused; give the local path itself"
        return (f"the scheme {scheme.group(1)}: is not a dataset location (s3://, builtin:// "
                "or a local path)")
    segments = path.split("://", 1)[-1].split("/")
    if ".." in segments:
        return "it contains '..', which climbs out of a folder"
    if path.startswith(S3):
        if not segments[0]:
            return "an s3:// location needs a bucket"
        if "." in segments[1:]:
            return "it contains '.' as an S3 key segment"
    return None


def _contained(path: str, policy: LocationPolicy) -> tuple[str, str | None]:
    """The location to read and, with a teams file, why it is not the team's."""
    if path.startswith(S3):
        parts = _s3_parts(path)
        return path, None if policy.roots is None else _owner_problem(policy, "s3", parts)
    lexical = Path(os.path.abspath(os.path.expanduser(path)))
    real = lexical.resolve()
    if policy.roots is None:
        return str(real), None
    problem = _owner_problem(policy, "local", real.parts)
    if problem and _owner_problem(policy, "local", lexical.parts) is None:
        problem = f"it leads through a symbolic link to {real}, which {problem.removeprefix('it ')}"
    return str(real), problem or _links_problem(real, policy)


def _owner_problem(policy: LocationPolicy, kind: str, parts: tuple[str, ...]) -> str | None:
    """Whether the team owns the location: its most specific root is the team's, and no
    other team's root lies inside it."""
    assert policy.roots is not None
    holding = [root for root in policy.roots if root.holds(kind, parts)]
    if not holding:
        return ("it is under none of the team's data roots" if policy.team
                else "it is under no team's data root")
    if policy.team is None:
        return None
    deepest = max(len(root.parts) for root in holding)
    owners = [root for root in holding if len(root.parts) == deepest]
    if policy.team not in {root.team for root in owners}:
        return f"it lies under team {owners[0].team}'s data root {owners[0].text}"
    mine = {root.parts for root in policy.roots if root.team == policy.team}
    for root in policy.roots:
        inside = root.kind == kind and root.parts[:len(parts)] == parts
        if inside and root.team != policy.team and root.parts not in mine:
            return f"it holds team {root.team}'s data root {root.text}"
    return None


def _links_problem(real: Path, policy: LocationPolicy) -> str | None:
    """A folder (of partitions) whose symbolic links lead outside the team's roots."""
    if not real.is_dir():
        return None
    for folder, dirs, files in os.walk(real):
        for name in [*dirs, *files]:
            entry = Path(folder) / name
            if entry.is_symlink():
                target = entry.resolve()
                problem = _owner_problem(policy, "local", target.parts)
                if problem:
                    return (f"{entry} inside it links to {target}, which "
                            f"{problem.removeprefix('it ')}")
    return None


def _root(team: str, text: str, settings: Settings) -> Root:
    """A teams-file root, normalised: relative local folders are under the data directory."""
    problem = syntax_problem(text)
    if text.startswith(BUILTIN):
        problem = "builtin:// datasets are allowed for every team already"
    if problem:
        raise ConfigError(f"teams file {settings.teams_file}: team {team}'s data root {text!r}: "
                          f"{problem}")
    if text.startswith(S3):
        parts = _s3_parts(text)
        return Root(team, "s3", parts, f"{S3}{'/'.join(parts)}/")
    folder = Path(os.path.expanduser(text))
    folder = (folder if folder.is_absolute() else settings.data_dir / folder).resolve()
    return Root(team, "local", folder.parts, f"{folder}/")


def _s3_parts(location: str) -> tuple[str, ...]:
    """(bucket, *key segments) of an s3:// location, without a query and empty segments."""
    return tuple(part for part in location[len(S3):].split("?")[0].split("/") if part)
