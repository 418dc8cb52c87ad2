"""The catalog's `alerts: {targets, rules}` section (DESIGN.md §6): targets, rules and their checks.

Delivery (which runs alert, to whom, with what retries) is core/control/alerts.py's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import Problem
from .model import ID_PATTERN, WARNING_CODES
from .reader import Reader, show

EVENTS = ("failed", "warning", "recovered")
TARGET_TYPES = ("webhook", "slack", "teams")  # the bodies of core/control/alert_messages.py


@dataclass(frozen=True)
class Target:
    id: str
    type: str  # webhook | slack | teams
    url_setting: str


@dataclass(frozen=True)
class Rule:
    on: tuple[str, ...]
    targets: tuple[str, ...]
    activations: tuple[str, ...] | None = None  # None = every activation
    warnings: tuple[str, ...] | None = None  # None = every warning code

    def covers(self, activation: str) -> bool:
        return self.activations is None or activation in self.activations


@dataclass(frozen=True)
class Alerts:
    targets: Mapping[str, Target]
    rules: tuple[Rule, ...]

    def targets_for(self, event: str, activation: str, codes: tuple[str, ...] = ()) -> list[str]:
        """The targets of every rule matching the event, once each, in rule order."""
        found: list[str] = []
        for rule in self.rules:
            if event not in rule.on or not rule.covers(activation):
                continue
            if event == "warning" and rule.warnings is not None and not set(codes) & set(rule.warnings):
                continue
            found += [t for t in rule.targets if t not in found]
        return found

    def tracks_outages(self, activation: str) -> bool:
        return any(rule.covers(activation) and {"failed", "recovered"} & set(rule.on) for rule in self.rules)


def parse_alerts(problems: list[Problem], raw: Any, activations: Mapping[str, Any]) -> Alerts | None:
    """Validate the `alerts` section, adding a problem per mistake; None when there is none."""
    if raw is None:
        return None
    top = Reader(problems, "alerts", raw)
    top.known(("targets", "rules"))
    targets: dict[str, Target] = {}
    raw_targets = top.raw.get("targets") or {}
    if not isinstance(raw_targets, Mapping):
        top.problem("targets", "must be a mapping of target id to {type, url_setting}")
        raw_targets = {}
    for tid, spec in raw_targets.items():
        r = Reader(problems, f"alerts.targets.{tid}", spec)
        if not isinstance(tid, str) or not ID_PATTERN.match(tid):
            r.problem("", "ids are 1 to 64 of a-z, 0-9, `_` and `-`")
            continue
        r.known(("type", "url_setting"))
        kind = r.choice("type", TARGET_TYPES, "") if "type" in r.raw else None
        if kind is None:
            r.problem("type", f"is required: one of {', '.join(TARGET_TYPES)}")
        setting = r.setting("url_setting", required=True)
        if kind and setting:
            targets[tid] = Target(tid, kind, setting)
    raw_rules = top.raw.get("rules") or []
    if not isinstance(raw_rules, list):
        top.problem("rules", "must be a list of {on, targets[, activations][, warnings]}")
        raw_rules = []
    rules = [_rule(problems, f"alerts.rules[{i}]", spec, raw_targets, activations) for i, spec in enumerate(raw_rules)]
    return Alerts(targets, tuple(rule for rule in rules if rule is not None))


def _names(r: Reader, key: str, allowed: Any, kind: str, *, required: bool = False) -> tuple[str, ...] | None:
    value = r.raw.get(key)
    if value is None:
        if required:
            r.problem(key, f"is required: a list of {kind}s")
        return None
    if not isinstance(value, list) or not value:
        r.problem(key, f"must be a non-empty list of {kind}s, got `{show(value)}`")
        return None
    for name in value:
        if name not in allowed:
            known = ", ".join(sorted(allowed)) or "(none)"
            r.problem(key, f"unknown {kind} `{show(name)}`; {kind}s are: {known}")
    return tuple(str(name) for name in value)


def _rule(
    problems: list[Problem], path: str, raw: Any, targets: Mapping[str, Any], activations: Mapping[str, Any]
) -> Rule | None:
    if isinstance(raw, Mapping) and "on" not in raw:
        # YAML 1.1 reads a bare `on:` key as true (stored as JSON: "true"): take it as the `on` it was
        raw = {("on" if k is True or k == "true" else k): v for k, v in raw.items()}
    r = Reader(problems, path, raw)
    r.known(("on", "targets", "activations", "warnings"))
    before = len(problems)
    on = _names(r, "on", EVENTS, "event", required=True)
    rule = Rule(
        on or (),
        _names(r, "targets", targets, "target", required=True) or (),
        _names(r, "activations", activations, "activation"),
        _names(r, "warnings", WARNING_CODES, "warning"),
    )
    if rule.warnings is not None and on is not None and "warning" not in on:
        r.problem("warnings", "filters `warning` events: add `warning` to `on`")
    return rule if len(problems) == before else None
