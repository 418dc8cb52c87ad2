"""The end-to-end demo: local Azurite, FTP and SFTP servers, the demo DuckDB model, three exports.

Run it with `make demo`. It builds `examples/demo.duckdb` (100,000 customers) if missing, starts
Azurite, an FTP server and an SFTP server (asyncssh's, in this process: no root, no sshd) on free
loopback ports, pins the SFTP server's host key in the catalog, applies `examples/catalog.yaml`,
runs the three full exports through the CLI, shows the run records, lists the files on every
destination and prints the first lines of the CSV. Then the delta: it runs `french_adults_changes` once (every
French adult in `_added`), changes a few customers in a copy of the warehouse, runs it again and
prints the three change files. It stops the services it started.
"""

from __future__ import annotations

import ftplib
import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import yaml
from azure.storage.blob import BlobServiceClient, ContainerClient

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from devtools.services import Azurite, FtpServer, FtpUser  # noqa: E402
from devtools.sftpserver import SftpTestServer  # noqa: E402
from examples.make_demo import build  # noqa: E402

WORK = REPO / ".demo"


BOLD, PLAIN = ("\033[1m", "\033[0m") if sys.stdout.isatty() else ("", "")  # no escapes in a log file
# The `filecast` command `make setup` installs into the venv (`python -m core` is the same program).
FILECAST = (
    [str(Path(sys.executable).parent / "filecast")]
    if (Path(sys.executable).parent / "filecast").exists()
    else [sys.executable, "-m", "core"]
)


def banner(text: str) -> None:
    print(f"\n{BOLD}== {text}{PLAIN}", flush=True)


def core(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FILECAST, *args], cwd=REPO, env=env, text=True, stdout=subprocess.PIPE)


def main() -> int:
    database = REPO / "examples" / "demo.duckdb"
    if not database.exists():
        banner("building examples/demo.duckdb (100,000 customers)")
        build(database)
    WORK.mkdir(exist_ok=True)
    warehouse = WORK / "warehouse.duckdb"  # a copy: the delta part of the demo changes rows in it
    shutil.copyfile(database, warehouse)
    password = secrets.token_urlsafe(12)
    shutil.rmtree(WORK / "sftp", ignore_errors=True)
    with (
        Azurite.start(WORK / "azurite") as azurite,
        FtpServer.start(WORK / "ftp" / "root", [FtpUser("alex", password, "/home/alex")]) as ftp,
        SftpTestServer(WORK / "sftp" / "home" / "alex", {"alex": password}) as sftp,
    ):
        banner(
            f"Azurite on 127.0.0.1:{azurite.blob_port}, FTP server on 127.0.0.1:{ftp.port}, SFTP server on "
            f"127.0.0.1:{sftp.port} (host key {sftp.fingerprint})"
        )
        doc = yaml.safe_load((REPO / "examples" / "catalog.yaml").read_text(encoding="utf-8"))
        doc["sources"]["warehouse"]["database"] = str(warehouse)
        doc["destinations"]["partner_ftp"]["port"] = ftp.port
        doc["destinations"]["partner_sftp"].update(port=sftp.port, host_key=sftp.fingerprint)
        catalog = WORK / "catalog.yaml"
        catalog.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
        env = dict(
            os.environ,
            FILECAST_LOCAL_SETTINGS=os.devnull,
            AzureWebJobsStorage=azurite.connection_string,
            DEMO_EXPORT_STORAGE=azurite.connection_string,
            DEMO_FTP_PASSWORD=password,
            DEMO_SFTP_PASSWORD=password,
            PYTHONPATH=str(REPO),
        )

        banner("filecast validate --probe examples/catalog.yaml")
        if core("validate", "--probe", str(catalog), env=env).returncode != 0:
            return 1
        banner("filecast apply (stores the catalog in Azurite's tables)")
        if core("apply", str(catalog), env=env).returncode != 0:
            return 1
        failed = False
        for activation in ("customers_to_ftp", "customers_to_sftp", "customers_to_lake"):
            banner(f"filecast run {activation}")
            result = core("run", activation, env=env)
            print(result.stdout)
            failed |= result.returncode != 0

        banner("files on the FTP server (user alex, login directory /home/alex)")
        with ftplib.FTP() as client:
            client.connect("127.0.0.1", ftp.port)
            client.login("alex", password)
            client.cwd("exports/daily")
            for name, facts in client.mlsd():
                if facts.get("type") == "file":
                    print(f"  /home/alex/exports/daily/{name}  {facts.get('size')} bytes")
                    head: list[str] = []
                    client.retrlines(f"RETR {name}", head.append)
                    print("    " + "\n    ".join(head[:4]))

        banner("files on the SFTP server (user alex; published atomically, no temporary file left behind)")
        for path in sorted((sftp.root / "outbox").iterdir()):
            print(f"  outbox/{path.name}  {path.stat().st_size} bytes")

        banner("blobs in Azurite, container `exports`")
        container = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client("exports")
        for blob in container.list_blobs():
            print(f"  {blob.name}  {blob.size} bytes  {blob.content_settings.content_type}")

        failed |= not delta(container, env, warehouse)

        banner("filecast runs french_adults_changes (history kept in Table Storage)")
        history = json.loads(core("runs", "french_adults_changes", env=env).stdout)
        for record in history:
            rows = record["rows"]
            print(
                f"  {record['run_id']}  {record['status']}  read {rows['read']}, exported {rows['exported']} "
                f"(added {rows['added']}, updated {rows['updated']}, removed {rows['removed']})  "
                f"{record['finished_at']}"
            )
    ftp_files = WORK / "ftp" / "root" / "home" / "alex" / "exports" / "daily"
    banner("done: " + ("something failed, see above" if failed else "every step succeeded"))
    print(
        f"Stopped Azurite, the FTP server and the SFTP server. The FTP files are still in "
        f"{ftp_files.relative_to(REPO)}/ and the SFTP files in {(WORK / 'sftp').relative_to(REPO)}/; Azurite kept "
        "its blobs in memory, so they are gone (run `make demo` again to see them)."
    )
    return 1 if failed else 0


# Three changes among the French adults: one leaves (deleted), one changes a mapped column, one
# arrives (a new customer). The notes column is not mapped: changing it is not a change.
CHANGES = """
CREATE TEMP VIEW french_adults AS SELECT * FROM customers WHERE country = 'FR' AND age >= 18;
DELETE FROM customers WHERE customer_id = (SELECT min(customer_id) FROM french_adults);
UPDATE customers SET notes = 'called on Monday'
 WHERE customer_id = (SELECT max(customer_id) FROM french_adults WHERE plan = 'enterprise');
UPDATE customers SET plan = 'enterprise'
 WHERE customer_id = (SELECT max(customer_id) FROM french_adults WHERE plan <> 'enterprise');
INSERT INTO customers
 SELECT * REPLACE (1000001 AS customer_id, 'Inès' AS first_name, 'inès.1000001@example.com' AS email)
 FROM french_adults LIMIT 1;
"""


def delta(container: ContainerClient, env: dict[str, str], warehouse: Path) -> bool:
    """Two runs of the DIFFERENCE activation, with a change to the warehouse in between."""
    banner("filecast run french_adults_changes (first run: every French adult in _added)")
    first = core("run", "french_adults_changes", env=env)
    print(first.stdout)
    banner("changing the warehouse: one French adult deleted, one upgraded, one new, one unmapped note edited")
    with duckdb.connect(str(warehouse)) as con:
        con.execute(CHANGES)
    banner("filecast run french_adults_changes (second run: only the changes)")
    second = core("run", "french_adults_changes", env=env)
    print(second.stdout)
    if first.returncode != 0 or second.returncode != 0:
        return False
    run_id = json.loads(second.stdout)["run_id"]
    banner(f"the change files of run {run_id} (NDJSON)")
    for blob in container.list_blobs(name_starts_with=f"changes/french_adults/french_adults_{run_id}"):
        content = container.download_blob(blob.name).readall().decode()
        print(f"  {blob.name}  {blob.size} bytes")
        print("    " + ("\n    ".join(content.splitlines()) or "(no rows)"))
    return True


if __name__ == "__main__":
    sys.exit(main())
