"""Retention policy: which tags of a repository a policy keeps.

Owns: the retention file's grammar (YAML, so JSON too) and the pure decision "given these tags and when
each was last pushed, which stay". Must not: do I/O or delete anything; gc applies the decision, never
to a tag younger than its grace period, and keeps whatever a kept tag (or an index it names) references.

The model is Harbor's: rules are OR-ed, a repository no rule covers keeps every tag, and in a covered
repository a tag stays only when at least one rule covering the repository retains it:

    rules:
      - repositories: ["team/**"]      # globs: `*` within a path segment, `**` across segments
        tags: ["v*", "release-*"]      # optional; globs over tag names (fnmatch); default every tag
        keepLast: 10                   # keep the 10 most recently pushed tags matching `tags`
      - repositories: ["**"]
        keepWithin: 7d                 # keep every tag pushed in the last 7 days (s, m, h, d)

A rule needs `keepLast`, `keepWithin` or both (both: a tag is kept by either). "Pushed" is when the tag
last changed (its link's mtime): moving `latest` makes it recent again.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import re
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_RULE_KEYS = frozenset({"repositories", "tags", "keepLast", "keepWithin"})


class RetentionError(ValueError):
    """The retention file is not valid; the message says where."""


def parse_duration(value: str) -> float:
    """Seconds from `90`, `90s`, `15m`, `168h` or `7d`; ValueError otherwise."""
    m = _DURATION_RE.match(value.strip())
    if m is None:
        raise ValueError(f"invalid duration {value!r}: use e.g. 3600, 90s, 15m, 168h, 7d")
    return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]


@functools.lru_cache(maxsize=256)
def _repository_pattern(glob: str) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(glob):
        if glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif glob[i] == "*":
            out.append("[^/]*")
            i += 1
        else:
            out.append(re.escape(glob[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def repository_matches(glob: str, name: str) -> bool:
    """`*` stays within one path segment, `**` crosses segments (as in access.yaml)."""
    return _repository_pattern(glob).match(name) is not None


@dataclasses.dataclass(frozen=True)
class Rule:
    repositories: tuple[str, ...]
    tags: tuple[str, ...] = ("*",)
    keep_last: int | None = None
    keep_within: float | None = None  # seconds

    def covers(self, repository: str) -> bool:
        return any(repository_matches(g, repository) for g in self.repositories)

    def selects(self, tag: str) -> bool:
        return any(fnmatch.fnmatchcase(tag, g) for g in self.tags)


@dataclasses.dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...] = ()

    def covers(self, repository: str) -> bool:
        return any(rule.covers(repository) for rule in self.rules)

    def kept(self, repository: str, pushed: Mapping[str, float], *, now: float) -> set[str]:
        """The tags of `repository` the policy keeps, from each tag's last push time."""
        rules = [rule for rule in self.rules if rule.covers(repository)]
        if not rules:
            return set(pushed)
        keep: set[str] = set()
        for rule in rules:
            selected = [tag for tag in pushed if rule.selects(tag)]
            if rule.keep_within is not None:
                keep.update(tag for tag in selected if pushed[tag] >= now - rule.keep_within)
            if rule.keep_last is not None:
                # Most recent first; equal times broken by name so the choice is stable across runs.
                newest = sorted(selected, key=lambda tag: (pushed[tag], tag), reverse=True)
                keep.update(newest[: rule.keep_last])
        return keep


def parse(text: str) -> Policy:
    """A policy from the retention file's text (YAML or JSON); RetentionError when it is not valid."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RetentionError(f"not valid YAML or JSON: {exc}") from None
    if doc is None:
        return Policy()
    if not isinstance(doc, dict) or set(doc) - {"rules"}:
        raise RetentionError("the file must be a mapping with one key, `rules`")
    rules = doc.get("rules")
    if rules is None:
        rules = []
    if not isinstance(rules, list):
        raise RetentionError("`rules` must be a list")
    return Policy(tuple(_rule(i, raw) for i, raw in enumerate(rules)))


def _strings(where: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise RetentionError(f"{where} must be a non-empty list of non-empty strings")
    return tuple(value)


def _rule(index: int, raw: Any) -> Rule:
    where = f"rules[{index}]"
    if not isinstance(raw, dict):
        raise RetentionError(f"{where} must be a mapping")
    unknown = set(raw) - _RULE_KEYS
    if unknown:
        raise RetentionError(f"{where}: unknown keys {sorted(map(str, unknown))}")
    if "repositories" not in raw:
        raise RetentionError(f"{where}: `repositories` is required")
    repositories = _strings(f"{where}.repositories", raw["repositories"])
    tags = _strings(f"{where}.tags", raw["tags"]) if "tags" in raw else ("*",)
    keep_last = raw.get("keepLast")
    if keep_last is not None and (
        isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 0
    ):
        raise RetentionError(f"{where}.keepLast must be an integer >= 0")
    keep_within: float | None = None
    if raw.get("keepWithin") is not None:
        try:
            keep_within = parse_duration(str(raw["keepWithin"]))
        except ValueError as exc:
            raise RetentionError(f"{where}.keepWithin: {exc}") from None
    if keep_last is None and keep_within is None:
        raise RetentionError(f"{where}: give keepLast, keepWithin or both")
    return Rule(repositories=repositories, tags=tags, keep_last=keep_last, keep_within=keep_within)


def describe(policy: Policy) -> Iterable[str]:
    """One line per rule, for logs."""
    for rule in policy.rules:
        parts = [f"repositories {','.join(rule.repositories)}", f"tags {','.join(rule.tags)}"]
        if rule.keep_last is not None:
            parts.append(f"keep last {rule.keep_last}")
        if rule.keep_within is not None:
            parts.append(f"keep within {rule.keep_within:g}s")
        yield "; ".join(parts)
