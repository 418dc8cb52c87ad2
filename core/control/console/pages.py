"""The run console (DESIGN.md §6): server-side HTML pages over the catalog and the run history.

Three pages: the activations (`console`), one activation's runs (`console/activations/{id}`) and one
run (`console/runs/{run_id}`). No build step and no external asset: CSS, script and charts (SVG) are
inline, so the console works behind a firewall. Every value from the catalog or a record goes
through `esc`; the Content-Security-Policy only runs this response's own nonce-tagged script, so
even an unescaped `<script>` could not run. The function key (`?code=`) is carried along by links
and by the buttons' API calls, and the pages send no referrer.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from croniter import croniter

from ...error_codes import ANSWERS
from ...errors import FilecastError
from .assets import SCRIPT, STYLE
from .chart import chart
from .text import duration, esc, seconds, when

if TYPE_CHECKING:
    from ..service import Services

Page = tuple[int, str, dict[str, str]]
HISTORY = 50  # runs listed on an activation's page
CHART_RUNS = 30  # runs drawn in its chart


def next_due(schedule: str | None, now: datetime) -> datetime | None:
    """The next occurrence of a schedule after `now` (UTC), as the scheduler will see it."""
    if not schedule:
        return None
    moment: datetime = croniter(schedule, now).get_next(datetime)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class _View:
    """Links relative to the page (so a route prefix is kept) and carrying the function key."""

    def __init__(self, depth: int, query: dict[str, str]):
        self.root = "../" * depth  # from the page to /api/
        self.key = f"?code={quote(query['code'], safe='')}" if query.get("code") else ""

    def link(self, path: str, text: Any) -> str:
        return f'<a href="{esc(self.root + path + self.key)}">{esc(text)}</a>'

    def activation(self, activation_id: str) -> str:
        return self.link(f"console/activations/{quote(activation_id, safe='')}", activation_id)

    def run(self, run_id: str) -> str:
        return self.link(f"console/runs/{quote(run_id, safe='')}", run_id)


def status(value: str) -> str:
    return f'<span class="status s-{esc(value)}">{esc(value)}</span>'


def table(caption: str, head: Iterable[str], rows: Iterable[Iterable[str]], empty: str) -> str:
    """A table of already-escaped cells."""
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    if not body:
        return f'<p class="empty">{esc(empty)}</p>'
    heads = "".join(f'<th scope="col">{esc(h)}</th>' for h in head)
    caption = f"<caption>{esc(caption)}</caption>" if caption else ""
    return f"<table>{caption}<thead><tr>{heads}</tr></thead><tbody>{body}</tbody></table>"


def facts(pairs: Iterable[tuple[str, str]]) -> str:
    return "<dl>" + "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in pairs) + "</dl>"


def layout(title: str, crumbs: str, body: str, view: _View) -> Page:
    nonce = secrets.token_urlsafe(16)
    page = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="referrer" content="no-referrer"><title>{esc(title)} · Filecast</title>'
        f'<style nonce="{nonce}">{STYLE}</style></head>'
        f'<body data-api-root="{esc(view.root)}"><header><nav aria-label="Breadcrumb">{crumbs}</nav></header>'
        f'<main><h1>{esc(title)}</h1>{body}</main><script nonce="{nonce}">{SCRIPT}</script></body></html>'
    )
    headers = {
        "Content-Security-Policy": f"default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
    }
    return 200, page, headers


def render(
    services: Services, view: str, params: dict[str, str], query: dict[str, str], now: datetime | None = None
) -> Page:
    """One console page as (HTTP status, HTML, headers); a missing catalog, activation or run is a 404 page."""
    now = now or datetime.now(UTC)
    depth = 0 if view == "index" else 2
    try:
        if view == "index":
            return _index(services, _View(depth, query), now)
        if view == "activation":
            return _activation(services, params["id"], _View(depth, query), now)
        return _run(services, params["run_id"], _View(depth, query))
    except FilecastError as exc:
        code = ANSWERS[exc.code].http_status(exc.transient)  # the API's table: 404 for a missing name
        message = f'<p class="error">{esc(exc.message)}</p>'
        _, page, headers = layout("Not found" if code == 404 else "Error", "", message, _View(depth, query))
        return code, page, headers


def _index(services: Services, view: _View, now: datetime) -> Page:
    catalog = services.catalog()
    rows = []
    for activation_id, activation in sorted(catalog.activations.items()):
        history = services.runs.history(activation_id, 1)
        last = history[0] if history else None
        reads = f"segment {activation.segment}" if activation.segment else f"model {activation.model}"
        rows.append(
            [
                view.activation(activation_id),
                esc(reads),
                esc(activation.destination),
                esc(activation.format),
                f"<code>{esc(activation.schedule)}</code>" if activation.schedule else "manual",
                esc(when(next_due(activation.schedule, now))),
                view.run(last.run_id) + f"<br><small>{esc(when(last.logical_time))}</small>" if last else "never run",
                status(last.status) if last else "-",
                esc(f"{last.rows.exported:,}") if last else "-",
                esc(len(last.files)) if last else "-",
            ]
        )
    body = table(
        "Activations",
        [
            "Activation",
            "Reads",
            "Destination",
            "Format",
            "Schedule",
            "Next due",
            "Last run",
            "Status",
            "Rows exported",
            "Files",
        ],
        rows,
        "The catalog has no activations.",
    )
    return layout("Activations", '<span aria-current="page">Filecast</span>', body, view)


def _activation(services: Services, activation_id: str, view: _View, now: datetime) -> Page:
    activation = services.catalog().activation(activation_id)
    history = services.runs.history(activation.id, HISTORY)
    about = facts(
        [
            ("Reads", esc(f"segment {activation.segment}" if activation.segment else f"model {activation.model}")),
            ("Destination", esc(activation.destination)),
            ("Folder", esc(activation.folder or "(root)")),
            ("File name", f"<code>{esc(activation.file_name)}</code>"),
            ("Format", esc(activation.format)),
            ("Mode", esc(f"{activation.run_type} + {activation.sync_mode}")),
            ("Schedule", f"<code>{esc(activation.schedule)}</code>" if activation.schedule else "manual only"),
            ("Next due", esc(when(next_due(activation.schedule, now)))),
        ]
    )
    buttons = (
        f'<div class="actions"><button type="button" data-action="run" data-activation="{esc(activation.id)}">'
        f'Run now</button><button type="button" data-action="preview" data-activation="{esc(activation.id)}">'
        'Preview</button></div><output id="result" aria-live="polite"></output>'
    )
    rows = [
        [
            view.run(r.run_id),
            status(r.status),
            esc(r.trigger),
            esc(when(r.logical_time)),
            esc(duration(seconds(r))),
            esc(f"{r.rows.read:,}"),
            esc(f"{r.rows.exported:,}"),
            esc(len(r.files)),
            esc(len(r.warnings)),
            f'<span class="error">{esc(r.error["message"])}</span>' if r.error else "",
        ]
        for r in history
    ]
    runs = table(
        f"Last {len(history)} runs, newest first",
        [
            "Run",
            "Status",
            "Trigger",
            "Logical time",
            "Duration",
            "Rows read",
            "Rows exported",
            "Files",
            "Warnings",
            "Error",
        ],
        rows,
        "No runs yet.",
    )
    body = about + buttons + chart(list(reversed(history[:CHART_RUNS]))) + runs
    crumbs = view.link("console", "Filecast") + f' › <span aria-current="page">{esc(activation.id)}</span>'
    return layout(activation.id, crumbs, body, view)


def _run(services: Services, run_id: str, view: _View) -> Page:
    record = services.runs.get(run_id)
    rows = record.rows
    about = facts(
        [
            ("Activation", view.activation(record.activation)),
            ("Status", status(record.status)),
            ("Trigger", esc(record.trigger)),
            ("Logical time", esc(when(record.logical_time))),
            ("Started", esc(when(record.started_at))),
            ("Finished", esc(when(record.finished_at))),
            ("Run type", "full" if record.full else "delta"),
            (
                "Rows",
                esc(
                    f"{rows.read:,} read, {rows.added:,} added, {rows.updated:,} updated, {rows.removed:,} "
                    f"removed, {rows.unchanged:,} unchanged, {rows.exported:,} exported"
                ),
            ),
        ]
    )
    error = (
        (
            "<h2>Error</h2>" + f'<p class="error"><code>{esc(record.error.get("code"))}</code> '
            f"{esc(record.error.get('message'))}</p>"
        )
        if record.error
        else ""
    )
    files = table(
        "",
        ["Path", "Rows", "Bytes", "MD5"],
        (
            [
                f"<code>{esc(f.get('path'))}</code>",
                esc(f"{f.get('rows', 0):,}"),
                esc(f"{f.get('bytes', 0):,}"),
                f"<code>{esc(f.get('md5', ''))}</code>",
            ]
            for f in record.files
        ),
        "No files were published.",
    )
    warnings = table(
        "",
        ["Code", "Message"],
        ([f"<code>{esc(w.get('code'))}</code>", esc(w.get("message"))] for w in record.warnings),
        "No warnings.",
    )
    alerts = table(
        "",
        ["Target", "Event", "Status", "Attempts", "Detail"],
        (
            [
                esc(a.get("target")),
                esc(a.get("event")),
                status(str(a.get("status"))),
                esc(a.get("attempts")),
                esc(a.get("detail", "")),
            ]
            for a in record.alerts
        ),
        "No alerts for this run.",
    )
    body = about + error + "<h2>Files</h2>" + files + "<h2>Warnings</h2>" + warnings + "<h2>Alerts</h2>" + alerts
    crumbs = (
        view.link("console", "Filecast")
        + " › "
        + view.activation(record.activation)
        + f' › <span aria-current="page">{esc(record.run_id)}</span>'
    )
    return layout(f"Run {record.run_id}", crumbs, body, view)
