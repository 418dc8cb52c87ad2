"""Budgets, the ratios against them, and the tables `python -m bench` prints (DESIGN.md §5).

Pure functions over the samples' medians, so they are unit-tested without running anything.
A check is `value <= budget`; its verdict is `ok`, `over` (above the budget but within
`tolerance` x it, which CI accepts on a shared machine) or `fail`; `error` when a side it needs
did not run, and `info` for a ratio shown without a budget.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

RSS_BUDGET_MB = 300.0
RSS_GROWTH_MB = 30.0
FORMAT_CASES = ("csv-azurite", "parquet-azurite", "ndjson-azurite")
SIDES = ("filecast", "dlt-best", "dlt-defaults", "limit")


@dataclass(frozen=True)
class Check:
    case: str
    name: str
    value: float | None
    budget: float | None
    unit: str = "x"

    def verdict(self, tolerance: float) -> str:
        if self.value is None:
            return "error"
        if self.budget is None:
            return "info"
        if self.value <= self.budget:
            return "ok"
        return "over" if self.value <= self.budget * tolerance else "fail"


Medians = Mapping[tuple[str, str], Mapping[str, float | None]]


def medians(samples: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], dict[str, float | None]]:
    """Per (case, side): the median of each numeric field over the rounds that ran without error;
    a side with a failed round gets `error`."""
    grouped: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for sample in samples:
        grouped.setdefault((sample["case"], sample["side"]), []).append(sample)
    result: dict[tuple[str, str], dict[str, float | None]] = {}
    for key, group in grouped.items():
        good = [s for s in group if not s.get("error") and s.get("seconds") is not None]
        fields: dict[str, float | None] = {"rounds": float(len(good)), "failed": float(len(group) - len(good))}
        for name in ("seconds", "rss_mb", "upload_s", "copy_s", "bytes", "run_s"):
            values = [float(s[name]) for s in good if s.get(name) is not None]
            fields[name] = statistics.median(values) if values else None
        result[key] = fields
    return result


def _get(m: Medians, case: str, side: str, field: str) -> float | None:
    entry = m.get((case, side))
    if entry is None or entry.get("failed"):
        return None
    return entry.get(field)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _sum(*values: float | None) -> float | None:
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)


def _info(out: list[Check], case: str, name: str, value: float | None) -> None:
    """A ratio without a budget, shown when measured: the run's own time (`run_s`, from its record)
    says what a warm Functions worker would spend, where the budgets time whole CLI processes."""
    if value is not None:
        out.append(Check(case, name, value, None))


def checks(m: Medians) -> list[Check]:
    """The budgets of DESIGN.md §5 that the measured cases cover."""
    out: list[Check] = []
    cases = {case for case, _ in m}
    for case in FORMAT_CASES:
        if case not in cases:
            continue
        fc = _get(m, case, "filecast", "seconds")
        out.append(
            Check(case, "export vs raw upload of the same bytes", _ratio(fc, _get(m, case, "limit", "upload_s")), 1.15)
        )
        alone = _ratio(_get(m, case, "filecast", "run_s"), _get(m, case, "limit", "upload_s"))
        _info(out, case, "the run alone (warm process) vs raw upload", alone)
        out.append(
            Check(
                case,
                "export vs COPY + upload, sequential",
                _ratio(fc, _sum(_get(m, case, "limit", "copy_s"), _get(m, case, "limit", "upload_s"))),
                None,
            )
        )
        if (case, "dlt-best") in m:
            budget = None if case == "ndjson-azurite" else 0.5
            out.append(Check(case, "vs dlt, best settings", _ratio(fc, _get(m, case, "dlt-best", "seconds")), budget))
        if (case, "dlt-defaults") in m:
            out.append(Check(case, "vs dlt, defaults", _ratio(fc, _get(m, case, "dlt-defaults", "seconds")), None))
    if "csv-ftp" in cases:
        limit = _sum(_get(m, "csv-ftp", "limit", "copy_s"), _get(m, "csv-ftp", "limit", "upload_s"))
        export = _get(m, "csv-ftp", "filecast", "seconds")
        out.append(Check("csv-ftp", "export vs COPY + curl -T", _ratio(export, limit), 1.2))
        alone = _ratio(_get(m, "csv-ftp", "filecast", "run_s"), limit)
        _info(out, "csv-ftp", "the run alone (warm process) vs COPY + curl -T", alone)
    for case, side in sorted(m):
        if case == "memory" and not side.endswith("-tenth"):
            peak = _get(m, case, side, "rss_mb")
            out.append(Check(case, f"{side}: peak RSS", peak, RSS_BUDGET_MB, "MB"))
            tenth = _get(m, case, f"{side}-tenth", "rss_mb")
            out.append(
                Check(
                    case,
                    f"{side}: RSS growth from a tenth of the rows",
                    None if peak is None or tenth is None else peak - tenth,
                    RSS_GROWTH_MB,
                    "MB",
                )
            )
    if "upsert" in cases:
        full = _get(m, "upsert", "full", "seconds")
        out.append(
            Check(
                "upsert",
                "UPSERT after 1 % changed vs a full run",
                _ratio(_get(m, "upsert", "upsert-1%", "seconds"), full),
                0.35,
            )
        )
        out.append(
            Check(
                "upsert",
                "UPSERT after no change vs a full run",
                _ratio(_get(m, "upsert", "upsert-none", "seconds"), full),
                0.3,
            )
        )
        full_alone = _get(m, "upsert", "full", "run_s")
        for side, what in (("upsert-1%", "after 1 % changed"), ("upsert-none", "after no change")):
            alone = _ratio(_get(m, "upsert", side, "run_s"), full_alone)
            _info(out, "upsert", f"UPSERT {what} vs a full run, the runs alone (warm process)", alone)
    return out


def _cell(m: Medians, case: str, side: str) -> str:
    entry = m.get((case, side))
    if entry is None:
        return "—"
    if entry.get("failed"):
        return "failed"
    seconds, rss = entry.get("seconds"), entry.get("rss_mb")
    text = f"{seconds:.2f} s, {rss:.0f} MB" if seconds is not None and rss is not None else "—"
    if side == "limit" and entry.get("upload_s") is not None:
        text += f" (COPY {entry['copy_s']:.2f} s + upload {entry['upload_s']:.2f} s)"
    return text


def measurements_table(m: Medians) -> str:
    """Wall time and peak RSS of each side, medians; one row per case."""
    lines = [
        "| case | Filecast | dlt, best settings | dlt, defaults | limit: COPY + raw upload |",
        "|---|---|---|---|---|",
    ]
    cases = sorted({case for case, _ in m if case not in ("memory", "upsert")})
    for case in cases:
        lines.append(f"| {case} | " + " | ".join(_cell(m, case, side) for side in SIDES) + " |")
    for case, side in sorted(m):
        if case in ("memory", "upsert"):
            lines.append(f"| {case}: {side} | {_cell(m, case, side)} | | | |")
    return "\n".join(lines)


def _show(check: Check) -> tuple[str, str]:
    def fmt(value: float | None) -> str:
        if value is None:
            return "—"
        return f"{value:.0f} MB" if check.unit == "MB" else f"{value:.2f} ×"

    return fmt(check.value), ("—" if check.budget is None else "≤ " + fmt(check.budget))


def checks_table(found: list[Check], tolerance: float) -> str:
    lines = ["| case | ratio | measured | budget | verdict |", "|---|---|---|---|---|"]
    for check in found:
        value, budget = _show(check)
        lines.append(f"| {check.case} | {check.name} | {value} | {budget} | {check.verdict(tolerance)} |")
    return "\n".join(lines)


def failed(found: list[Check], tolerance: float) -> list[Check]:
    """The checks that fail the run: a side that did not run, or a ratio beyond tolerance x budget."""
    return [c for c in found if c.verdict(tolerance) in ("error", "fail")]
