"""Schedule math, pure: the cron trigger in UTC and how stale a last success may be before unready."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from apscheduler.triggers.cron import CronTrigger

#: How many upcoming gaps are looked at: enough to see a weekend in a weekday-only schedule.
_LOOKAHEAD = 16


def cron_trigger(expression: str) -> CronTrigger:
    """The 5-field cron ``expression`` as an APScheduler trigger in UTC."""
    return CronTrigger.from_crontab(expression, timezone=UTC)


def longest_gap(trigger: CronTrigger, now: datetime) -> timedelta:
    """The longest gap between consecutive fire times among the next few after ``now``."""
    fire = trigger.get_next_fire_time(None, now)
    longest = timedelta(0)
    for _ in range(_LOOKAHEAD):
        if fire is None:
            break
        following = trigger.get_next_fire_time(fire, fire + timedelta(microseconds=1))
        if following is None:
            break
        longest = max(longest, following - fire)
        fire = following
    return longest


def success_too_old(last_success: datetime | None, trigger: CronTrigger, now: datetime) -> str | None:
    """Why the daemon is not ready given its last success, or None when it is fresh enough.

    Fresh means younger than twice the schedule's longest gap: one missed run is tolerated.
    """
    if last_success is None:
        return "no successful sync recorded yet"
    return stale_age(now - last_success, trigger, now)


def stale_age(age: timedelta, trigger: CronTrigger, now: datetime) -> str | None:
    """Why a last success ``age`` old is too old to be ready (None: fresh enough); see success_too_old."""
    allowed = 2 * longest_gap(trigger, now)
    if age > allowed:
        return (
            f"last successful sync finished {int(age.total_seconds())} s ago, "
            f"more than twice the schedule interval ({int(allowed.total_seconds())} s)"
        )
    return None
