"""Alerts (DESIGN.md §6): the catalog's `alerts: {targets, rules}` section and their delivery.

A run that ended is matched against the rules: `failed` once per outage (the first failed run of an
activation opens an outage in the `alerts` table; later failures find it open and are not sent
again), `recovered` on the first success after it (which closes the outage), `warning` on a
successful run with warnings (optionally only some codes). Opening and closing are single
create/ETag-guarded delete calls, so two processes never both alert for one outage.

Delivery happens after the run record is saved, to every target concurrently, retried with backoff
on network errors, 429 and 5xx, within `BUDGET` seconds in total. It never raises: the outcome of
each message is appended to the record's `alerts` and the record saved again. Webhook URLs live in
app settings and never reach a record, a log or an error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from .alert_messages import BODIES
from .catalog import ID_PATTERN, WARNING_CODES, _Reader, _show
from .errors import FilecastError, Problem
from .stores import map_table_errors

if TYPE_CHECKING:
    from .catalog import Catalog
    from .records import RunRecord
    from .service import Services

log = logging.getLogger(__name__)

EVENTS = ("failed", "warning", "recovered")
TARGET_TYPES = tuple(BODIES)
ATTEMPTS = 4          # per message
BACKOFF = 0.25        # seconds before the 2nd attempt, doubled after each
BUDGET = 6.0          # seconds for all of a run's messages, retries included
CONSOLE_SETTING = "FILECAST_CONSOLE_URL"


@dataclass(frozen=True)
class Target:
    id: str
    type: str          # webhook | slack | teams
    url_setting: str


@dataclass(frozen=True)
class Rule:
    on: tuple[str, ...]
    targets: tuple[str, ...]
    activations: tuple[str, ...] | None = None   # None = every activation
    warnings: tuple[str, ...] | None = None      # None = every warning code

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
    top = _Reader(problems, "alerts", raw)
    top.known(("targets", "rules"))
    targets: dict[str, Target] = {}
    raw_targets = top.raw.get("targets") or {}
    if not isinstance(raw_targets, Mapping):
        top.problem("targets", "must be a mapping of target id to {type, url_setting}")
        raw_targets = {}
    for tid, spec in raw_targets.items():
        r = _Reader(problems, f"alerts.targets.{tid}", spec)
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


def _names(r: _Reader, key: str, allowed: Any, kind: str, *, required: bool = False) -> tuple[str, ...] | None:
    value = r.raw.get(key)
    if value is None:
        if required:
            r.problem(key, f"is required: a list of {kind}s")
        return None
    if not isinstance(value, list) or not value:
        r.problem(key, f"must be a non-empty list of {kind}s, got `{_show(value)}`")
        return None
    for name in value:
        if name not in allowed:
            known = ", ".join(sorted(allowed)) or "(none)"
            r.problem(key, f"unknown {kind} `{_show(name)}`; {kind}s are: {known}")
    return tuple(str(name) for name in value)


def _rule(problems: list[Problem], path: str, raw: Any, targets: Mapping[str, Any],
          activations: Mapping[str, Any]) -> Rule | None:
    if isinstance(raw, Mapping) and "on" not in raw:
        # YAML 1.1 reads a bare `on:` key as true (stored as JSON: "true"): take it as the `on` it was
        raw = {("on" if k is True or k == "true" else k): v for k, v in raw.items()}
    r = _Reader(problems, path, raw)
    r.known(("on", "targets", "activations", "warnings"))
    before = len(problems)
    on = _names(r, "on", EVENTS, "event", required=True)
    rule = Rule(on or (), _names(r, "targets", targets, "target", required=True) or (),
                _names(r, "activations", activations, "activation"), _names(r, "warnings", WARNING_CODES, "warning"))
    if rule.warnings is not None and on is not None and "warning" not in on:
        r.problem("warnings", "filters `warning` events: add `warning` to `on`")
    return rule if len(problems) == before else None


class Outages:
    """The open outage per activation (the run that opened it), in the `alerts` table."""

    def __init__(self, services: Services):
        self.table = services.tables.table("alerts")

    def open(self, activation: str, run_id: str) -> str | None:
        """Open an outage; None when this call opened it, else the run that already had."""
        with map_table_errors("record an outage"):
            try:
                self.table.create_entity({"PartitionKey": "outage", "RowKey": activation, "run_id": run_id})
                return None
            except ResourceExistsError:
                return str(self.table.get_entity("outage", activation)["run_id"])

    def close(self, activation: str) -> str | None:
        """Close the open outage; the run that opened it, or None when there was none (or another closed it)."""
        with map_table_errors("close an outage"):
            try:
                entity = self.table.get_entity("outage", activation)
                self.table.delete_entity("outage", activation, etag=entity.metadata["etag"],
                                         match_condition=MatchConditions.IfNotModified)
            except (ResourceNotFoundError, ResourceModifiedError):
                return None
        return str(entity["run_id"])


def _events(alerts: Alerts, outages: Outages | None, record: RunRecord) -> list[tuple[str, str | None]]:
    """(event, the run that opened the outage) pairs for a run that ended."""
    events: list[tuple[str, str | None]] = []
    if record.status == "failed" and outages is not None:
        events.append(("failed", outages.open(record.activation, record.run_id)))
    elif record.status == "succeeded":
        since = outages.close(record.activation) if outages is not None else None
        if since is not None:
            events.append(("recovered", since))
        if record.warnings:
            events.append(("warning", None))
    return events


async def notify(services: Services, catalog: Catalog, record: RunRecord) -> None:
    """Send the alerts a saved, ended run calls for; record the outcomes on it. Never raises."""
    alerts = catalog.alerts
    if alerts is None or not alerts.rules or record.status not in ("failed", "succeeded"):
        return
    try:
        outages = Outages(services) if alerts.tracks_outages(record.activation) else None
        sends = []
        codes = tuple(w["code"] for w in record.warnings)
        for event, since in _events(alerts, outages, record):
            for target_id in alerts.targets_for(event, record.activation, codes):
                if event == "failed" and since is not None:
                    record.alerts.append({"target": target_id, "event": event, "status": "suppressed", "attempts": 0,
                                          "detail": f"outage already alerted by run `{since}`"})
                    continue
                sends.append(_send(services, alerts.targets[target_id], event, record, since))
        if not sends and not record.alerts:
            return
        record.alerts += await asyncio.gather(*sends)
    except Exception as exc:  # alerting must never fail a run
        detail = exc.message if isinstance(exc, FilecastError) else type(exc).__name__
        log.warning("alerts for run %s could not be prepared: %s", record.run_id, detail)
        record.alerts.append({"target": None, "event": None, "status": "failed", "attempts": 0, "detail": detail})
    try:
        services.runs.save(record)
    except Exception as exc:
        log.warning("could not record the alerts of run %s: %s", record.run_id, type(exc).__name__)


async def _send(services: Services, target: Target, event: str, record: RunRecord, since: str | None) -> dict[str, Any]:
    outcome: dict[str, Any] = {"target": target.id, "event": event, "status": "failed", "attempts": 0}
    try:
        url = services.settings.secret(target.url_setting, purpose=f"webhook URL of alert target `{target.id}`")
    except FilecastError as exc:
        log.warning("alert %s to %s not sent: %s", event, target.id, exc.message)
        return {**outcome, "detail": exc.message}
    body = BODIES[target.type](event, record, console_link(services.settings.get(CONSOLE_SETTING), record), since)
    status, attempts, detail = await post_with_retries(url, body, time.monotonic() + BUDGET)
    log.log(logging.INFO if status == "sent" else logging.WARNING, "alert %s of run %s to %s: %s after %d attempt(s)%s",
            event, record.run_id, target.id, status, attempts, f" ({detail})" if detail else "")
    return {**outcome, "status": status, "attempts": attempts, **({"detail": detail} if detail else {})}


def console_link(base: str | None, record: RunRecord) -> str | None:
    """The console page of the run, from FILECAST_CONSOLE_URL (the key is never added: it is a secret)."""
    from urllib.parse import quote

    return f"{base.rstrip('/')}/runs/{quote(record.run_id, safe='')}" if base else None


async def post_with_retries(url: str, body: dict[str, Any], deadline: float) -> tuple[str, int, str | None]:
    """POST JSON until a 2xx, a final 4xx or the deadline; (sent|failed, attempts, what went wrong).

    The detail names the HTTP status or the error class, never the URL (a webhook URL is a secret)."""
    import aiohttp

    detail: str | None = None
    attempt = 0
    async with aiohttp.ClientSession() as session:
        while attempt < ATTEMPTS:
            remaining = deadline - time.monotonic()
            if remaining <= 0.05:
                return "failed", attempt, f"{detail}; gave up: alert time budget spent" if detail else "no time left"
            attempt += 1
            wait = BACKOFF * 2 ** (attempt - 1)
            try:
                async with session.post(url, json=body, timeout=aiohttp.ClientTimeout(total=remaining)) as response:
                    if response.status < 300:
                        return "sent", attempt, None
                    detail = f"HTTP {response.status}"
                    if response.status != 429 and response.status < 500:
                        return "failed", attempt, detail + " (not retried)"
                    retry_after = response.headers.get("Retry-After", "")
                    wait = max(wait, float(retry_after)) if retry_after.isdigit() else wait
            except (aiohttp.ClientError, TimeoutError) as exc:
                detail = "timed out" if isinstance(exc, TimeoutError) else f"network error ({type(exc).__name__})"
            if attempt < ATTEMPTS:
                await asyncio.sleep(max(0.0, min(wait, deadline - time.monotonic())))
    return "failed", attempt, detail


def notify_poisoned(services: Services, record: RunRecord) -> None:
    """`notify` for the poison-queue trigger (synchronous), with the applied catalog."""
    try:
        catalog = services.catalog()
    except Exception as exc:
        log.warning("no alerts for poisoned run %s: the catalog could not be read (%s)", record.run_id,
                    type(exc).__name__)
        return
    asyncio.run(notify(services, catalog, record))
