"""The `filecast` command as a user runs it: options, unknown ids, stored catalogs, Ctrl-C, progress.

Each test runs the CLI in a fresh process (tests/helpers.py `cli`) or through the installed
`filecast` script, and checks what the user sees: exit codes, stdout's run record, stderr's lines.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from devtools.services import Azurite, ServiceUnavailable
from tests.helpers import REPO, cli, run_record, unavailable, write_catalog

FILECAST = Path(sys.executable).parent / "filecast"


def lake_catalog(database: str, *, sql: str | None = None, container: str = "cli", **activation: Any) -> dict[str, Any]:
    model: dict[str, Any] = {"source": "warehouse", "primary_key": ["customer_id"]}
    model.update({"sql": sql} if sql else {"table": "customers"})
    return {
        "sources": {"warehouse": {"type": "duckdb", "database": database}},
        "models": {"customers": model},
        "destinations": {
            "lake": {
                "type": "azure_blob",
                "container": container,
                "connection_setting": "CLI_STORAGE",
                "create_container": True,
            }
        },
        "activations": {
            "to_lake": {
                "model": "customers",
                "destination": "lake",
                "file_name": "customers",
                "format": "csv",
                **activation,
            }
        },
    }


@pytest.fixture
def env(azurite: Azurite) -> dict[str, str]:
    return {
        "AzureWebJobsStorage": azurite.connection_string,
        "CLI_STORAGE": azurite.connection_string,
        "FILECAST_TABLE_PREFIX": "cli" + os.urandom(3).hex(),
    }


def test_the_filecast_command_works_from_any_folder(tmp_path: Path, demo_db: Path) -> None:
    assert FILECAST.exists(), "`make setup` installs the project (`pip install -e .`), which gives `filecast`"
    path = write_catalog(tmp_path / "catalog.yaml", lake_catalog(str(demo_db)))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"FILECAST_LOCAL_SETTINGS": os.devnull}
    helped = subprocess.run([str(FILECAST), "--help"], capture_output=True, text=True, cwd=elsewhere, env=env)
    assert helped.returncode == 0 and helped.stdout.startswith("usage: filecast")
    for command in ("validate", "apply", "run", "preview", "reset", "runs"):
        assert command in helped.stdout
    checked = subprocess.run(
        [str(FILECAST), "validate", str(path)], capture_output=True, text=True, cwd=elsewhere, env=env
    )
    assert checked.returncode == 0, checked.stderr
    assert checked.stderr.strip() == f"{path}: valid (1 activations)"


@pytest.mark.parametrize("value", ["0", "-1", "many"])
def test_runs_limit_must_be_a_positive_whole_number(value: str) -> None:
    started = time.monotonic()
    result = cli("runs", "anything", "--limit", value)
    assert result.returncode == 2
    assert f"argument --limit: `{value}` is not a whole number of at least 1" in result.stderr
    assert "usage: filecast runs [-h] [--limit N] activation" in result.stderr
    assert time.monotonic() - started < 60  # `--limit 0` used to spin at full CPU


def test_an_unknown_activation_exits_2_in_every_subcommand(tmp_path: Path, demo_db: Path, env: dict[str, str]) -> None:
    path = write_catalog(tmp_path / "catalog.yaml", lake_catalog(str(demo_db)))
    expected = "error: no activation `nope` in the catalog; activations are: to_lake"
    args: tuple[str, ...]
    for args in (
        ("run", "nope", "--catalog", str(path)),
        ("preview", "nope", "--catalog", str(path)),
        ("reset", "nope", "--catalog", str(path)),
    ):
        result = cli(*args, env=env)
        assert (result.returncode, result.stderr.strip().splitlines()[-1]) == (2, expected), args
    assert cli("apply", str(path), env=env).returncode == 0
    for args in (("run", "nope"), ("preview", "nope"), ("reset", "nope"), ("runs", "nope")):
        result = cli(*args, env=env)
        assert (result.returncode, result.stderr.strip().splitlines()[-1]) == (2, expected), args
        assert result.stdout == "", args
    known = cli("runs", "to_lake", env=env)
    assert known.returncode == 0 and json.loads(known.stdout) == []


def test_apply_then_run_from_another_folder_reads_the_database_the_catalog_named(
    tmp_path: Path, demo_db: Path, env: dict[str, str]
) -> None:
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    shutil.copyfile(demo_db, project / "data" / "warehouse.duckdb")
    path = write_catalog(project / "catalog.yaml", lake_catalog("data/warehouse.duckdb"))
    applied = cli("apply", str(path), env=env, cwd=tmp_path)
    assert applied.returncode == 0, applied.stderr
    # Outside the app folder: this machine reads it, the Function App would not: `apply` says so.
    assert (
        f"warning: sources.warehouse.database: `{project / 'data' / 'warehouse.duckdb'}` is outside the app "
        f"folder `{REPO}`"
    ) in applied.stderr
    assert "a DuckDB database is a file deployed with the app" in applied.stderr
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    result = cli("run", "to_lake", env=env, cwd=elsewhere)
    record = run_record(result)
    assert result.returncode == 0, record["error"]
    assert record["rows"]["exported"] == 100_000


def test_a_catalog_applied_inside_the_app_folder_resolves_against_it_from_anywhere(
    tmp_path: Path, env: dict[str, str]
) -> None:
    # examples/catalog.yaml names `demo.duckdb` next to it: stored relative to the app's root, as
    # the Function App (whose root holds the same files) resolves it.
    result = cli("apply", str(REPO / "examples" / "catalog.yaml"), env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "warning:" not in result.stderr


def test_azure_errors_carry_the_service_message(tmp_path: Path, demo_db: Path) -> None:
    flags = tuple(f for f in Azurite.FLAGS if f != "--skipApiVersionCheck")
    try:
        strict = Azurite.start(tmp_path / "azurite", flags=flags)
    except ServiceUnavailable as exc:
        unavailable("Azurite", exc)
    with strict:
        path = write_catalog(tmp_path / "catalog.yaml", lake_catalog(str(demo_db)))
        result = cli("run", "to_lake", "--catalog", str(path), env={"CLI_STORAGE": strict.connection_string})
    record = run_record(result)
    assert result.returncode == 1
    message = record["error"]["message"]
    assert "HTTP 400 (InvalidHeaderValue); the service said: The API version" in message
    assert "--skipApiVersionCheck" in message
    assert "AccountKey" not in message and "Eby8vdM02x" not in message


def test_ctrl_c_ends_with_one_line_exit_130_and_a_record_of_what_was_published(
    tmp_path: Path, env: dict[str, str]
) -> None:
    # A model slow enough to be interrupted mid-stream: 30 M computed rows.
    slow = "select i as customer_id, md5(i::varchar) as name from range(30000000) t(i)"
    database = tmp_path / "empty.duckdb"
    import duckdb

    duckdb.connect(str(database)).close()
    path = write_catalog(tmp_path / "catalog.yaml", lake_catalog(str(database), sql=slow, container="interrupted"))
    assert cli("apply", str(path), env=env).returncode == 0
    full_env = dict(os.environ, PYTHONPATH=str(REPO), FILECAST_LOCAL_SETTINGS=os.devnull, **env)
    process = subprocess.Popen(
        [sys.executable, "-m", "core", "run", "to_lake"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
        cwd=tmp_path,
    )
    time.sleep(4)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == (
        "interrupted: the run was interrupted before anything was published: "
        "the destination is unchanged and the delta state did not advance"
    )
    from azure.storage.blob import BlobServiceClient

    container = BlobServiceClient.from_connection_string(env["CLI_STORAGE"]).get_container_client("interrupted")
    assert [b.name for b in container.list_blobs()] == []  # staged blocks only: never visible
    record = json.loads(out)
    assert record["status"] == "failed" and record["files"] == []
    assert record["error"]["code"] == "interrupted"
    [stored] = json.loads(cli("runs", "to_lake", env=env).stdout)
    assert stored["run_id"] == record["run_id"] and stored["error"]["code"] == "interrupted"


def _on_a_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """Run the CLI with stderr on a pseudo-terminal (stdout a pipe), as a user at a shell sees it."""
    main, secondary = pty.openpty()
    full_env = dict(os.environ, PYTHONPATH=str(REPO), FILECAST_LOCAL_SETTINGS=os.devnull, **env)
    process = subprocess.Popen(
        [sys.executable, "-m", "core", *args], stdout=subprocess.PIPE, stderr=secondary, env=full_env, cwd=REPO
    )
    os.close(secondary)
    chunks: list[bytes] = []
    while True:
        ready, _, _ = select.select([main], [], [], 120)
        if not ready:
            break
        try:
            chunk = os.read(main, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    out = process.stdout.read().decode() if process.stdout else ""
    process.wait(timeout=60)
    os.close(main)
    return process.returncode, out, b"".join(chunks).decode()


def test_the_progress_line_is_cleared_before_log_lines_and_a_final_line_closes_the_run(
    tmp_path: Path, env: dict[str, str]
) -> None:
    database = tmp_path / "empty.duckdb"
    import duckdb

    duckdb.connect(str(database)).close()
    sql = "select i as customer_id, md5(i::varchar) as name from range(3000000) t(i)"
    path = write_catalog(tmp_path / "catalog.yaml", lake_catalog(str(database), sql=sql))
    code, out, terminal = _on_a_terminal(["run", "to_lake", "--catalog", str(path)], env)
    assert code == 0, terminal
    assert json.loads(out)["status"] == "succeeded"
    assert "rows read," in terminal  # the live line was drawn
    # Every log line starts on a clean line: right after a newline, or after the progress line was cleared.
    for match in re.finditer(r"(INFO|WARNING) core\.", terminal):
        before = terminal[: match.start()]
        assert before == "" or before.endswith(("\n", "\r\x1b[K")), repr(before[-80:])
    last = terminal.replace("\r\n", "\n").rstrip("\n").split("\n")[-1]
    assert re.fullmatch(
        r"(\r\x1b\[K)?to_lake: succeeded, 3,000,000 rows read, 3,000,000 exported in 1 file "
        r"\([0-9.]+ MB\) in [0-9.]+ s",
        last,
    ), repr(last)


def test_validate_probe_reports_static_and_column_problems_together(tmp_path: Path, demo_db: Path) -> None:
    doc = lake_catalog(str(demo_db), schedule="0 25 * * *")
    doc["activations"]["mapped"] = {
        "model": "customers",
        "destination": "lake",
        "file_name": "m",
        "format": "csv",
        "mapping": [{"from": "nme", "to": "name"}],
    }
    path = write_catalog(tmp_path / "catalog.yaml", doc)
    result = cli("validate", "--probe", str(path))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: the catalog has 2 problems:",
        "  - activations.to_lake.schedule: `0 25 * * *`: the hour `25` is out of range (0-23)",
        '  - activations.mapped.mapping[0].from: unknown column "nme"; columns are: customer_id, first_name, '
        "last_name, email, phone, age, country, plan, vip, lifetime_value, signup_date, last_seen_at, notes, "
        "is_active",
    ]


def test_gzip_parts_in_azure_are_bounded_as_stored_and_served_as_gzip(
    tmp_path: Path, demo_db: Path, env: dict[str, str]
) -> None:
    import gzip

    import duckdb
    from azure.storage.blob import BlobServiceClient

    limit = 500_000
    path = write_catalog(
        tmp_path / "catalog.yaml",
        lake_catalog(str(demo_db), container="gzipped", compression="gzip", max_file_size=limit),
    )
    result = cli("run", "to_lake", "--catalog", str(path), env=env)
    record = run_record(result)
    assert result.returncode == 0, record["error"]
    container = BlobServiceClient.from_connection_string(env["CLI_STORAGE"]).get_container_client("gzipped")
    blobs = sorted(container.list_blobs(), key=lambda b: b.name)
    assert [b.name for b in blobs] == [f["path"] for f in record["files"]] and len(blobs) > 3
    for blob in blobs:
        assert blob.content_settings.content_type == "application/gzip"
        assert blob.content_settings.content_encoding is None
        assert blob.size <= limit
    assert min(b.size for b in blobs[:-1]) >= limit * 0.99  # filled to the limit as stored
    for blob in blobs:
        data = gzip.decompress(container.download_blob(blob.name).readall())
        (tmp_path / blob.name.removesuffix(".gz")).write_bytes(data)
    rows = duckdb.execute(f"select count(*), count(distinct customer_id) from read_csv('{tmp_path}/customers-*.csv')")
    assert rows.fetchall() == [(100_000, 100_000)]
