"""Automations as code, installed by provisioning (so by `make up`): zombie-run detection,
and runs that never started.

A flow run's process emits a ``prefect.flow-run.heartbeat`` event every ``HEARTBEAT_S``
(PREFECT_FLOWS_HEARTBEAT_FREQUENCY, which `make up` gives the workers and so their runs).
When a machine, a pod or a worker and its run die together, nobody reports the run's end
and it would stay RUNNING for ever, holding its queue slot and its GPU budget. Prefect's own
answer (its "detect zombie flows" guide) is a proactive automation: a run whose heartbeat is
followed by neither another heartbeat nor a final state within ``ZOMBIE_AFTER_S`` (three
missed heartbeats) is marked Crashed, which frees its slot and ends its GPU metering.

A run that dies before it starts (its worker or node lost while it was Pending) has sent
no heartbeat yet, so the same watch applies to the Pending state: a run Pending for
``Settings.start_timeout_s`` without starting or ending is marked Crashed too. Either
Crashed run is then requeued by the fair-share controller (``infra.crash_requeue``).

Anomalies on utilisation (``flows/anomaly_check.py`` emits ``mlops.anomaly.<kind>`` events on
the run, pool or service): with a webhook configured (MLOPS_ALERT_WEBHOOK_URL), each is sent
through a Prefect notification block (a custom webhook, ``ANOMALY_BLOCK``) once per resource
and kind per ``NOTIFY_EVERY_S``; and a run stalled past its grace period
(``mlops.anomaly.run-stalled.grace-exceeded``) is cancelled, so its slot returns to the pool.

Drift, then retraining: for each team whose drift policy names a retraining deployment
(``mlops.monitoring.policy``), an automation runs the deployment a drift event names
(``flows/drift_check.py`` adds it as a related resource), at most once per model per
``cooldown_s``: a reactive trigger fires on its first event, then waits out its window.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING
from uuid import UUID

from infra.worker_settings import HEARTBEAT_S
from mlops.monitoring.policy import DRIFT_EVENT, RETRAINING_ROLE, DriftPolicy, model_resource
from mlops.monitoring.watch import EVENT_PREFIX, GRACE_EXCEEDED

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient
    from prefect.events.schemas.automations import AutomationCore

ZOMBIE_AFTER_S = 3 * HEARTBEAT_S
ZOMBIE_AUTOMATION = "mlops: crash zombie flow runs"
ZOMBIE_MESSAGE = (f"no heartbeat for {ZOMBIE_AFTER_S} s: the run's process or machine died "
                  "without reporting (marked Crashed by the platform's zombie detection)")
FINAL_EVENTS = ("Completed", "Failed", "Cancelled", "Crashed")
UNSTARTED_AUTOMATION = "mlops: crash flow runs that never started"
UNSTARTED_REASON = "its worker or machine died as it began (marked Crashed by the platform)"
RETRAIN_PREFIX = "mlops: retrain on drift: team "
NOTIFY_AUTOMATION = "mlops: notify on anomalies"
CANCEL_STALLED_AUTOMATION = "mlops: cancel runs stalled past their grace"
ANOMALY_BLOCK = "mlops-anomalies"
NOTIFY_EVERY_S = 3600


def unstarted_message(start_timeout_s: float) -> str:
    return f"Pending for {start_timeout_s:.0f} s without starting: {UNSTARTED_REASON}"


def zombie_automation() -> AutomationCore:
    """The automation that marks a run Crashed once its heartbeats stop."""
    return _crash_when_silent(
        ZOMBIE_AUTOMATION,
        f"Marks a flow run Crashed when its heartbeat (every {HEARTBEAT_S} s) stops for "
        f"{ZOMBIE_AFTER_S} s before it reached a final state.",
        after="heartbeat", expect="heartbeat", within_s=ZOMBIE_AFTER_S, message=ZOMBIE_MESSAGE)


def unstarted_automation(start_timeout_s: float) -> AutomationCore:
    """The automation that marks a run Crashed when it stays Pending without starting."""
    return _crash_when_silent(
        UNSTARTED_AUTOMATION,
        f"Marks a flow run Crashed when it stays Pending for {start_timeout_s:.0f} s "
        "without starting or ending.",
        after="Pending", expect="Running", within_s=start_timeout_s,
        message=unstarted_message(start_timeout_s))


def _crash_when_silent(name: str, description: str, after: str, expect: str,
                       within_s: float, message: str) -> AutomationCore:
    """Mark a flow run Crashed when its event ``after`` is followed by neither ``expect``
    nor a final state within ``within_s`` (a proactive trigger, one per run)."""
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    # Every field given explicitly: Prefect's update sends only the fields that were set.
    return AutomationCore(
        name=name, enabled=True, description=description,
        trigger=EventTrigger(
            after={f"prefect.flow-run.{after}"},
            expect={f"prefect.flow-run.{expect}",
                    *(f"prefect.flow-run.{state}" for state in FINAL_EVENTS)},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=within_s)),
        actions=[ChangeFlowRunState(state=StateType.CRASHED, message=message)])


def retrain_automation(team: str, policy: DriftPolicy) -> AutomationCore:
    """The automation that starts the deployment a drift event of the team's names, once
    per model per cool-down."""
    from prefect.events.actions import RunDeployment
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    return AutomationCore(
        name=f"{RETRAIN_PREFIX}{team}", enabled=True,
        description=f"Runs {policy.retrain} when a model of team {team} drifts (the "
                    f"drift-check flow's {DRIFT_EVENT} event), at most once per model every "
                    f"{policy.cooldown_s:.0f} s.",
        trigger=EventTrigger(
            expect={DRIFT_EVENT},
            match=ResourceSpecification({"prefect.resource.id": model_resource("*"),
                                         "mlops.team": team}),
            match_related=ResourceSpecification({"prefect.resource.role": RETRAINING_ROLE}),
            for_each={"prefect.resource.id"},
            posture=Posture.Reactive,
            threshold=1,
            within=timedelta(seconds=policy.cooldown_s)),
        actions=[RunDeployment(source="inferred")])


def notify_automation(block_document_id: UUID) -> AutomationCore:
    """Each anomaly event through the webhook block, once per resource and kind per hour."""
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    return AutomationCore(
        name=NOTIFY_AUTOMATION, enabled=True,
        description=f"Sends every {EVENT_PREFIX}* event to the {ANOMALY_BLOCK} webhook, at "
                    f"most once per resource and kind every {NOTIFY_EVERY_S} s.",
        trigger=EventTrigger(expect={f"{EVENT_PREFIX}*"}, for_each={"prefect.resource.id"},
                             posture=Posture.Reactive, threshold=1,
                             within=timedelta(seconds=NOTIFY_EVERY_S)),
        actions=[SendNotification(
            block_document_id=block_document_id,
            subject="mlops anomaly: {{ event.event }} on {{ event.resource.name }}",
            body="{{ event.payload.message }} (resource {{ event.resource.id }}, "
                 "detected at {{ event.payload.detected_at }})")])


def cancel_stalled_automation() -> AutomationCore:
    """Cancel a flow run the anomaly check says is stalled past its grace period."""
    from prefect.events.actions import CancelFlowRun
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    return AutomationCore(
        name=CANCEL_STALLED_AUTOMATION, enabled=True,
        description="Cancels a training run that finished no epoch for its grace period past "
                    "its normal gap, so that its slot returns to the pool.",
        trigger=EventTrigger(
            expect={GRACE_EXCEEDED},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"}, posture=Posture.Reactive, threshold=1,
            within=timedelta(0)),
        actions=[CancelFlowRun()])


async def ensure_anomaly_block(client: PrefectClient, webhook_url: str) -> UUID:
    """The notification block anomalies go through: a custom webhook posting JSON."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    block = CustomWebhookNotificationBlock(
        name=ANOMALY_BLOCK, url=webhook_url,
        json_data={"subject": "{{subject}}", "body": "{{body}}"})
    return await block.asave(ANOMALY_BLOCK, overwrite=True, client=client)


async def ensure_automations(client: PrefectClient, start_timeout_s: float,
                             drift: dict[str, DriftPolicy] | None = None,
                             dry_run: bool = False,
                             webhook_url: str | None = None) -> list[str]:
    """Create the platform's automations, or update those that differ, and delete the
    retraining automations of teams that no longer retrain (and the notification's when no
    webhook is configured); one line per change (none when they already hold)."""
    retraining = [retrain_automation(team, policy)
                  for team, policy in sorted((drift or {}).items()) if policy.retrain]
    anomalies = [cancel_stalled_automation()]
    if webhook_url and not dry_run:
        anomalies.append(notify_automation(await ensure_anomaly_block(client, webhook_url)))
    elif webhook_url:
        anomalies.append(notify_automation(UUID(int=0)))
    changes = []
    wanted_names = {automation.name for automation in (*retraining, *anomalies)}
    for found in await client.read_automations():
        if (found.name.startswith(RETRAIN_PREFIX) or found.name == NOTIFY_AUTOMATION) \
                and found.name not in wanted_names:
            if not dry_run:
                await client.delete_automation(found.id)
            changes.append(f"delete automation {found.name!r}")
    for wanted in (zombie_automation(), unstarted_automation(start_timeout_s), *retraining,
                   *anomalies):
        found = await client.read_automations_by_name(wanted.name)
        if not found:
            if not dry_run:
                await client.create_automation(wanted)
            changes.append(f"create automation {wanted.name!r}")
        elif not _same(found[0], wanted):
            if not dry_run:
                await client.update_automation(found[0].id, wanted)
            changes.append(f"update automation {wanted.name!r}")
    return changes


def _same(current: AutomationCore, wanted: AutomationCore) -> bool:
    fields = {"name", "description", "enabled", "trigger", "actions"}
    return (_comparable(current.model_dump(mode="json", include=fields))
            == _comparable(wanted.model_dump(mode="json", include=fields)))


def _comparable(value: object) -> object:
    """A dumped automation without ids, its sets (dumped as lists in any order) sorted."""
    if isinstance(value, dict):
        return {key: _comparable(item) for key, item in value.items() if key != "id"}
    if isinstance(value, list):
        items = [_comparable(item) for item in value]
        return sorted(items) if all(isinstance(item, str) for item in items) else items
    return value
