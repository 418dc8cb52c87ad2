"""SFTP through the real triggers: the catalog put over HTTP, the timer's fan-out, the queue runner,
an HTTP run and preview, files on OpenSSH's sshd, and the key, its passphrase and the password
kept out of every log and answer."""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import T0, apply, deliver, get_run, http, messages, tick
from tests.integration.sftp_target import SftpTarget

pytest_plugins = ["tests.integration.conftest_sftp"]


def rows(path: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_text())))[1:]


def test_scheduler_runner_and_http_over_sftp(
    env: dict[str, Any],
    demo_db: Path,
    sftp_server: SftpTarget,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for name, value in sftp_server.env("pem-passphrase").items():
        monkeypatch.setenv(name, value)
    folder = f"functions-{env['container'][:12]}"
    destinations = {"out": sftp_server.destination(key="pem-passphrase")}
    apply(
        env,
        demo_db,
        {"hourly": {"file_name": "h_{YYYY}{MM}{DD}{HH}", "schedule": "0 * * * *", "folder": folder, "manifest": True}},
        destinations=destinations,
    )
    caplog.set_level(logging.DEBUG)
    tick(monkeypatch, T0)
    [message] = messages(env)
    assert message["run_id"] == "hourly-20250414T060000Z"
    deliver(message)
    record = get_run("hourly-20250414T060000Z")
    assert record["status"] == "succeeded", record
    stored = sftp_server.root / "home/alex" / folder / "h_2025041406.csv"
    assert [f["path"] for f in record["files"]] == [f"{folder}/h_2025041406.csv"]
    assert len(rows(stored)) == 500
    manifest = json.loads((stored.parent / "h_2025041406.manifest.json").read_text())
    assert manifest["files"] == record["files"]

    status, preview = http("preview_activation", "POST", "/x", {"id": "hourly"})
    assert status == 200 and preview["rows"]["exported"] == 500
    status, started = http("run_activation", "POST", "/x", {"id": "hourly"})
    assert status == 202 and started["status"] == "queued", started
    [manual] = messages(env)  # the HTTP run is queued; the runner delivers it to the same server
    deliver(manual)
    assert get_run(started["run_id"])["status"] == "succeeded"
    answers = [
        json.dumps(preview),
        json.dumps(started),
        json.dumps(record),
        json.dumps(http("get_activation", "GET", "/x", {"id": "hourly"})[1]),
    ]
    logs = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    for secret in sftp_server.secrets():
        assert secret not in logs
        for answer in answers:
            assert secret not in answer
