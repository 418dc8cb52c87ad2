"""Alerts (DESIGN.md §6): delivery of the catalog's `alerts` section (core/catalog/alerts.py).

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
from typing import TYPE_CHECKING, Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from ..catalog.alerts import Alerts, Target
from ..errors import FilecastError
from .alert_messages import BODIES
from .stores import map_table_errors

if TYPE_CHECKING:
    from ..catalog.model import Catalog
    from ..run.records import RunRecord
    from .service import Services

log = logging.getLogger(__name__)

ATTEMPTS = 4  # per message
BACKOFF = 0.25  # seconds before the 2nd attempt, doubled after each
BUDGET = 6.0  # seconds for all of a run's messages, retries included
CONSOLE_SETTING = "FILECAST_CONSOLE_URL"


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
                self.table.delete_entity(
                    "outage", activation, etag=entity.metadata["etag"], match_condition=MatchConditions.IfNotModified
                )
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
                    record.alerts.append(
                        {
                            "target": target_id,
                            "event": event,
                            "status": "suppressed",
                            "attempts": 0,
                            "detail": f"outage already alerted by run `{since}`",
                        }
                    )
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
    log.log(
        logging.INFO if status == "sent" else logging.WARNING,
        "alert %s of run %s to %s: %s after %d attempt(s)%s",
        event,
        record.run_id,
        target.id,
        status,
        attempts,
        f" ({detail})" if detail else "",
    )
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
        log.warning(
            "no alerts for poisoned run %s: the catalog could not be read (%s)", record.run_id, type(exc).__name__
        )
        return
    asyncio.run(notify(services, catalog, record))
