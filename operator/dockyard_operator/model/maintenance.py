"""Maintenance of a registry's storage: when the online garbage collection runs and what it deletes.

The registry runs gc itself (`dockyard-registry serve --gc-schedule`), online: pushes and pulls go on while it
runs. These fields become its `--gc-*` arguments and a retention file in the `<registry>-maintenance`
ConfigMap; the file's grammar is the registry's (`dockyard_registry.retention`), and the schedule is checked
with the registry's own parser (`dockyard_registry.schedule`), so a spec the model accepts is one the
registry starts with.
Must not: perform I/O, or import kopf/lightkube.
"""

from __future__ import annotations

from typing import Annotated

import pydantic

from dockyard_operator.model.types import REPOSITORY_GLOB_PATTERN, ApiModel
from dockyard_registry import schedule as registry_schedule

AGE_PATTERN = r"^[0-9]+(s|m|h|d)$"
"""An age as the registry's gc reads it: a whole number of seconds, minutes, hours or days (`36h`, `30d`)."""
SCHEDULE_PATTERN = r"^(@[a-z]+|@every [0-9]+(\.[0-9]+)?[smhd]?|[^ ]+( +[^ ]+){4})$"
"""The shape of a schedule (five cron fields, a macro, or `@every DURATION`); the model checks the rest."""
TAG_GLOB_PATTERN = r"^[A-Za-z0-9_.*?\[\]!-]{1,128}$"
DEFAULT_SCHEDULE = "17 3 * * *"

Age = Annotated[str, pydantic.StringConstraints(pattern=AGE_PATTERN)]
RepositoryGlob = Annotated[str, pydantic.StringConstraints(pattern=REPOSITORY_GLOB_PATTERN, max_length=255)]
TagGlob = Annotated[str, pydantic.StringConstraints(pattern=TAG_GLOB_PATTERN)]


class RetentionRule(ApiModel):
    """Which tags to keep in the repositories a rule covers; a tag stays when any covering rule keeps it."""

    model_config = pydantic.ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.keepLast) || has(self.keepWithin)",
                    "message": "give keepLast, keepWithin or both",
                }
            ]
        }
    )

    repositories: Annotated[list[RepositoryGlob], pydantic.Field(min_length=1, max_length=64)]
    """Repository globs the rule covers: `*` within one path segment, `**` across segments (`team/**`).
    A repository no rule covers keeps every tag."""
    tags: Annotated[list[TagGlob], pydantic.Field(min_length=1, max_length=64)] | None = None
    """Tag globs (`v*`, `release-*`) the rule counts and keeps; empty means every tag."""
    keep_last: Annotated[int, pydantic.Field(ge=0, le=100000)] | None = None
    """Keep this many of the most recently pushed matching tags."""
    keep_within: Age | None = None
    """Keep every matching tag pushed within this age (`30d`, `72h`)."""

    @pydantic.model_validator(mode="after")
    def _keeps_something(self) -> RetentionRule:
        if self.keep_last is None and self.keep_within is None:
            raise ValueError("give keepLast, keepWithin or both")
        return self


class Maintenance(ApiModel):
    """Online garbage collection inside the registry: it runs while pushes and pulls go on.

    A run deletes tags the retention rules retire, untagged manifests when asked, and then every blob no
    manifest references; nothing younger than the grace period and nothing a kept tag or index references
    goes. status.maintenance shows the last run; an Event GarbageCollected reports each new one.
    """

    schedule: Annotated[str, pydantic.StringConstraints(pattern=SCHEDULE_PATTERN, max_length=128)] = (
        DEFAULT_SCHEDULE
    )
    """When gc runs, in UTC: five cron fields (`17 3 * * *`, `0 */6 * * *`), a macro (`@daily`, `@weekly`)
    or `@every DURATION` (`@every 12h`)."""
    suspend: bool = False
    """Do not run gc at all (status keeps the last run)."""
    grace_period: Age = "1h"
    """Keep anything younger than this (a push in progress is never collected)."""
    delete_untagged: bool = False
    """Also delete manifests no tag reaches, directly, through an index or as a referrer of a kept one."""
    dry_run: bool = False
    """Runs only report what they would delete (in status and the Event); nothing is deleted."""
    retention: Annotated[list[RetentionRule], pydantic.Field(max_length=100)] | None = None
    """Tag retention rules; changes reach the running registry without a restart (before its next run)."""

    @pydantic.field_validator("schedule")
    @classmethod
    def _valid_schedule(cls, value: str) -> str:
        try:
            registry_schedule.parse(value)
        except registry_schedule.ScheduleError as exc:
            raise ValueError(f"invalid schedule: {exc}") from None
        return value
