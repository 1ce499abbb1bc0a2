"""GPU-hour metering for per-team budgets: pure arithmetic over run spans.

No Prefect and no clock: ``now`` is passed in, so the controller, the simulator and the
tests meter the same way. A team whose GPU hours in the current period reach its budget is
over budget, and the fair-share policy (``mlops/fairshare/policy.py``) then gives it no guarantee.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

Period = Literal["day", "week", "month"]


@dataclass(frozen=True)
class RunSpan:
    """One run's hold on GPUs: from its start to its end, or still running (end None)."""

    team: str
    start: datetime
    end: datetime | None
    gpus: int = 1


def _require_aware(name: str, moment: datetime) -> None:
    """Refuse naive datetimes: comparing them with UTC ones would be off by the local zone."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {moment.isoformat()}")


def period_start(now: datetime, period: Period) -> datetime:
    """Start of the period containing ``now``, in UTC: midnight, Monday midnight or the 1st."""
    _require_aware("now", now)
    midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return midnight
    if period == "week":
        return midnight - timedelta(days=midnight.weekday())
    if period == "month":
        return midnight.replace(day=1)
    raise ValueError(f"period must be day, week or month, got {period!r}")


def _overlap_hours(span: RunSpan, since: datetime, now: datetime) -> float:
    """Hours of the span inside [since, now]; a run still running counts up to ``now``."""
    start = max(span.start, since)
    end = min(span.end if span.end is not None else now, now)
    return max(0.0, (end - start).total_seconds() / 3600)


def gpu_hours_by_team(spans: Iterable[RunSpan], since: datetime,
                      now: datetime) -> dict[str, float]:
    """GPU hours each team used in [since, now]: GPUs times hours of overlap, summed."""
    _require_aware("since", since)
    _require_aware("now", now)
    used: dict[str, float] = {}
    for span in spans:
        _require_aware(f"start of a {span.team} run", span.start)
        if span.end is not None:
            _require_aware(f"end of a {span.team} run", span.end)
        used[span.team] = used.get(span.team, 0.0) + span.gpus * _overlap_hours(span, since, now)
    return used


def over_budget(used: Mapping[str, float], budgets: Mapping[str, float | None]) -> set[str]:
    """Teams with a budget (not None) whose use has reached it."""
    return {team for team, budget in budgets.items()
            if budget is not None and used.get(team, 0.0) >= budget}
