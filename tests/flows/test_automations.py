"""The platform's automations on a real Prefect server: created once, then left alone,
put back when someone changed them, and retraining on drift as the teams file says."""

from __future__ import annotations

import asyncio

from infra.automations import (
    ANOMALY_BLOCK,
    CANCEL_STALLED_AUTOMATION,
    NOTIFY_AUTOMATION,
    RETRAIN_PREFIX,
    UNSTARTED_AUTOMATION,
    ZOMBIE_AFTER_S,
    ZOMBIE_AUTOMATION,
    ensure_automations,
    zombie_automation,
)
from mlops.monitoring.policy import DRIFT_EVENT, DriftPolicy


def test_the_zombie_automation_is_installed_idempotently_and_repaired(
        prefect_server: None) -> None:
    from prefect.client.orchestration import get_client

    async def scenario() -> tuple[list[str], list[str], list[str], list[str], object]:
        async with get_client() as client:
            first = await ensure_automations(client, 300)
            second = await ensure_automations(client, 300)
            found = (await client.read_automations_by_name(ZOMBIE_AUTOMATION))[0]
            changed = zombie_automation().model_copy(update={"enabled": False})
            await client.update_automation(found.id, changed)  # someone turned it off
            repaired = await ensure_automations(client, 300)
            again = await ensure_automations(client, 300)
            longer = await ensure_automations(client, 900)  # MLOPS_START_TIMEOUT_S changed
            return first, second, repaired, again + longer, (
                await client.read_automations_by_name(ZOMBIE_AUTOMATION))

    first, second, repaired, again, found = asyncio.run(scenario())
    assert first == [f"create automation {ZOMBIE_AUTOMATION!r}",
                     f"create automation {UNSTARTED_AUTOMATION!r}",
                     f"create automation {CANCEL_STALLED_AUTOMATION!r}"] and second == []
    assert repaired == [f"update automation {ZOMBIE_AUTOMATION!r}"]
    assert again == [f"update automation {UNSTARTED_AUTOMATION!r}"]
    assert len(found) == 1 and found[0].enabled
    assert found[0].trigger.within.total_seconds() == ZOMBIE_AFTER_S


def test_retraining_automations_follow_the_teams_drift_policies(prefect_server: None) -> None:
    from prefect.client.orchestration import get_client

    retrains = DriftPolicy(retrain="training-pipeline/default", cooldown_s=600)

    async def scenario() -> tuple[list[str], ...]:
        async with get_client() as client:
            first = await ensure_automations(client, 300, {"alpha": retrains,
                                                           "beta": DriftPolicy()})
            again = await ensure_automations(client, 300, {"alpha": retrains})
            longer = await ensure_automations(
                client, 300, {"alpha": retrains.model_copy(update={"cooldown_s": 3600})})
            found = await client.read_automations_by_name(f"{RETRAIN_PREFIX}alpha")
            gone = await ensure_automations(client, 300, {"alpha": DriftPolicy()})
            left = await client.read_automations_by_name(f"{RETRAIN_PREFIX}alpha")
            return first, again, longer, found, gone, left

    first, again, longer, found, gone, left = asyncio.run(scenario())
    name = f"{RETRAIN_PREFIX}alpha"
    assert f"create automation {name!r}" in first and not any("beta" in c for c in first)
    assert again == [] and longer == [f"update automation {name!r}"]
    trigger = found[0].trigger
    assert trigger.within.total_seconds() == 3600 and trigger.expect == {DRIFT_EVENT}
    assert found[0].actions[0].source == "inferred"
    assert gone == [f"delete automation {name!r}"] and left == []


def test_anomaly_notifications_go_through_a_webhook_block_when_one_is_configured(
        prefect_server: None) -> None:
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.client.orchestration import get_client

    async def scenario() -> tuple[list[str], ...]:
        async with get_client() as client:
            first = await ensure_automations(client, 300, webhook_url="http://127.0.0.1:9/a")
            again = await ensure_automations(client, 300, webhook_url="http://127.0.0.1:9/a")
            moved = await ensure_automations(client, 300, webhook_url="http://127.0.0.1:9/b")
            found = await client.read_automations_by_name(NOTIFY_AUTOMATION)
            block = await CustomWebhookNotificationBlock.aload(ANOMALY_BLOCK, client=client)
            gone = await ensure_automations(client, 300)
            cancel = await client.read_automations_by_name(CANCEL_STALLED_AUTOMATION)
            return first, again, moved, found, block, gone, cancel

    first, again, moved, found, block, gone, cancel = asyncio.run(scenario())
    assert f"create automation {NOTIFY_AUTOMATION!r}" in first
    assert again == [] and moved == []  # the same block document, its URL overwritten
    assert block.url == "http://127.0.0.1:9/b"
    (action,) = found[0].actions
    assert action.type == "send-notification" and "{{ event.payload.message }}" in action.body
    assert found[0].trigger.expect == {"mlops.anomaly.*"}
    assert gone == [f"delete automation {NOTIFY_AUTOMATION!r}"]
    assert cancel[0].trigger.expect == {"mlops.anomaly.run-stalled.grace-exceeded"}
    assert cancel[0].actions[0].type == "cancel-flow-run"
