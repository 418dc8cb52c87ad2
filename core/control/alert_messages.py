"""The bodies of alert messages: generic webhook JSON, Slack Block Kit, a Teams Adaptive Card.

Each names the activation, what happened, the counts and the console page of the run. Only what
the run record holds goes in (its error and warning messages are written never to carry a secret).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..error_codes import ErrorCode
from ..run.records import iso

if TYPE_CHECKING:
    from ..run.records import RunRecord

Body = Callable[[str, "RunRecord", "str | None", "str | None"], dict[str, Any]]
MAX_TEXT = 1500  # characters of an error or warning text (Slack sections take 3000)


def title(event: str, record: RunRecord) -> str:
    what = {"failed": "failed", "warning": "succeeded with warnings", "recovered": "recovered"}[event]
    return f"Filecast: {record.activation} {what}"


def _clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def details(event: str, record: RunRecord, since: str | None) -> list[str]:
    """What happened, one line per fact, plain text."""
    if event == "failed":
        error = record.error or {"code": ErrorCode.ERROR.value, "message": "no error was recorded"}
        return [_clip(f"{error['code']}: {error['message']}")]
    lines = [f"run {record.run_id} succeeded after the failure of run {since}"] if event == "recovered" else []
    if event == "warning":
        lines += [_clip(f"{w['code']}: {w['message']}") for w in record.warnings]
    return lines


def facts(record: RunRecord) -> list[tuple[str, str]]:
    rows = record.rows
    duration = (
        (record.finished_at - record.started_at).total_seconds() if record.finished_at and record.started_at else None
    )
    return [
        ("Run", record.run_id),
        ("Status", record.status),
        ("Trigger", record.trigger),
        ("Logical time", iso(record.logical_time) or ""),
        ("Rows read", f"{rows.read:,}"),
        ("Rows exported", f"{rows.exported:,}"),
        ("Added / updated / removed", f"{rows.added:,} / {rows.updated:,} / {rows.removed:,}"),
        ("Files", str(len(record.files))),
        ("Duration", f"{duration:.1f} s" if duration is not None else "-"),
    ]


def webhook(event: str, record: RunRecord, link: str | None, since: str | None) -> dict[str, Any]:
    """Generic JSON: the fields a script or an incident tool keys on."""
    return {
        "source": "filecast",
        "event": event,
        "activation": record.activation,
        "run_id": record.run_id,
        "status": record.status,
        "trigger": record.trigger,
        "logical_time": iso(record.logical_time),
        "finished_at": iso(record.finished_at),
        "rows": record.rows.as_dict(),
        "files": len(record.files),
        "error": record.error,
        "warnings": list(record.warnings),
        "outage_since_run": since,
        "console_url": link,
        "text": f"{title(event, record)}: {'; '.join(details(event, record, since))}",
    }


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack(event: str, record: RunRecord, link: str | None, since: str | None) -> dict[str, Any]:
    """An incoming-webhook message: a header, what happened, the counts as fields, a button to the run."""
    head = title(event, record)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": head[:150]}},
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": "\n".join(_slack_escape(line) for line in details(event, record, since)) or "-",
            },
        },
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": f"*{name}*\n{_slack_escape(value)}"} for name, value in facts(record)[:10]
            ],
        },
    ]
    if link:
        blocks.append(
            {
                "type": "actions",
                "elements": [{"type": "button", "text": {"type": "plain_text", "text": "Open the run"}, "url": link}],
            }
        )
    return {"text": head, "blocks": blocks}


def teams(event: str, record: RunRecord, link: str | None, since: str | None) -> dict[str, Any]:
    """A Teams workflow-webhook message: one Adaptive Card with the facts and a link to the run."""
    color = {"failed": "Attention", "warning": "Warning", "recovered": "Good"}[event]
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {
                "type": "TextBlock",
                "size": "Medium",
                "weight": "Bolder",
                "color": color,
                "wrap": True,
                "text": title(event, record),
            },
            *({"type": "TextBlock", "wrap": True, "text": line} for line in details(event, record, since)),
            {"type": "FactSet", "facts": [{"title": name, "value": value} for name, value in facts(record)]},
        ],
    }
    if link:
        card["actions"] = [{"type": "Action.OpenUrl", "title": "Open the run", "url": link}]
    return {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}
        ],
    }


BODIES: dict[str, Body] = {"webhook": webhook, "slack": slack, "teams": teams}
