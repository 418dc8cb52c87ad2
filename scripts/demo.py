"""The end-to-end demo: local Azurite and FTP server, the demo DuckDB model, two exports.

Run it with `make demo`. It builds `examples/demo.duckdb` (100,000 customers) if missing, starts
Azurite and an FTP server on free loopback ports, applies `examples/catalog.yaml`, runs both
activations through the CLI, shows the run records, lists the files on both destinations and
prints the first lines of the CSV, then stops the services it started.
"""

from __future__ import annotations

import ftplib
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from devtools.services import Azurite, FtpServer, FtpUser  # noqa: E402
from examples.make_demo import build  # noqa: E402

WORK = REPO / ".demo"


def banner(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def core(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=REPO, env=env, text=True,
                          stdout=subprocess.PIPE)


def main() -> int:
    database = REPO / "examples" / "demo.duckdb"
    if not database.exists():
        banner("building examples/demo.duckdb (100,000 customers)")
        build(database)
    WORK.mkdir(exist_ok=True)
    password = secrets.token_urlsafe(12)
    with Azurite.start(WORK / "azurite") as azurite, \
            FtpServer.start(WORK / "ftp" / "root", [FtpUser("alex", password, "/home/alex")]) as ftp:
        banner(f"Azurite on 127.0.0.1:{azurite.blob_port}, FTP server on 127.0.0.1:{ftp.port}")
        doc = yaml.safe_load((REPO / "examples" / "catalog.yaml").read_text(encoding="utf-8"))
        doc["sources"]["warehouse"]["database"] = str(database)
        doc["destinations"]["partner_ftp"]["port"] = ftp.port
        catalog = WORK / "catalog.yaml"
        catalog.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
        env = dict(os.environ, FILECAST_LOCAL_SETTINGS=os.devnull, AzureWebJobsStorage=azurite.connection_string,
                   DEMO_EXPORT_STORAGE=azurite.connection_string, DEMO_FTP_PASSWORD=password, PYTHONPATH=str(REPO))

        banner("python -m core validate --probe examples/catalog.yaml")
        if core("validate", "--probe", str(catalog), env=env).returncode != 0:
            return 1
        banner("python -m core apply (stores the catalog in Azurite's tables)")
        if core("apply", str(catalog), env=env).returncode != 0:
            return 1
        failed = False
        for activation in ("customers_to_ftp", "customers_to_lake"):
            banner(f"python -m core run {activation}")
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

        banner("blobs in Azurite, container `exports`")
        from azure.storage.blob import BlobServiceClient

        container = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client("exports")
        for blob in container.list_blobs():
            print(f"  {blob.name}  {blob.size} bytes  {blob.content_settings.content_type}")

        banner("python -m core runs customers_to_lake (history kept in Table Storage)")
        history = json.loads(core("runs", "customers_to_lake", env=env).stdout)
        for record in history:
            print(f"  {record['run_id']}  {record['status']}  {record['rows']['exported']} rows  "
                  f"{record['finished_at']}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
