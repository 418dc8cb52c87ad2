"""The catalog's `alerts` section: what it accepts, every mistake reported with its path, and the
rule matching that decides which targets hear about an event."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from core.catalog.alerts import TARGET_TYPES
from core.catalog.model import WARNING_CODES
from core.catalog.parse import parse_catalog, parse_text
from core.control.alert_messages import BODIES
from core.errors import CatalogInvalid

BASE = """
sources: {w: {type: duckdb, database: /tmp/none.duckdb}}
models: {m: {source: w, table: t, primary_key: [id]}}
destinations: {d: {type: azure_blob, container: out, connection_setting: X}}
activations:
  daily: {model: m, destination: d, file_name: f, format: csv}
  hourly: {model: m, destination: d, file_name: g, format: csv}
"""


def catalog(alerts: str) -> Any:
    return parse_catalog(parse_text(BASE + alerts), Path("/tmp"))


def problems(alerts: str) -> list[str]:
    with pytest.raises(CatalogInvalid) as caught:
        catalog(alerts)
    return [str(p) for p in caught.value.problems]


def test_the_issue_example_parses_with_yaml_bare_on_keys() -> None:
    parsed = catalog("""
alerts:
  targets:
    ops_slack: {type: slack, url_setting: OPS_SLACK_WEBHOOK}
    ops_hook:  {type: webhook, url_setting: OPS_WEBHOOK}
  rules:
    - {on: [failed, recovered], targets: [ops_slack]}
    - {on: [warning], warnings: [row_drop], activations: [daily], targets: [ops_hook]}
""").alerts
    assert parsed.targets["ops_slack"].type == "slack" and parsed.targets["ops_hook"].url_setting == "OPS_WEBHOOK"
    assert parsed.targets_for("failed", "hourly") == ["ops_slack"]
    assert parsed.targets_for("warning", "daily", ("row_drop", "zero_rows")) == ["ops_hook"]
    assert parsed.targets_for("warning", "daily", ("zero_rows",)) == []
    assert parsed.targets_for("warning", "hourly", ("row_drop",)) == []
    assert parsed.tracks_outages("daily") and parsed.tracks_outages("hourly")


def test_no_alerts_section_means_none() -> None:
    assert catalog("").alerts is None


def test_every_mistake_is_reported_with_its_path() -> None:
    assert problems("""
alerts:
  targets:
    pager: {type: sms, url_setting: P}
    nourl: {type: teams}
    Bad!: {type: slack, url_setting: S}
  rules:
    - {on: [failed, exploded], targets: [pager, nowhere]}
    - {"on": [failed], warnings: [row_drop], targets: [nourl]}
    - {"on": [warning], warnings: [row_dorp], activations: [weekly], targets: []}
    - {targets: [nourl], when: always}
  extra: 1
""") == [
        "alerts.extra: unknown field; allowed fields are: targets, rules",
        "alerts.targets.pager.type: must be one of webhook, slack, teams; got `sms`",
        "alerts.targets.nourl.url_setting: is required",
        "alerts.targets.Bad!: ids are 1 to 64 of a-z, 0-9, `_` and `-`",
        "alerts.rules[0].on: unknown event `exploded`; events are: failed, recovered, warning",
        "alerts.rules[0].targets: unknown target `nowhere`; targets are: Bad!, nourl, pager",
        "alerts.rules[1].warnings: filters `warning` events: add `warning` to `on`",
        "alerts.rules[2].targets: must be a non-empty list of targets, got `[]`",
        "alerts.rules[2].activations: unknown activation `weekly`; activations are: daily, hourly",
        "alerts.rules[2].warnings: unknown warning `row_dorp`; warnings are: " + ", ".join(sorted(WARNING_CODES)),
        "alerts.rules[3].when: unknown field; allowed fields are: on, targets, activations, warnings",
        "alerts.rules[3].on: is required: a list of events",
    ]


def test_every_target_type_the_catalog_accepts_has_a_message_body() -> None:
    assert sorted(TARGET_TYPES) == sorted(BODIES)
