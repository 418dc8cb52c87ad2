"""Orchestration through the real triggers against Azurite: the timer fan-out, the queue runner,
leases, poison messages, sync warnings, manifests, and secrets kept out of every output."""

from __future__ import annotations

import csv
import io
import json
import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.functions.queue import QueueMessage
from azure.storage.blob import ContainerSasPermissions, generate_container_sas

import core.control.service
import core.run.engine
from core.control.stores import ScheduleMarks
from core.settings import Settings
from devtools.services import AZURITE_ACCOUNT, AZURITE_KEY, FtpServer
from tests.helpers import T0, apply, call, deliver, get_run, http, messages, tick


def test_timer_enqueues_exactly_the_due_activations(
    env: dict[str, Any], demo_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    apply(
        env,
        demo_db,
        {
            "hourly": {"file_name": "h_{YYYY}{MM}{DD}{HH}", "schedule": "0 * * * *"},
            "daily": {"file_name": "d_{YYYY}{MM}{DD}", "schedule": "0 6 * * *"},
            "manual": {"file_name": "m_{run_id}"},
        },
    )
    tick(monkeypatch, T0)
    assert sorted(m["run_id"] for m in messages(env)) == ["daily-20250414T060000Z", "hourly-20250414T060000Z"]
    tick(monkeypatch, T0 + timedelta(seconds=20))  # same occurrence: nothing again
    tick(monkeypatch, T0 + timedelta(minutes=30))  # nothing due
    assert messages(env) == []
    tick(monkeypatch, datetime(2025, 4, 14, 9, 10, tzinfo=UTC))  # 07:00, 08:00, 09:00 missed: one run
    [late] = messages(env)
    assert late == {
        "activation": "hourly",
        "logical_time": "2025-04-14T09:00:00.000Z",
        "run_id": "hourly-20250414T090000Z",
        "trigger": "schedule",
    }
    assert get_run("hourly-20250414T090000Z")["status"] == "queued"


def test_two_overlapping_ticks_enqueue_an_occurrence_once(
    env: dict[str, Any], demo_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    apply(env, demo_db, {"hourly": {"file_name": "h_{YYYY}{MM}{DD}{HH}", "schedule": "0 * * * *"}})
    tick(monkeypatch, T0)
    messages(env)
    both_read = threading.Barrier(2)
    real_last = ScheduleMarks.last

    def last_then_wait(self: Any, activation: str) -> Any:
        seen = real_last(self, activation)
        both_read.wait(timeout=10)  # both ticks read the same mark before either claims
        return seen

    monkeypatch.setattr(ScheduleMarks, "last", last_then_wait)
    later = T0 + timedelta(hours=1)
    threads = [
        threading.Thread(target=core.control.service.schedule_tick, args=(Settings.load(), later)) for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert [m["run_id"] for m in messages(env)] == ["hourly-20250414T070000Z"]


def test_queue_runner_runs_and_records_history(
    env: dict[str, Any], demo_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    apply(env, demo_db, {"daily": {"file_name": "d_{YYYY}{MM}{DD}", "schedule": "0 6 * * *"}})
    tick(monkeypatch, T0)
    [message] = messages(env)
    deliver(message)
    record = get_run(message["run_id"])
    assert record["status"] == "succeeded" and record["trigger"] == "schedule"
    assert record["logical_time"] == "2025-04-14T06:00:00.000Z"
    assert record["files"][0]["path"] == "d_20250414.csv" and record["rows"]["exported"] == 500
    blob = env["blobs"].get_blob_client("d_20250414.csv").download_blob().readall()
    assert len(list(csv.reader(io.StringIO(blob.decode(), newline="")))) == 501  # header + 500 rows
    deliver(message)  # a second delivery of an ended run is dropped
    _status, history = http("list_runs", "GET", "/api/activations/daily/runs", {"id": "daily"})
    assert [r["run_id"] for r in history["runs"]] == [message["run_id"]]


def slow_runs(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    real = core.run.engine.Run._run

    async def slow(self: Any) -> None:
        import asyncio

        await asyncio.sleep(seconds)
        await real(self)

    monkeypatch.setattr(core.run.engine.Run, "_run", slow)


def test_two_messages_for_one_activation_make_one_run(
    env: dict[str, Any], demo_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    apply(env, demo_db, {"daily": {"file_name": "d_{run_id}"}})
    slow_runs(monkeypatch, 1.5)
    message = {
        "activation": "daily",
        "logical_time": "2025-04-14T06:00:00Z",
        "run_id": "daily-same",
        "trigger": "manual",
    }
    other = {**message, "run_id": "daily-other"}
    outcomes: dict[str, str] = {}

    def process(msg: dict[str, Any]) -> None:
        try:
            deliver(msg)
            outcomes[msg["run_id"] + str(threading.get_ident())] = "returned"
        except Exception as exc:
            outcomes[msg["run_id"] + str(threading.get_ident())] = type(exc).__name__

    threads = [threading.Thread(target=process, args=(message,)), threading.Thread(target=process, args=(message,))]
    for thread in threads:
        thread.start()
        time.sleep(0.3)
    waiting = threading.Thread(target=process, args=(other,))
    waiting.start()
    for thread in [*threads, waiting]:
        thread.join(timeout=60)
    assert sorted(outcomes.values()) == ["RunInProgress", "returned", "returned"]
    assert get_run("daily-same")["status"] == "succeeded"
    assert [b.name for b in env["blobs"].list_blobs()] == ["d_daily-same.csv"]
    # The waiting message is retried by the host once the first run ended: then it runs.
    deliver(other, dequeue_count=2)
    assert get_run("daily-other")["status"] == "succeeded"


def test_manual_run_while_running_answers_409(env: dict[str, Any], demo_db: Path) -> None:
    apply(env, demo_db, {"daily": {"file_name": "d"}})
    core.control.service.Services(Settings.load()).leases.acquire("daily", "holder-run")
    status, body = http("run_activation", "POST", "/api/activations/daily/run", {"id": "daily"})
    assert status == 409
    assert body["error"]["code"] == "run_in_progress" and "holder-run" in body["error"]["message"]


def test_terminal_error_fails_the_run_and_completes_the_message(env: dict[str, Any], demo_db: Path) -> None:
    apply(env, demo_db, {"bad": {"file_name": "b", "mapping": [{"from": "nme", "to": "name"}]}})
    message = {"activation": "bad", "logical_time": "2025-04-14T06:00:00Z", "run_id": "bad-1", "trigger": "manual"}
    deliver(message)  # no exception: the host completes the message, no retry
    record = get_run("bad-1")
    assert record["status"] == "failed" and record["error"]["code"] == "invalid_catalog"
    assert record["error"]["message"].startswith(
        'activations.bad.mapping[0].from: unknown column "nme"; columns are: customer_id, first_name'
    )


def test_transient_errors_retry_then_poison(env: dict[str, Any], demo_db: Path) -> None:
    closed_port = {"type": "ftp", "host": "127.0.0.1", "port": 9, "username": "u", "password_setting": "NOPE"}
    apply(
        env,
        demo_db,
        {"flaky": {"file_name": "f", "destination": "down"}},
        destinations={
            "out": {"type": "azure_blob", "container": env["container"], "connection_setting": "OUT_STORAGE"},
            "down": closed_port,
        },
    )
    message = {"activation": "flaky", "logical_time": "2025-04-14T06:00:00Z", "run_id": "flaky-1", "trigger": "manual"}
    import os

    os.environ["NOPE"] = "x"
    try:
        with pytest.raises(core.errors.DestinationError, match=r"connection refused by 127\.0\.0\.1:9"):
            deliver(message, dequeue_count=1)
        record = get_run("flaky-1")
        assert record["status"] == "queued" and record["error"]["code"] == "connection_refused"
        with pytest.raises(core.errors.DestinationError):
            deliver(message, dequeue_count=5)
        assert get_run("flaky-1")["status"] == "failed"
    finally:
        del os.environ["NOPE"]
    # The host moves it to the poison queue; the poison trigger keeps the run failed.
    call("poisoned", QueueMessage(id="p", body=json.dumps(message).encode()))
    assert get_run("flaky-1")["error"]["code"] == "connection_refused"
    never_ran = {**message, "run_id": "flaky-2"}
    call("poisoned", QueueMessage(id="p2", body=json.dumps(never_ran).encode()))
    record = get_run("flaky-2")
    assert record["status"] == "failed" and record["error"] == {
        "code": "poisoned",
        "message": "the run was given up after 5 attempts",
    }


def run_now(activation: str) -> dict[str, Any]:
    import asyncio

    services = core.control.service.Services(Settings.load())
    result = asyncio.run(
        core.control.service.run_activation(
            services.settings, services.catalog(), activation, logical_time=T0, services=services
        )
    )
    return result.record.as_dict()


def test_each_warning_and_fail_on(env: dict[str, Any], demo_db: Path) -> None:
    apply(
        env,
        demo_db,
        {
            "empty": {"file_name": "e_{run_id}"},
            "parts": {"file_name": "p_{run_id}", "max_file_rows": 100, "warnings": {"max_parts": 2}},
            "hourly": {"file_name": "h_{YYYY}{MM}{DD}", "schedule": "0 * * * *"},
            "strict": {"file_name": "s_{run_id}", "fail_on": ["zero_rows"]},
        },
        sql="select * from customers where customer_id <= 500",
    )
    assert [w["code"] for w in run_now("parts")["warnings"]] == ["too_many_parts"]
    hourly = run_now("hourly")["warnings"]
    assert hourly == [
        {
            "code": "overwrite_risk",
            "message": "`h_{YYYY}{MM}{DD}` names the same file for two runs "
            "of schedule `0 * * * *`, so each run overwrites the previous file; add a finer time "
            "placeholder (e.g. {HH}) if that is not meant",
        }
    ]
    assert run_now("empty")["warnings"] == []
    # The model shrinks: a drop of more than 50 % against the last success, then no rows at all.
    apply(
        env,
        demo_db,
        {"empty": {"file_name": "e_{run_id}"}, "strict": {"file_name": "s_{run_id}", "fail_on": ["zero_rows"]}},
        sql="select * from customers where customer_id <= 100",
    )
    dropped = run_now("empty")["warnings"]
    assert dropped == [
        {
            "code": "row_drop",
            "message": "100 rows read, 80% fewer than the 500 of the last successful run (threshold 50%)",
        }
    ]
    apply(
        env,
        demo_db,
        {"empty": {"file_name": "e_{run_id}"}, "strict": {"file_name": "s_{run_id}", "fail_on": ["zero_rows"]}},
        sql="select * from customers where false",
    )
    assert [w["code"] for w in run_now("empty")["warnings"]] == ["zero_rows", "row_drop"]  # 0 is a 100 % drop
    strict = run_now("strict")
    assert strict["status"] == "failed" and strict["error"]["code"] == "failed_on_warning"
    assert strict["error"]["message"] == (
        "warning `zero_rows` fails this activation (fail_on): the model returned no rows; nothing was published"
    )
    assert strict["files"] == []
    assert not [b.name for b in env["blobs"].list_blobs() if b.name.startswith("s_")]


def test_manifest_lists_the_files_and_comes_last(env: dict[str, Any], demo_db: Path) -> None:
    apply(env, demo_db, {"parts": {"file_name": "x_{YYYY}{MM}{DD}", "max_file_rows": 200, "manifest": True}})
    record = run_now("parts")
    assert [f["path"] for f in record["files"]] == [
        "x_20250414-00001.csv",
        "x_20250414-00002.csv",
        "x_20250414-00003.csv",
    ]
    manifest = json.loads(env["blobs"].get_blob_client("x_20250414.manifest.json").download_blob().readall())
    assert manifest == {
        "activation": "parts",
        "run_id": record["run_id"],
        "logical_time": "2025-04-14T06:00:30.000Z",
        "files": record["files"],
    }
    modified = {b.name: b.last_modified for b in env["blobs"].list_blobs()}
    assert modified["x_20250414.manifest.json"] >= max(modified[f["path"]] for f in record["files"])


def test_secrets_never_reach_logs_records_or_answers(
    env: dict[str, Any],
    demo_db: Path,
    ftp_server: FtpServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sas = generate_container_sas(
        AZURITE_ACCOUNT,
        env["container"],
        account_key=AZURITE_KEY,
        permission=ContainerSasPermissions(read=True, write=True, create=True, list=True),
        expiry=datetime.now(UTC) + timedelta(days=3),
    )
    env["blobs"].create_container()
    monkeypatch.setenv("LAKE_SAS", f"{env['azurite'].endpoint('blob')}/{env['container']}?{sas}")
    monkeypatch.setenv("FTP_PW", "alex-secret-pw")
    destinations = {
        "lake": {"type": "azure_blob", "container": env["container"], "sas_url_setting": "LAKE_SAS"},
        "ftp": {
            "type": "ftp",
            "host": "127.0.0.1",
            "port": ftp_server.port,
            "username": "alex",
            "password_setting": "FTP_PW",
        },
        "badftp": {
            "type": "ftp",
            "host": "127.0.0.1",
            "port": ftp_server.port,
            "username": "alex",
            "password_setting": "WRONG_PW",
        },
    }
    monkeypatch.setenv("WRONG_PW", "wrong-secret-pw")
    apply(
        env,
        demo_db,
        {
            "to_lake": {"file_name": "l", "destination": "lake"},
            "to_ftp": {"file_name": "f", "destination": "ftp", "folder": "secrets"},
            "to_bad": {"file_name": "b", "destination": "badftp"},
        },
        destinations=destinations,
    )
    caplog.set_level(logging.DEBUG)
    answers = []
    for activation in ("to_lake", "to_ftp", "to_bad"):
        record = run_now(activation)
        answers.append(json.dumps(record))
        answers.append(json.dumps(http("get_activation", "GET", "/x", {"id": activation})[1]))
    answers.append(json.dumps(http("list_activations", "GET", "/x")[1]))
    lake = json.loads(answers[0])
    assert lake["status"] == "succeeded" and [w["code"] for w in lake["warnings"]] == ["sas_expiring"]
    assert json.loads(answers[4])["error"]["code"] == "authentication_failed"
    signature = next(part for part in sas.split("&") if part.startswith("sig="))[4:]
    secrets = ["alex-secret-pw", "wrong-secret-pw", AZURITE_KEY, signature]
    from urllib.parse import unquote

    secrets.append(unquote(signature))
    logs = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    for secret in secrets:
        assert secret not in logs
        for answer in answers:
            assert secret not in answer


def test_preview_and_reset_over_http(env: dict[str, Any], demo_db: Path) -> None:
    apply(env, demo_db, {"delta": {"file_name": "d_{run_id}", "run_type": "full_then_delta", "sync_mode": "upsert"}})
    status, preview = http("preview_activation", "POST", "/x", {"id": "delta"})
    assert status == 200 and preview["full"] is True and preview["rows"]["exported"] == 500
    [file] = preview["files"]
    assert file["rows"] == 500 and file["path"].startswith("d_") and file["bytes"] > 0
    first = run_now("delta")  # the preview moved no state: this is still the first, full run
    assert first["full"] is True and first["rows"]["exported"] == 500
    assert [b.name for b in env["blobs"].list_blobs()] == [first["files"][0]["path"]]  # nothing from the preview
    assert run_now("delta")["rows"]["exported"] == 0  # nothing changed since
    status, body = http("reset_activation", "POST", "/x", {"id": "delta"})
    assert (status, body) == (200, {"activation": "delta", "reset": True, "next_run": "full"})
    after = run_now("delta")
    assert after["full"] is True and after["rows"]["exported"] == 500
    status, body = http("reset_activation", "POST", "/x", {"id": "nope"})
    assert status == 404
