"""How the console writes values: HTML-escaped text, UTC times and run durations.

Shared by the pages (`pages.py`) and the chart (`chart.py`), so neither imports the other's
internals; every value from the catalog or a record goes through `esc`.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import Any

from ...run.records import RunRecord


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "-"


def seconds(record: RunRecord) -> float | None:
    if record.started_at and record.finished_at:
        return (record.finished_at - record.started_at).total_seconds()
    return None


def duration(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f} s" if value < 10 else f"{value:,.0f} s"
