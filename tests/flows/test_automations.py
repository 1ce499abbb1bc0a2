"""The platform's automations on a real Prefect server: created once, then left alone,
and put back when someone changed them."""

from __future__ import annotations

import asyncio

from infra.automations import (
    UNSTARTED_AUTOMATION,
    ZOMBIE_AFTER_S,
    ZOMBIE_AUTOMATION,
    ensure_automations,
    zombie_automation,
)


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
                     f"create automation {UNSTARTED_AUTOMATION!r}"] and second == []
    assert repaired == [f"update automation {ZOMBIE_AUTOMATION!r}"]
    assert again == [f"update automation {UNSTARTED_AUTOMATION!r}"]
    assert len(found) == 1 and found[0].enabled
    assert found[0].trigger.within.total_seconds() == ZOMBIE_AFTER_S
