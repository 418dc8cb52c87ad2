"""The console's chart of an activation's runs: rows exported and duration, as inline SVG bars.

Oldest run left, newest right; each bar has a `<title>` (a tooltip and the text a screen reader
reads), and the figure a caption with the largest values, so the chart needs no script.
"""

from __future__ import annotations

from collections.abc import Callable

from ...run.records import RunRecord
from .text import duration, esc, seconds

WIDTH, HEIGHT, GAP, MAX_BAR = 640, 70, 2, 28


def _bars(
    records: list[RunRecord],
    value: Callable[[RunRecord], float],
    label: Callable[[RunRecord], str],
    top: float,
    colour: str,
    y0: int,
) -> str:
    step = min(WIDTH / max(len(records), 1), MAX_BAR)
    parts = []
    for i, record in enumerate(records):
        height = 0.0 if top <= 0 else HEIGHT * value(record) / top
        fill = "#c0392b" if record.status == "failed" else colour
        width = max(step - 2 * GAP, 1)
        parts.append(
            f'<rect x="{i * step + GAP:.1f}" y="{y0 + HEIGHT - height:.1f}" width="{width:.1f}"'
            f' height="{max(height, 1):.1f}" fill="{fill}"><title>{esc(record.run_id)} ({esc(record.status)}):'
            f" {esc(label(record))}</title></rect>"
        )
    return "".join(parts)


def chart(records: list[RunRecord]) -> str:
    """Two bar rows over the same runs: rows exported (top) and duration in seconds (bottom)."""
    if not records:
        return ""
    rows_top = max(r.rows.exported for r in records)
    time_top = max(seconds(r) or 0.0 for r in records)
    svg = (
        f'<svg role="img" aria-labelledby="chart-title" viewBox="0 0 {WIDTH} {2 * HEIGHT + 50}" width="{WIDTH}"'
        f' height="{2 * HEIGHT + 50}"><title id="chart-title">Rows exported and '
        f"duration of the last {len(records)} runs, oldest first</title>"
        f'<text x="0" y="12">rows exported (max {rows_top:,})</text>'
        + _bars(
            records, lambda r: r.rows.exported, lambda r: f"{r.rows.exported:,} rows exported", rows_top, "#2e6fb7", 16
        )
        + f'<text x="0" y="{HEIGHT + 38}">duration (max {duration(time_top)})</text>'
        + _bars(records, lambda r: seconds(r) or 0.0, lambda r: duration(seconds(r)), time_top, "#6c8ebf", HEIGHT + 42)
        + "</svg>"
    )
    return (
        f"<figure>{svg}<figcaption>Last {len(records)} runs, oldest left; failed runs in red. Largest: "
        f"{esc(f'{rows_top:,}')} rows, {esc(duration(time_top))}.</figcaption></figure>"
    )
