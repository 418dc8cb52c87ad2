"""Alerts end to end: real runs through the triggers against Azurite, webhooks on a local server
that records each request (Slack blocks, a Teams Adaptive Card, generic JSON), one alert per
outage through retries and the poison queue, delivery retries, and dead webhooks that fail no run."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.functions.queue import QueueMessage

import core.control.alerts
from tests.functions.webhook_recorder import Recorder
from tests.helpers import call, deliver, get_run, http

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "alerts"
CONSOLE = "https://console.invalid/api/console"
SECRET_PATH = "/services/T0001/B0001/s3cr3t-t0ken"

ALERTS_YAML = """
alerts:
  targets:
    ops_slack: {type: slack, url_setting: SLACK_HOOK}
    ops_teams: {type: teams, url_setting: TEAMS_HOOK}
    ops_hook:  {type: webhook, url_setting: OPS_HOOK}
  rules:
    - {on: [failed, recovered], targets: [ops_slack, ops_teams, ops_hook]}
"""


@pytest.fixture
def hooks(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    recorder = Recorder()
    monkeypatch.setenv("SLACK_HOOK", recorder.url("/slack" + SECRET_PATH))
    monkeypatch.setenv("TEAMS_HOOK", recorder.url("/teams"))
    monkeypatch.setenv("OPS_HOOK", recorder.url("/hook"))
    monkeypatch.setenv("FILECAST_CONSOLE_URL", CONSOLE)
    monkeypatch.setattr(core.control.alerts, "BACKOFF", 0.01)
    yield recorder
    recorder.close()


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/dead"


def put(
    env: dict[str, Any], demo_db: Path, activations: str, alerts: str = ALERTS_YAML, destinations: str | None = None
) -> None:
    """Apply a catalog written as YAML text, as a user would (bare `on:` keys included)."""
    text = f"""
sources: {{warehouse: {{type: duckdb, database: "{demo_db}"}}}}
models:
  customers: {{source: warehouse, sql: "select * from customers where customer_id <= 50", primary_key: [customer_id]}}
destinations:
  out: {{type: azure_blob, container: {env["container"]}, connection_setting: OUT_STORAGE, create_container: true}}
{destinations or ""}
activations:
{activations}
{alerts}
"""
    status, body = http("put_catalog", "PUT", "/api/catalog", body=text.encode())
    assert status == 200, body


def message(run_id: str, activation: str = "daily") -> dict[str, str]:
    return {"activation": activation, "logical_time": "2025-04-14T06:00:00Z", "run_id": run_id, "trigger": "schedule"}


def keep(name: str, body: Any) -> None:
    """Save what a webhook received (a CI artifact, and what the README shows)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / name).write_text(json.dumps(body, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


BAD = (
    '  daily: {model: customers, destination: out, format: csv, file_name: "d_{run_id}", '
    'mapping: [{from: "<script>x</script>", to: x}]}'
)
GOOD = '  daily: {model: customers, destination: out, format: csv, file_name: "d_{run_id}"}'
ERROR = (
    'invalid_catalog: activations.daily.mapping[0].from: unknown column "<script>x</script>"; columns are: '
    "customer_id, first_name"
)


def test_an_outage_alerts_once_then_recovers(env: dict[str, Any], demo_db: Path, hooks: Recorder) -> None:
    put(env, demo_db, BAD)
    deliver(message("daily-1"))
    first = get_run("daily-1")
    assert first["status"] == "failed"
    assert first["alerts"] == [
        {"target": t, "event": "failed", "status": "sent", "attempts": 1}
        for t in ("ops_slack", "ops_teams", "ops_hook")
    ]
    [slack] = hooks.bodies("/slack" + SECRET_PATH)
    [teams] = hooks.bodies("/teams")
    [hook] = hooks.bodies("/hook")
    assert {r["content_type"] for r in hooks.requests} == {"application/json"}
    keep("slack-failed.json", slack)
    keep("teams-failed.json", teams)
    keep("webhook-failed.json", hook)

    # Slack: Block Kit, the error's `<` and `>` escaped as Slack's mrkdwn asks, a button to the run.
    assert slack["text"] == "Filecast: daily failed"
    assert slack["blocks"][0] == {"type": "header", "text": {"type": "plain_text", "text": "Filecast: daily failed"}}
    assert slack["blocks"][1]["text"]["text"].startswith(ERROR.replace("<", "&lt;").replace(">", "&gt;"))
    fields = {f["text"].split("\n")[0]: f["text"].split("\n")[1] for f in slack["blocks"][2]["fields"]}
    assert fields["*Run*"] == "daily-1" and fields["*Status*"] == "failed" and fields["*Rows exported*"] == "0"
    assert slack["blocks"][3]["elements"][0]["url"] == f"{CONSOLE}/runs/daily-1"
    # Teams: a workflow message carrying one Adaptive Card.
    [attachment] = teams["attachments"]
    card = attachment["content"]
    assert teams["type"] == "message" and attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert (card["type"], card["version"]) == ("AdaptiveCard", "1.4")
    assert card["body"][0]["text"] == "Filecast: daily failed" and card["body"][0]["color"] == "Attention"
    assert card["body"][1]["text"].startswith(ERROR)
    facts = {f["title"]: f["value"] for f in card["body"][2]["facts"]}
    assert facts["Run"] == "daily-1" and facts["Trigger"] == "schedule" and facts["Files"] == "0"
    assert card["actions"] == [{"type": "Action.OpenUrl", "title": "Open the run", "url": f"{CONSOLE}/runs/daily-1"}]
    # Generic webhook: the fields a script keys on.
    assert {
        k: hook[k]
        for k in (
            "source",
            "event",
            "activation",
            "run_id",
            "status",
            "trigger",
            "logical_time",
            "files",
            "warnings",
            "outage_since_run",
            "console_url",
        )
    } == {
        "source": "filecast",
        "event": "failed",
        "activation": "daily",
        "run_id": "daily-1",
        "status": "failed",
        "trigger": "schedule",
        "logical_time": "2025-04-14T06:00:00.000Z",
        "files": 0,
        "warnings": [],
        "outage_since_run": None,
        "console_url": f"{CONSOLE}/runs/daily-1",
    }
    assert hook["error"]["code"] == "invalid_catalog" and hook["rows"]["exported"] == 0
    assert hook["text"].startswith("Filecast: daily failed: " + ERROR)

    deliver(message("daily-2"))  # the same outage: recorded, not sent again
    assert len(hooks.requests) == 3
    assert get_run("daily-2")["alerts"] == [
        {
            "target": t,
            "event": "failed",
            "status": "suppressed",
            "attempts": 0,
            "detail": "outage already alerted by run `daily-1`",
        }
        for t in ("ops_slack", "ops_teams", "ops_hook")
    ]

    put(env, demo_db, GOOD)
    deliver(message("daily-3"))
    assert get_run("daily-3")["status"] == "succeeded"
    [_, recovered] = hooks.bodies("/slack" + SECRET_PATH)
    keep("slack-recovered.json", recovered)
    assert recovered["blocks"][1]["text"]["text"] == "run daily-3 succeeded after the failure of run daily-1"
    [_, teams_recovered] = hooks.bodies("/teams")
    keep("teams-recovered.json", teams_recovered)
    assert teams_recovered["attachments"][0]["content"]["body"][0]["color"] == "Good"
    assert hooks.bodies("/hook")[1]["event"] == "recovered"
    assert hooks.bodies("/hook")[1]["rows"]["exported"] == 50
    deliver(message("daily-4"))  # healthy again: nothing to say
    assert len(hooks.requests) == 6 and get_run("daily-4")["alerts"] == []
    put(env, demo_db, BAD)
    deliver(message("daily-5"))  # a new outage alerts again
    assert len(hooks.requests) == 9
    for record in (first, get_run("daily-5")):
        assert SECRET_PATH not in json.dumps(record)


def test_retries_dead_webhooks_and_warning_rules(
    env: dict[str, Any], demo_db: Path, hooks: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEAD_HOOK", closed_port_url())
    alerts = """
alerts:
  targets:
    ops_slack: {type: slack, url_setting: SLACK_HOOK}
    ops_teams: {type: teams, url_setting: TEAMS_HOOK}
    dead:      {type: webhook, url_setting: DEAD_HOOK}
    unset:     {type: webhook, url_setting: NOT_SET_HOOK}
    drops:     {type: webhook, url_setting: OPS_HOOK}
  rules:
    - {on: [warning], targets: [ops_slack, ops_teams, dead, unset]}
    - {on: [warning], warnings: [row_drop], targets: [drops]}
"""
    put(
        env,
        demo_db,
        '  hourly: {model: customers, destination: out, format: csv, file_name: "h_{YYYY}{MM}{DD}", '
        'schedule: "0 * * * *"}',
        alerts,
    )
    hooks.answers["/slack" + SECRET_PATH] = [500, 503]  # retried, then delivered
    hooks.answers["/teams"] = [400]  # a final answer: not retried
    deliver(message("hourly-1", "hourly"))
    record = get_run("hourly-1")
    assert record["status"] == "succeeded" and [w["code"] for w in record["warnings"]] == ["overwrite_risk"]
    outcomes = {a["target"]: a for a in record["alerts"]}
    assert outcomes["ops_slack"] == {"target": "ops_slack", "event": "warning", "status": "sent", "attempts": 3}
    assert outcomes["ops_teams"] == {
        "target": "ops_teams",
        "event": "warning",
        "status": "failed",
        "attempts": 1,
        "detail": "HTTP 400 (not retried)",
    }
    assert outcomes["dead"] == {
        "target": "dead",
        "event": "warning",
        "status": "failed",
        "attempts": 4,
        "detail": "network error (ClientConnectorError)",
    }
    assert outcomes["unset"]["status"] == "failed" and outcomes["unset"]["attempts"] == 0
    assert outcomes["unset"]["detail"] == (
        "app setting `NOT_SET_HOOK` (webhook URL of alert target `unset`) is not "
        "set; add it to the Function App's settings or to local.settings.json "
        "`Values`"
    )
    assert "drops" not in outcomes and hooks.bodies("/hook") == []  # only row_drop goes there
    slack = hooks.bodies("/slack" + SECRET_PATH)
    assert len(slack) == 3 and slack[0] == slack[2]
    assert slack[2]["blocks"][0]["text"]["text"] == "Filecast: hourly succeeded with warnings"
    assert slack[2]["blocks"][1]["text"]["text"].startswith("overwrite_risk: `h_{YYYY}{MM}{DD}` names the same file")
    keep("slack-warning.json", slack[2])
    assert [b.name for b in env["blobs"].list_blobs()] == ["h_20250414.csv"]  # the run delivered regardless


def test_retried_and_poisoned_runs_alert_once(env: dict[str, Any], demo_db: Path, hooks: Recorder) -> None:
    closed = closed_port_url().split(":")[2].split("/")[0]
    put(
        env,
        demo_db,
        "  flaky: {model: customers, destination: down, format: csv, file_name: f}",
        destinations=f"  down: {{type: ftp, host: 127.0.0.1, port: {closed}, username: u, password_setting: FTP_PW}}",
    )
    os.environ["FTP_PW"] = "x"
    try:
        with pytest.raises(core.errors.DestinationError):
            deliver(message("flaky-1", "flaky"), dequeue_count=1)
        assert get_run("flaky-1")["status"] == "queued" and hooks.requests == []  # the host retries: no alert yet
        with pytest.raises(core.errors.DestinationError):
            deliver(message("flaky-1", "flaky"), dequeue_count=5)
    finally:
        del os.environ["FTP_PW"]
    assert get_run("flaky-1")["status"] == "failed" and len(hooks.bodies("/hook")) == 1
    assert hooks.bodies("/hook")[0]["error"]["code"] == "connection_refused"
    call("poisoned", QueueMessage(id="p", body=json.dumps(message("flaky-1", "flaky")).encode()))
    assert len(hooks.requests) == 3  # already failed and alerted: the poison queue adds nothing
    # A message that never got to run (say the worker died each time) fails in the poison trigger.
    call("poisoned", QueueMessage(id="p2", body=json.dumps(message("flaky-2", "flaky")).encode()))
    record = get_run("flaky-2")
    assert record["error"]["code"] == "poisoned"
    assert [a["status"] for a in record["alerts"]] == ["suppressed"] * 3  # the same outage
    assert len(hooks.requests) == 3


def test_a_hanging_webhook_is_cut_off_by_the_time_budget(hooks: Recorder) -> None:
    import asyncio
    import time

    hooks.delays["/slow"] = 3.0
    deadline = time.monotonic() + 0.5
    status, attempts, detail = asyncio.run(
        core.control.alerts.post_with_retries(hooks.url("/slow"), {"x": 1}, deadline)
    )
    assert (status, attempts, detail) == ("failed", 1, "timed out; gave up: alert time budget spent")
    hooks.answers["/limited"] = [429, 429, 429, 429]
    status, attempts, detail = asyncio.run(
        core.control.alerts.post_with_retries(hooks.url("/limited"), {"x": 1}, time.monotonic() + 5)
    )
    assert (status, attempts, detail) == ("failed", 4, "HTTP 429")
