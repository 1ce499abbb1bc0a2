"""The fair-share controller: one long-running flow run that decides every period.

``python -m flows.fairshare_controller --file infra/teams.yaml`` (``make up`` starts it when
the teams file has a ``fairshare`` section). Each tick reads every pool's runs per team
queue, asks the policy for queue limits (``infra.fairshare_tick.tick``), applies what differs
and, with preemption on, cancels and requeues the newest borrowed runs; a run whose machine
died under it (marked Crashed by the zombie automation) is requeued once
(``infra.crash_requeue``).

Why a long-running flow run and not a deployment on an interval schedule: the controller
must act every few seconds without holding a slot of the pools it governs or obeying the
limits it sets, without creating a flow run per tick (8,640 a day at 10 s), and it serves
Prometheus gauges from one stable process. As a flow run it still shows in the Prefect UI:
each decision is in its logs with the inputs it was made from, and each pool's shares are a
table artifact (key ``fairshare-<pool>``), updated whenever the decision changes.

Every limit change, preemption and budget hold is appended to the audit trail (the
settings' ``open_audit_log``) under the controller's service account before it is made; a
change the trail cannot record waits for a later tick, logged as an error naming the store.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_table_artifact
from prefect.client.orchestration import get_client

from infra.crash_requeue import requeue_crashed
from infra.fairshare_audit import ControllerAudit, controller_actor
from infra.fairshare_tick import PoolDecision, fall_back, tick
from mlops.config import Settings
from mlops.fairshare.gauges import FairShareGauges
from mlops.fairshare.teams import FairShareConfig, TeamsConfig, TeamsConfigError, load_teams
from mlops.governance.audit.log import open_audit_log
from mlops.governance.audit.records import AuditUnavailable


@flow(name="fairshare-controller", log_prints=False)
async def fairshare_controller(teams_file: str = "infra/teams.yaml", ticks: int = 0,
                               period_s: float | None = None, apply: bool = True,
                               metrics_port: int | None = None) -> int:
    """Decide every ``period_s`` (the file's period by default); ``ticks`` > 0 stops after
    that many. Returns the number of ticks run."""
    config = load_teams(teams_file)
    settings = Settings()
    gauges = FairShareGauges()
    if metrics_port:
        gauges.serve(metrics_port, settings.platform_host)
    with open_audit_log(settings) as audit_log:
        audit = ControllerAudit(audit_log, controller_actor(teams_file))
        last: dict[str, Any] = {}
        count = 0
        async with get_client() as client:
            while True:
                config = _reload(teams_file, config)
                try:
                    decisions = await tick(client, config, apply=apply, audit=audit)
                    requeued = await requeue_crashed(client, config, audit) if apply else []
                except Exception as exc:  # the controller outlives a server hiccup
                    get_run_logger().warning("tick failed, limits left as they are: %s", exc)
                else:
                    await _report(config, decisions, last, gauges)
                    for line in requeued:
                        get_run_logger().warning("%s", line)
                count += 1
                if ticks and count >= ticks:
                    return count
                period = period_s or (config.fairshare or FairShareConfig()).period_s
                gauges.period.set(period)
                await asyncio.sleep(period)


def _reload(teams_file: str, config: TeamsConfig) -> TeamsConfig:
    """The file as it is now, so that an edit (a weight, preemption) applies at the next
    tick without a restart; an invalid edit is logged and the last valid file kept."""
    try:
        fresh = load_teams(teams_file)
    except TeamsConfigError as exc:
        get_run_logger().error("keeping the last valid teams file: %s", exc)
        return config
    if fresh != config:
        get_run_logger().info("teams file changed: %s", teams_file)
    return fresh


async def _report(config: TeamsConfig, decisions: list[PoolDecision], last: dict[str, Any],
                  gauges: FairShareGauges) -> None:
    """Log a pool's decision with its inputs when either changed; publish the table when
    the decision changed; gauges always."""
    logger = get_run_logger()
    for decision in decisions:
        for held_back in decision.unrecorded:
            logger.error("not applied this tick (tried again next tick): %s", held_back)
        gauges.update(decision.pool, decision.teams, decision.running, decision.queued,
                      decision.plan, decision.capacity, decision.waited)
        inputs, outputs = decision.inputs(), decision.outputs()
        if last.get(decision.pool) != (inputs, outputs) or decision.applied:
            logger.info("decision %s", json.dumps({"inputs": inputs, "outputs": outputs,
                                                   "applied": decision.applied},
                                                  sort_keys=True))
        if last.get(decision.pool, (None, None))[1] != outputs:
            await acreate_table_artifact(
                decision.rows(), key=f"fairshare-{decision.pool}",
                description=f"Fair share of pool {decision.pool} (capacity "
                            f"{decision.capacity}): allocation = runs a team may hold now.")
        last[decision.pool] = (inputs, outputs)
    budgets = {team.name: team.budget_gpu_hours for team in config.teams}
    used = next((d.gpu_hours for d in decisions if d.gpu_hours), {})
    gauges.update_budgets(used, budgets)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.fairshare_controller",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--file", default="infra/teams.yaml", help="the teams file")
    parser.add_argument("--ticks", type=int, default=0, help="stop after N ticks (0: never)")
    parser.add_argument("--period-s", type=float, default=None,
                        help="seconds between ticks (default: the file's fairshare.period_s)")
    parser.add_argument("--dry-run", action="store_true", help="decide and log, change nothing")
    parser.add_argument("--metrics-port", type=int, default=None,
                        help="serve Prometheus gauges on this port")
    parser.add_argument("--fall-back", action="store_true",
                        help="set every team queue back to its guarantee and exit (what "
                             "`make up`'s supervisor runs when the controller dies)")
    args = parser.parse_args(argv)
    if args.period_s is not None and args.period_s <= 0 or args.ticks < 0:
        parser.error("--period-s must be > 0 and --ticks >= 0")
    try:
        load_teams(args.file)
        open_audit_log(Settings()).close()  # its key: a controller that cannot audit stops here
    except (TeamsConfigError, AuditUnavailable) as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.fall_back:
        print("\n".join(asyncio.run(fall_back_to_guarantees(args.file))) or "limits already safe")
        return 0
    asyncio.run(fairshare_controller(args.file, args.ticks, args.period_s, not args.dry_run,
                                     args.metrics_port))
    return 0


async def fall_back_to_guarantees(teams_file: str) -> list[str]:
    """Without a controller deciding, every queue at its team's guarantee (audited)."""
    with open_audit_log(Settings()) as audit_log:
        async with get_client() as client:
            return await fall_back(client, load_teams(teams_file),
                                   ControllerAudit(audit_log, controller_actor(teams_file)))


if __name__ == "__main__":
    sys.exit(main())
