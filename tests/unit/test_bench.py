"""The benchmark harness's arithmetic: medians, ratios against the budgets, verdicts, tables."""

from __future__ import annotations

from typing import Any

from bench import report


def sample(case: str, side: str, seconds: float, rss: float = 200.0, **extra: Any) -> dict[str, Any]:
    return {"case": case, "side": side, "rows": 1000, "seconds": seconds, "rss_mb": rss, "error": None, **extra}


def test_medians_per_case_and_side_and_failed_rounds_counted() -> None:
    m = report.medians(
        [sample("csv-azurite", "filecast", s) for s in (3.0, 1.0, 2.0)]
        + [{**sample("csv-azurite", "limit", 9.0), "error": "boom"}]
    )
    assert m[("csv-azurite", "filecast")]["seconds"] == 2.0
    assert m[("csv-azurite", "filecast")]["rounds"] == 3.0
    assert m[("csv-azurite", "limit")]["failed"] == 1.0
    assert m[("csv-azurite", "limit")]["seconds"] is None


def by_name(checks: list[report.Check]) -> dict[str, report.Check]:
    return {f"{c.case}: {c.name}": c for c in checks}


def test_ratios_against_upload_dlt_ftp_upsert_and_memory() -> None:
    m = report.medians(
        [
            sample("csv-azurite", "filecast", 4.0, run_s=3.0),
            sample("csv-azurite", "limit", 5.0, copy_s=1.0, upload_s=3.2),
            sample("csv-azurite", "dlt-best", 10.0),
            sample("csv-azurite", "dlt-defaults", 20.0),
            sample("csv-ftp", "filecast", 3.0, run_s=2.5),
            sample("csv-ftp", "limit", 3.0, copy_s=1.0, upload_s=1.0),
            sample("memory", "csv", 9.0, rss=320.0),
            sample("memory", "csv-tenth", 1.0, rss=280.0),
            sample("upsert", "full", 4.0, run_s=3.2),
            sample("upsert", "upsert-1%", 1.0, run_s=0.4),
            sample("upsert", "upsert-none", 2.0),
        ]
    )
    checks = by_name(report.checks(m))
    assert checks["csv-azurite: export vs raw upload of the same bytes"].value == 4.0 / 3.2
    assert checks["csv-azurite: export vs raw upload of the same bytes"].budget == 1.15
    assert checks["csv-azurite: export vs COPY + upload, sequential"].value == 4.0 / 4.2
    assert checks["csv-azurite: vs dlt, best settings"].value == 0.4
    assert checks["csv-azurite: vs dlt, defaults"].value == 0.2
    assert checks["csv-ftp: export vs COPY + curl -T"].value == 1.5
    assert checks["memory: csv: peak RSS"].value == 320.0
    assert checks["memory: csv: RSS growth from a tenth of the rows"].value == 40.0
    assert checks["upsert: UPSERT after 1 % changed vs a full run"].value == 0.25
    assert checks["upsert: UPSERT after no change vs a full run"].value == 0.5
    # the runs' own times, from their records: shown without a budget, and only where measured
    assert checks["csv-azurite: the run alone (warm process) vs raw upload"].value == 3.0 / 3.2
    assert checks["csv-ftp: the run alone (warm process) vs COPY + curl -T"].value == 1.25
    assert checks["upsert: UPSERT after 1 % changed vs a full run, the runs alone (warm process)"].value == 0.125
    assert "upsert: UPSERT after no change vs a full run, the runs alone (warm process)" not in checks
    verdicts = {name: c.verdict(3.0) for name, c in checks.items()}
    assert verdicts["csv-azurite: export vs raw upload of the same bytes"] == "over"  # 1.25 > 1.15, < 3.45
    assert verdicts["csv-azurite: vs dlt, best settings"] == "ok"
    assert verdicts["csv-azurite: vs dlt, defaults"] == "info"
    assert verdicts["upsert: UPSERT after no change vs a full run"] == "over"
    assert report.failed(list(checks.values()), 3.0) == []
    assert {c.name for c in report.failed(list(checks.values()), 1.0)} == {
        "export vs raw upload of the same bytes",
        "export vs COPY + curl -T",
        "csv: peak RSS",
        "csv: RSS growth from a tenth of the rows",
        "UPSERT after no change vs a full run",
    }


def test_verdicts_fail_beyond_tolerance_and_error_when_a_side_is_missing() -> None:
    assert report.Check("c", "r", 3.6, 1.2).verdict(3.0) == "fail"
    assert report.Check("c", "r", 3.6, 1.2).verdict(1.0) == "fail"
    assert report.Check("c", "r", 1.3, 1.2).verdict(1.0) == "fail"
    assert report.Check("c", "r", 1.2, 1.2).verdict(1.0) == "ok"
    m = report.medians(
        [
            sample("parquet-azurite", "filecast", 2.0),
            {**sample("parquet-azurite", "limit", 2.0, upload_s=1.0), "error": "no blob"},
        ]
    )
    [upload, *_] = report.checks(m)
    assert upload.value is None and upload.verdict(3.0) == "error"
    assert report.failed([upload], 3.0) == [upload]


def test_tables_show_each_side_and_each_ratio() -> None:
    m = report.medians(
        [
            sample("csv-azurite", "filecast", 4.12, rss=290.4),
            sample("csv-azurite", "limit", 3.92, rss=150.0, copy_s=0.97, upload_s=2.95),
        ]
    )
    table = report.measurements_table(m)
    assert table.splitlines()[2] == (
        "| csv-azurite | 4.12 s, 290 MB | — | — | 3.92 s, 150 MB (COPY 0.97 s + upload 2.95 s) |"
    )
    checks = report.checks_table(report.checks(m), 3.0)
    assert "| csv-azurite | export vs raw upload of the same bytes | 1.40 × | ≤ 1.15 × | over |" in checks
    assert "| csv-azurite | export vs COPY + upload, sequential | 1.05 × | — | info |" in checks
