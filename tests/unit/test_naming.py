"""File-name templates: every placeholder at a fixed time, in UTC, parts and suffixes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from core.write.naming import NameContext, file_name, render

# 2025-04-14 06:07:08.009 UTC, given in another zone to prove rendering is in UTC.
MOMENT = datetime(2025, 4, 14, 8, 7, 8, 9000, tzinfo=timezone(timedelta(hours=2)))
CONTEXT = NameContext(MOMENT, "customers_daily", "20250414T060708Z-abcd")


@pytest.mark.parametrize(
    "template, expected",
    [
        ("{YYYY}", "2025"),
        ("{YY}", "25"),
        ("{MM}", "04"),
        ("{DD}", "14"),
        ("{HH}", "06"),
        ("{mm}", "07"),
        ("{ss}", "08"),
        ("{ms}", "009"),
        ("{X}", "1744610828"),
        ("{x}", "1744610828009"),
        ("{activation}", "customers_daily"),
        ("{run_id}", "20250414T060708Z-abcd"),
        ("{part}", "00001"),
        ("{YY}-{MM}-{DD}_export", "25-04-14_export"),
    ],
)
def test_each_placeholder(template: str, expected: str) -> None:
    assert render(template, CONTEXT) == expected


def test_unix_times_match_the_clock() -> None:
    assert int(render("{X}", CONTEXT)) == int(MOMENT.timestamp())
    assert int(render("{x}", CONTEXT)) == round(MOMENT.timestamp() * 1000)
    late = NameContext(datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), "a", "r")
    assert render("{YYYY}{MM}{DD}{HH}{mm}{ss}{ms} {x}", late) == "19991231235959999 946684799999"


def test_seed_docs_example() -> None:
    context = NameContext(datetime(2025, 4, 14, tzinfo=UTC), "a", "r")
    assert file_name("{YY}-{MM}-{DD}_export", "", context, extension="csv") == "25-04-14_export.csv"


@pytest.mark.parametrize(
    "folder, expected",
    [
        ("", "x.csv"),
        (".", "x.csv"),
        ("exports/daily", "exports/daily/x.csv"),
        ("exports/daily/", "exports/daily/x.csv"),
        ("/", "/x.csv"),
        ("/foo", "/foo/x.csv"),
        ("..", "../x.csv"),
        ("out/{YYYY}/{MM}", "out/2025/04/x.csv"),
    ],
)
def test_folders(folder: str, expected: str) -> None:
    assert file_name("x", folder, CONTEXT, extension="csv") == expected


def test_parts_suffixes_and_gzip() -> None:
    assert file_name("x", "f", CONTEXT, extension="csv", part=2) == "f/x-00002.csv"
    assert file_name("x_{part}", "f", CONTEXT, extension="csv", part=2) == "f/x_00002.csv"
    assert (
        file_name("x", "", CONTEXT, extension="ndjson", suffix="_added", part=1, gzip=True) == "x_added-00001.ndjson.gz"
    )
