"""GPU-hour metering: periods in UTC, overlap with the period only, running runs to now."""

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlops.fairshare.budget import RunSpan, gpu_hours_by_team, over_budget, period_start


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_day_starts_at_utc_midnight_even_for_another_zone():
    now = datetime(2024, 3, 5, 1, 30, tzinfo=timezone(timedelta(hours=3)))  # 4 Mar 22:30 UTC
    assert period_start(now, "day") == _utc(2024, 3, 4)


def test_week_starts_on_monday():
    assert period_start(_utc(2024, 3, 10, 23, 59), "week") == _utc(2024, 3, 4)  # a Sunday
    assert period_start(_utc(2024, 3, 4, 0, 0), "week") == _utc(2024, 3, 4)  # the Monday itself


def test_week_crosses_the_year():
    assert period_start(_utc(2025, 1, 2, 12), "week") == _utc(2024, 12, 30)


def test_month_starts_on_the_first_and_december_rolls_into_january():
    assert period_start(_utc(2024, 12, 31, 23, 59, 59), "month") == _utc(2024, 12, 1)
    assert period_start(_utc(2025, 1, 1, 0, 0, 1), "month") == _utc(2025, 1, 1)


def test_naive_now_is_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        period_start(datetime(2024, 3, 5, 12), "day")


def test_unknown_period_is_refused():
    with pytest.raises(ValueError, match="period"):
        period_start(_utc(2024, 3, 5), "year")  # type: ignore[arg-type]


def test_run_crossing_the_period_start_counts_only_the_part_inside():
    since, now = _utc(2024, 3, 4), _utc(2024, 3, 4, 12)
    spans = [RunSpan("vision", _utc(2024, 3, 3, 22), _utc(2024, 3, 4, 3), gpus=2)]
    assert gpu_hours_by_team(spans, since, now) == {"vision": pytest.approx(6.0)}


def test_running_run_counts_up_to_now():
    since, now = _utc(2024, 3, 4), _utc(2024, 3, 4, 10, 30)
    spans = [RunSpan("nlp", _utc(2024, 3, 4, 9), None), RunSpan("nlp", _utc(2024, 3, 4, 1),
                                                                 _utc(2024, 3, 4, 2))]
    assert gpu_hours_by_team(spans, since, now) == {"nlp": pytest.approx(2.5)}


def test_run_outside_the_window_counts_zero():
    since, now = _utc(2024, 3, 4), _utc(2024, 3, 5)
    spans = [RunSpan("nlp", _utc(2024, 3, 1), _utc(2024, 3, 2)),
             RunSpan("vision", _utc(2024, 3, 6), None)]
    assert gpu_hours_by_team(spans, since, now) == {"nlp": 0.0, "vision": 0.0}


def test_naive_span_is_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        gpu_hours_by_team([RunSpan("nlp", datetime(2024, 3, 4), None)],
                          _utc(2024, 3, 4), _utc(2024, 3, 5))


def test_over_budget_at_or_above_budget_and_never_without_one():
    used = {"vision": 10.0, "nlp": 9.5, "default": 1e6}
    budgets = {"vision": 10.0, "nlp": 10.0, "default": None, "idle": 0.0}
    assert over_budget(used, budgets) == {"vision", "idle"}


HOURS = st.integers(min_value=0, max_value=24 * 60)  # minutes from a fixed origin
ORIGIN = _utc(2024, 1, 1)


@st.composite
def spans_and_cuts(draw: st.DrawFn) -> tuple[list[RunSpan], datetime, datetime, datetime]:
    def at(minutes: int) -> datetime:
        return ORIGIN + timedelta(minutes=minutes)

    spans = []
    for _ in range(draw(st.integers(0, 8))):
        start = draw(HOURS)
        end = draw(st.none() | st.integers(start, 24 * 60))
        spans.append(RunSpan(draw(st.sampled_from(["a", "b", "c"])), at(start),
                             None if end is None else at(end), draw(st.integers(1, 8))))
    a, b, c = sorted(draw(st.lists(HOURS, min_size=3, max_size=3)))
    return spans, at(a), at(b), at(c)


@settings(max_examples=200, deadline=None)
@given(spans_and_cuts())
def test_hours_are_additive_over_adjacent_windows(case):
    spans, a, b, c = case
    first, second = gpu_hours_by_team(spans, a, b), gpu_hours_by_team(spans, b, c)
    whole = gpu_hours_by_team(spans, a, c)
    for team in whole:
        total = first.get(team, 0.0) + second.get(team, 0.0)
        assert total == pytest.approx(whole[team]), (
            f"team {team}: [a,b] + [b,c] = {total} hours but [a,c] = {whole[team]}")
