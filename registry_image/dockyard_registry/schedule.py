"""When the online gc runs: a 5-field cron expression (UTC), a macro, or a fixed interval.

Owns: parsing a schedule and computing its next run after a given time. Must not: sleep, run anything
or read the clock itself (the caller passes the time in).

Accepted, the familiar crontab forms:
- five fields, `minute hour day-of-month month day-of-week` (`17 3 * * *`, `*/15 * * * *`,
  `0 4 * * SUN`), with the usual lists, ranges, steps and names, and Vixie cron's rule that a
  restricted day-of-month and day-of-week match when either does; evaluated in UTC;
- `@hourly`, `@daily` (`@midnight`), `@weekly`, `@monthly`, `@yearly` (`@annually`);
- `@every DURATION` (`@every 6h`, `@every 30s`; at least 1 s): every DURATION after the previous
  start, the robfig/cron extension, for sub-minute schedules (tests) and for "every N hours" without
  anchoring to the clock.

The cron arithmetic is `cronsim`'s: one small pure-Python module without dependencies (the evaluator
behind a widely used cron-monitoring service), typed, and exact where hand-written parsers usually are
not (day-of-month/day-of-week OR, `L`, `#`, month lengths). Its own `@` macros are not supported, so the
macros are expanded here.
"""

from __future__ import annotations

import dataclasses
import datetime

import cronsim

from dockyard_registry import retention

_MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}


class ScheduleError(ValueError):
    """Not a schedule this module understands; the message says why."""


@dataclasses.dataclass(frozen=True)
class Schedule:
    text: str  # as given, for logs and status
    cron: str | None = None  # the 5-field form
    every: float | None = None  # seconds, for `@every`

    def next_after(self, now: float) -> float:
        """The first run strictly after `now` (seconds since the epoch)."""
        if self.every is not None:
            return now + self.every
        assert self.cron is not None
        start = datetime.datetime.fromtimestamp(now, tz=datetime.UTC)
        return next(cronsim.CronSim(self.cron, start)).timestamp()


def parse(text: str) -> Schedule:
    spec = " ".join(text.split())
    if spec.startswith("@every"):
        try:
            seconds = retention.parse_duration(spec.removeprefix("@every").strip())
        except ValueError as exc:
            raise ScheduleError(f"{text!r}: {exc}") from None
        if seconds < 1:
            raise ScheduleError(f"{text!r}: @every needs at least 1s")
        return Schedule(text=spec, every=seconds)
    cron = _MACROS.get(spec.lower(), spec)
    if cron.startswith("@"):
        raise ScheduleError(f"{text!r}: unknown macro; use {', '.join(_MACROS)} or @every DURATION")
    if len(cron.split()) != 5:  # cronsim also takes a 6th (seconds) field: not crontab, so not here
        raise ScheduleError(f"{text!r} is not a 5-field cron expression: {len(cron.split())} fields")
    try:
        cronsim.CronSim(cron, datetime.datetime.now(tz=datetime.UTC))
    except cronsim.CronSimError as exc:
        raise ScheduleError(f"{text!r} is not a 5-field cron expression: {exc}") from None
    return Schedule(text=spec, cron=cron)
