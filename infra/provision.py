"""Apply the teams file to Prefect: ``python -m infra.provision [--file F] [--dry-run]``.

Reads the pools, queues and global concurrency limits that the server holds, plans the
creates and updates that ``infra/teams.yaml`` implies (``mlops.fairshare.teams``), applies them and
prints each one; a second run prints ``no changes``. Nothing is ever deleted: queues and
``team:`` limits the file does not declare are printed as unmanaged. An invalid file is
refused with every problem listed (exit 2) before the server is touched.

The server is PREFECT_API_URL, or Prefect's embedded server when that is unset (slow to
start on a busy machine: PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=120). Through
the gateway it runs as an admin: PREFECT_API_AUTH_STRING=name:secret, or the file's first
admin from the local secrets file (``make up``'s) when that is unset.

Applying changes is a governance action: before the first one, the audit trail records
``teams.changed`` (the admin account, else ``provision``; the file's sha256 and the changes).
When the trail cannot record it, nothing is applied (exit 1, the message names the store).
Then the platform's automations (``infra.automations``: zombie runs, runs that never
started) are created or updated.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import os
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infra.automations import ensure_automations
from infra.credentials import local_auth
from infra.prefect_api import PAGE, patch_queue, read_all
from mlops.config import ConfigError, Settings
from mlops.fairshare.plan import (
    Change,
    CurrentState,
    DesiredState,
    LimitState,
    PoolState,
    QueueState,
    desired_state,
    find_unmanaged,
    plan_changes,
)
from mlops.fairshare.teams import (
    TeamsConfig,
    TeamsConfigError,
    load_teams,
)
from mlops.governance.audit.log import open_audit_log
from mlops.governance.audit.records import Action, AuditUnavailable
from mlops.governance.identities import Role
from mlops.monitoring.policy import DriftPolicy, drift_policies

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient

DEFAULT_FILE = Path(__file__).with_name("teams.yaml")
# Prefect shifts a queue whose priority another queue takes; a second round puts back any
# managed queue that was shifted, a third would mean something else is changing the server.
_MAX_ROUNDS = 3
_MAX_RECORDED_CHANGES = 500  # an audit record's details stay a summary
log = logging.getLogger(__name__)
Recorder = Callable[[list[Change]], None]  # records changes before they are applied; raises


@dataclass(frozen=True)
class ProvisionResult:
    """What a run changed (or would change, when not applied) and what it left alone."""

    changes: list[Change]
    unmanaged: list[str]
    applied: bool

    def lines(self) -> list[str]:
        """The report a person reads: one line per change, a summary, the unmanaged."""
        if not self.changes:
            return ["no changes", *self.unmanaged]
        count = f"{len(self.changes)} change(s)"
        summary = f"{count} applied" if self.applied else f"dry run: {count} planned, none applied"
        return [str(change) for change in self.changes] + [summary, *self.unmanaged]


async def provision(config: TeamsConfig, dry_run: bool = False,
                    record: Recorder | None = None) -> ProvisionResult:
    """Plan the file against the server and, unless ``dry_run``, apply it until they agree;
    ``record`` is given the first round's changes before any is applied (its exception
    stops the run with nothing applied)."""
    from prefect.client.orchestration import get_client

    desired = desired_state(config)
    async with get_client() as client:
        current = await read_current_state(client, desired)
        changes, unmanaged = plan_changes(desired, current), find_unmanaged(desired, current)
        if dry_run:
            return ProvisionResult(changes, unmanaged, applied=False)
        if changes and record is not None:
            record(changes)
        done: list[Change] = []
        for _ in range(_MAX_ROUNDS):
            if not changes:
                return ProvisionResult(done, unmanaged, applied=True)
            await apply_changes(client, changes)
            done += changes
            changes = plan_changes(desired, await read_current_state(client, desired))
    raise RuntimeError("the server still differs from the file after "
                       f"{_MAX_ROUNDS} rounds: {'; '.join(map(str, changes))}")


async def read_current_state(client: PrefectClient, desired: DesiredState) -> CurrentState:
    """The declared pools that exist, all their queues, and every global concurrency limit."""
    from prefect.exceptions import ObjectNotFound

    pools: list[PoolState] = []
    queues: list[QueueState] = []
    for want in desired.pools:
        try:
            pool = await client.read_work_pool(want.name)
        except ObjectNotFound:
            continue
        pools.append(PoolState(pool.name, pool.type, pool.concurrency_limit))
        found = await read_all(lambda offset, name=want.name: client.read_work_queues(
            work_pool_name=name, limit=PAGE, offset=offset))
        queues += [QueueState(want.name, q.name, q.concurrency_limit, q.priority) for q in found]
    found = await read_all(lambda offset: client.read_global_concurrency_limits(
        limit=PAGE, offset=offset))
    limits = [LimitState(limit.name, limit.limit, limit.active) for limit in found]
    return CurrentState(tuple(pools), tuple(queues), tuple(limits))


async def apply_changes(client: PrefectClient, changes: list[Change]) -> None:
    """Apply changes in the order given (pools, then queues by priority, then limits)."""
    appliers = {"pool": _apply_pool, "queue": _apply_queue, "limit": _apply_limit}
    for change in changes:
        await appliers[change.kind](client, change)
        log.info("applied: %s", change)


async def _apply_pool(client: PrefectClient, change: Change) -> None:
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectAlreadyExists

    pool = change.target
    assert isinstance(pool, PoolState)
    if change.action == "create":
        try:
            await client.create_work_pool(WorkPoolCreate(
                name=pool.name, type=pool.type, concurrency_limit=pool.concurrency_limit,
                base_job_template=_default_job_template(pool.type)))
            return
        except ObjectAlreadyExists:  # created meanwhile by someone else: update it instead
            pass
    await client.update_work_pool(pool.name,
                                  WorkPoolUpdate(concurrency_limit=pool.concurrency_limit))


def _default_job_template(pool_type: str) -> dict[str, Any]:
    """The installed worker's default template; empty (filled in by the worker when it
    starts) for a type whose worker is not installed here, so nothing is fetched online."""
    from prefect.workers.base import BaseWorker

    worker = BaseWorker.get_worker_class_from_type(pool_type)
    return worker.get_default_base_job_template() if worker else {}


async def _apply_queue(client: PrefectClient, change: Change) -> None:
    """Create or update a queue; creating one that exists (a new pool's own ``default``
    queue) updates it.

    Updates go through the pool's queue route (``prefect_api.patch_queue``).
    """
    from prefect.client.schemas.actions import WorkQueueUpdate
    from prefect.exceptions import ObjectAlreadyExists

    queue = change.target
    assert isinstance(queue, QueueState)
    if change.action == "create":
        try:
            await client.create_work_queue(
                name=queue.name, work_pool_name=queue.pool, priority=queue.priority,
                concurrency_limit=queue.concurrency_limit)
            return
        except ObjectAlreadyExists:
            pass
    # Only what differs: a limit the fair-share controller owns is never in the diffs.
    wanted = {"concurrency": {"concurrency_limit": queue.concurrency_limit},
              "priority": {"priority": queue.priority}}
    fields = ({k: v for word, *_ in change.diffs for k, v in wanted[word].items()}
              if change.action == "update" else {**wanted["concurrency"], **wanted["priority"]})
    await patch_queue(client, queue.pool, queue.name,
                      WorkQueueUpdate(**fields).model_dump(mode="json", exclude_unset=True))


async def _apply_limit(client: PrefectClient, change: Change) -> None:
    from prefect.client.schemas.actions import (
        GlobalConcurrencyLimitCreate,
        GlobalConcurrencyLimitUpdate,
    )
    from prefect.exceptions import ObjectAlreadyExists

    limit = change.target
    assert isinstance(limit, LimitState)
    if change.action == "create":
        try:
            await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(
                name=limit.name, limit=limit.limit, active=limit.active))
            return
        except ObjectAlreadyExists:
            pass
    await client.update_global_concurrency_limit(
        limit.name, GlobalConcurrencyLimitUpdate(limit=limit.limit, active=limit.active))


def _credentials(teams_file: Path) -> tuple[AbstractContextManager[object], str]:
    """The admin's credentials from the local secrets file when the caller set none (the
    gateway lets only admins change pools, queues and limits), and who is acting: the
    account's name, else ``provision``."""
    from prefect.settings import PREFECT_API_AUTH_STRING, temporary_settings

    auth = local_auth(Settings(), teams_file, Role.ADMIN, os.environ)
    used = auth.get("PREFECT_API_AUTH_STRING") or os.environ.get("PREFECT_API_AUTH_STRING")
    actor = used.split(":", 1)[0] if used and ":" in used else "provision"
    if not auth:
        return nullcontext(), actor
    return temporary_settings({PREFECT_API_AUTH_STRING: auth["PREFECT_API_AUTH_STRING"]}), actor


def teams_recorder(teams_file: Path, actor: str) -> Recorder:
    """``teams.changed`` in the settings' audit trail, for a file about to be applied."""

    def record(changes: list[Change]) -> None:
        details = {"new_sha256": hashlib.sha256(teams_file.read_bytes()).hexdigest(),
                   "via": "infra.provision", "change_count": len(changes),
                   "changes": [str(change) for change in changes[:_MAX_RECORDED_CHANGES]]}
        try:
            with open_audit_log(Settings()) as audit:
                audit.append(Action.TEAMS_CHANGED, actor, None, str(teams_file), details)
        except AuditUnavailable as exc:
            raise AuditUnavailable(f"the audit trail cannot record this teams-file change, "
                                   f"so nothing was applied: {exc}") from None

    return record


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m infra.provision",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, default=DEFAULT_FILE,
                        help=f"teams file (default: {DEFAULT_FILE})")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the plan and apply nothing")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Exit 0 when applied (or planned), 2 for an invalid file, 1 when the server (or the
    audit trail) fails."""
    args = build_parser().parse_args(argv)
    try:
        config = load_teams(args.file)
        drift = drift_policies(args.file)
    except (TeamsConfigError, ConfigError) as exc:
        print(f"error: {exc}\nnothing applied", file=sys.stderr)
        return 2
    try:
        credentials, actor = _credentials(args.file)
        with credentials:
            result = asyncio.run(provision(config, dry_run=args.dry_run,
                                           record=teams_recorder(args.file, actor)))
            automations = asyncio.run(install_automations(drift, args.dry_run))
    except Exception as exc:  # the CLI reports any failure as one line
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print("\n".join([*result.lines(), *automations]))
    return 0


async def install_automations(drift: dict[str, DriftPolicy],
                              dry_run: bool = False) -> list[str]:
    """The platform's automations (``infra.automations``: zombie runs, runs that never
    started, after MLOPS_START_TIMEOUT_S; retraining on drift per the teams file)."""
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        settings = Settings()
        return await ensure_automations(client, settings.start_timeout_s, drift, dry_run,
                                        settings.alert_webhook_url)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    sys.exit(main())
