"""The Azure Blob Storage destination against Azurite: authentication, streaming, atomicity, faults.

What is real here: Azurite (HTTP with the account key and with SAS tokens signed by
`generate_container_sas`; HTTPS with `--oauth basic` for the managed identity), the storage SDK's
whole pipeline, and the engine for the runs. What is injected: faults. `FaultyTransport` is the
SDK's own aiohttp transport that sends chosen requests to a local fault server instead (it
answers 503/429/500 with a storage error body, or drops the connection) or to a closed port, and
can hold `Put Block` requests back to slow an upload down. The managed identity is
`DefaultAzureCredential` itself, finding an App Service identity endpoint (`IDENTITY_ENDPOINT`,
`IDENTITY_HEADER`) served by the test, whose tokens Azurite checks (issuer, audience, lifetime;
not the signature).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit, urlunsplit

import aiohttp
import pytest
from aiohttp import web
from azure.core.credentials import AccessToken
from azure.core.exceptions import ResourceNotFoundError
from azure.core.pipeline.transport import AioHttpTransport
from azure.identity import CredentialUnavailableError
from azure.storage.blob import BlobServiceClient, generate_container_sas
from azure.storage.blob.aio import ContainerClient

from core.azure.retry import ExportRetry
from core.catalog.model import Destination as DestinationConfig
from core.catalog.parse import parse_catalog
from core.destinations import azure_blob
from core.destinations.azure_blob import AzureBlobDestination, BlobUpload
from core.errors import DestinationError
from core.run.engine import Run, RunResult
from core.run.records import RunRecord, new_run_id
from core.settings import Settings
from devtools.certs import make_ca
from devtools.services import AZURITE_ACCOUNT, AZURITE_KEY, Azurite, ServiceUnavailable, azurite_command, free_port
from devtools.services import wait_for_port as wait_for_service
from tests.helpers import cli, run_record, unavailable, write_catalog

AT = "2025-04-14T06:00:00Z"
KiB = 1024
FAST_RETRY: dict[str, Any] = {
    "retry_total": 3,
    "initial_backoff": 0.01,
    "increment_base": 1.0,
    "jitter": 0.0,
    "max_backoff": 0.05,
}


# ---------------------------------------------------------------- helpers


def service(azurite: Azurite) -> BlobServiceClient:
    return BlobServiceClient.from_connection_string(azurite.connection_string)


@pytest.fixture
def container(azurite: Azurite) -> str:
    name = f"t-{uuid.uuid4().hex[:12]}"
    service(azurite).create_container(name)
    return name


def config(container: str, **auth: Any) -> DestinationConfig:
    return DestinationConfig("lake", "azure_blob", container=container, **auth)


def sas_url(
    azurite: Azurite,
    container: str,
    permission: str = "racwl",
    *,
    expiry: timedelta = timedelta(days=30),
    start: timedelta | None = None,
) -> str:
    now = datetime.now(UTC)
    token = generate_container_sas(
        AZURITE_ACCOUNT,
        container,
        account_key=AZURITE_KEY,
        permission=permission,
        expiry=now + expiry,
        start=None if start is None else now + start,
    )
    return f"{azurite.endpoint('blob')}/{container}?{token}"


def sig_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["sig"][0]


def fast(**options: Any) -> dict[str, Any]:
    return {"retry_policy": ExportRetry(**FAST_RETRY), **options}


def payload(size: int, seed: int = 0) -> bytes:
    """Deterministic bytes that differ at every offset (a shifted block would show)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


RAGGED = (1000, 70 * KiB, 3, 300 * KiB)


def pieces(data: bytes, sizes: tuple[int, ...] = RAGGED) -> Iterator[bytes]:
    """`data` in ragged writes, as an encoder produces them."""
    offset, index = 0, 0
    while offset < len(data):
        size = sizes[index % len(sizes)]
        yield data[offset : offset + size]
        offset, index = offset + size, index + 1


async def send(upload: BlobUpload, data: bytes, sizes: tuple[int, ...] = RAGGED) -> None:
    for piece in pieces(data, sizes):
        await upload.write(piece)
    await upload.finish(len(data), hashlib.md5(data).digest())


async def put_file(
    destination: AzureBlobDestination,
    path: str,
    data: bytes,
    content_type: str = "text/csv; charset=utf-8",
    sizes: tuple[int, ...] = RAGGED,
) -> None:
    async with destination:
        upload = await destination.open(path, content_type=content_type)
        await send(upload, data, sizes)
        await upload.publish()


def read_blob(azurite: Azurite, container: str, name: str) -> bytes | None:
    try:
        return service(azurite).get_blob_client(container, name).download_blob().readall()
    except ResourceNotFoundError:
        return None


def committed_sizes(azurite: Azurite, container: str, name: str) -> list[int]:
    committed, _ = service(azurite).get_blob_client(container, name).get_block_list("committed")
    return [block.size for block in committed]


def error_of(coroutine: Awaitable[Any]) -> DestinationError:
    async def catch() -> DestinationError:
        with pytest.raises(DestinationError) as caught:
            await coroutine
        return caught.value

    return asyncio.run(catch())


# ---------------------------------------------------------------- fault injection


@dataclass
class FaultServer:
    """Answers as a throttled or failing storage endpoint would, or drops the connection."""

    runner: web.AppRunner | None = None
    port: int = 0
    hits: list[str] = field(default_factory=list)

    BODIES: ClassVar[dict[str, tuple[int, str, str]]] = {
        "503": (503, "ServerBusy", "Operations per second is over the account limit."),
        "429": (429, "TooManyRequests", "Too many requests."),
        "500": (500, "InternalError", "The server encountered an internal error."),
        "400": (400, "InvalidInput", "One of the request inputs is not valid."),
    }

    async def start(self) -> FaultServer:
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        kind = request.headers["x-filecast-fault"]
        self.hits.append(kind)
        await request.read()
        if kind == "reset":
            assert request.transport is not None
            request.transport.abort()  # the client sees the connection drop before any response
            return web.Response(status=500)
        status, code, message = self.BODIES[kind]
        body = f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code><Message>{message}</Message></Error>'
        headers = {"x-ms-error-code": code, "x-ms-request-id": str(uuid.uuid4())}
        if kind == "429":
            headers["Retry-After"] = "0"
        return web.Response(status=status, text=body, content_type="application/xml", headers=headers)


def operation(url: str) -> str:
    query = parse_qs(urlsplit(url).query)
    comp = query.get("comp", [""])[0]
    return {"block": "stage_block", "blocklist": "commit"}.get(comp, comp or "other")


class FaultyTransport(AioHttpTransport):
    """The SDK's aiohttp transport, with faults for chosen operations and an optional pause per block.

    `faults[op]` is consumed in order, one fault per request of that operation; a callable decides per
    request (it gets the operation's request count and the block id). Kinds: a status (`503`, `429`, `500`, `400`),
    `reset` (connection dropped by the fault server), `refused` (a closed port).
    """

    def __init__(self, server: FaultServer, faults: dict[str, Any] | None = None, *, pause: float = 0.0, **kwargs: Any):
        super().__init__(**kwargs)
        self.server = server
        self.faults: dict[str, Any] = {k: (v if callable(v) else list(v)) for k, v in (faults or {}).items()}
        self.pause = pause
        self.counts: dict[str, int] = {}
        self.in_flight = self.peak = 0
        self.sent: list[tuple[str, float]] = []
        self.closed_port = free_port()

    def _fault(self, op: str, url: str) -> str | None:
        count = self.counts[op] = self.counts.get(op, 0) + 1
        rule = self.faults.get(op)
        if callable(rule):
            block_id = parse_qs(urlsplit(url).query).get("blockid", [""])[0]
            return rule(count, base64.b64decode(block_id).decode())
        return rule.pop(0) if rule else None

    async def send(self, request: Any, **kwargs: Any) -> Any:
        op = operation(request.url)
        fault = self._fault(op, request.url)
        self.sent.append((op, time.monotonic()))
        if fault is None:
            if op == "stage_block":
                self.in_flight += 1
                self.peak = max(self.peak, self.in_flight)
                try:
                    if self.pause:
                        await asyncio.sleep(self.pause)
                    return await super().send(request, **kwargs)
                finally:
                    self.in_flight -= 1
            return await super().send(request, **kwargs)
        original = request.url
        parts = urlsplit(original)
        port = self.closed_port if fault == "refused" else self.server.port
        request.url = urlunsplit(parts._replace(netloc=f"127.0.0.1:{port}"))
        request.headers["x-filecast-fault"] = fault
        try:
            return await super().send(request, **kwargs)
        finally:
            request.url = original
            del request.headers["x-filecast-fault"]


@asynccontextmanager
async def fault_server() -> AsyncIterator[FaultServer]:
    server = await FaultServer().start()
    try:
        yield server
    finally:
        await server.stop()


# ---------------------------------------------------------------- runs through the engine


@pytest.fixture(scope="module")
def small_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40,000 demo customers: a CSV of about 5.7 MB."""
    from examples.make_demo import build

    return build(tmp_path_factory.mktemp("azure-db") / "small.duckdb", rows=40_000)


def run_doc(database: Path, container: str = "unused") -> dict[str, Any]:
    return {
        "sources": {"warehouse": {"type": "duckdb", "database": str(database)}},
        "models": {"customers": {"source": "warehouse", "table": "customers", "primary_key": ["customer_id"]}},
        "destinations": {
            "lake": {"type": "azure_blob", "container": container, "connection_setting": "EXPORT_STORAGE"}
        },
        "activations": {
            "export": {
                "model": "customers",
                "destination": "lake",
                "file_name": "export",
                "folder": "out",
                "format": "csv",
            }
        },
    }


async def run_export(database: Path, destination: AzureBlobDestination, *, retries: int = 0) -> RunResult:
    catalog = parse_catalog(run_doc(database))
    now = datetime.now(UTC)
    record = RunRecord(new_run_id(now), "export", "manual", now)
    return await Run(
        catalog, "export", Settings({}), record, destination=destination, retries=retries, backoff=0.01
    ).execute()


def cli_run(
    tmp_path: Path, database: Path, destination: dict[str, Any], env: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    doc = run_doc(database)
    doc["destinations"]["lake"] = destination
    path = write_catalog(tmp_path / "catalog.yaml", doc)
    result = cli("run", "export", "--catalog", str(path), "--at", AT, env=env)
    return result, run_record(result)


# ================================================================ authentication


def test_connection_string_streams_blocks_and_commits_with_type_and_md5(
    azurite: Azurite, container: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(azure_blob, "BLOCK_SIZE", 256 * KiB)
    data = payload(8 * 256 * KiB + 12_345)
    settings = Settings({"EXPORT_STORAGE": azurite.connection_string})
    destination = AzureBlobDestination(config(container, connection_setting="EXPORT_STORAGE"), settings)
    assert destination.description == f"azure_blob devstoreaccount1/{container}"
    asyncio.run(put_file(destination, "/daily/export.csv", data))  # ragged writes: 1000 B, 70 KiB, 3 B, 300 KiB…

    blob = service(azurite).get_blob_client(container, "daily/export.csv")
    assert blob.download_blob().readall() == data
    properties = blob.get_blob_properties()
    assert properties.content_settings.content_type == "text/csv; charset=utf-8"
    assert bytes(properties.content_settings.content_md5 or b"") == hashlib.md5(data).digest()
    *full, last = committed_sizes(azurite, container, "daily/export.csv")
    assert len(full) >= 4 and all(256 * KiB <= size < 3 * 256 * KiB for size in full) and last > 0
    assert destination.warnings == []

    asyncio.run(put_file(destination, "aligned.csv", data, sizes=(64 * KiB,)))  # writes that add up to blocks
    assert committed_sizes(azurite, container, "aligned.csv") == [256 * KiB] * 8 + [12_345]


def test_container_sas_url(azurite: Azurite, container: str) -> None:
    url = sas_url(azurite, container, "cw")
    destination = AzureBlobDestination(config(container, sas_url_setting="EXPORT_SAS"), Settings({"EXPORT_SAS": url}))
    data = payload(100_000, seed=1)
    asyncio.run(put_file(destination, "sas/export.json", data, "application/json"))
    assert read_blob(azurite, container, "sas/export.json") == data
    assert destination.warnings == []


def test_sas_expiring_within_seven_days_is_a_warning_on_the_run(
    azurite: Azurite, container: str, small_db: Path, tmp_path: Path
) -> None:
    url = sas_url(azurite, container, "cw", expiry=timedelta(days=3))
    result, record = cli_run(
        tmp_path,
        small_db,
        {"type": "azure_blob", "container": container, "sas_url_setting": "EXPORT_SAS"},
        {"EXPORT_SAS": url},
    )
    assert result.returncode == 0, result.stderr
    assert record["status"] == "succeeded"
    [warning] = [w for w in record["warnings"] if w["code"] == "sas_expiring"]
    assert warning["message"].startswith("the SAS token in app setting `EXPORT_SAS` expires at ")
    assert "(in 3.0 days): generate a new one and update the setting before then" in warning["message"]
    assert read_blob(azurite, container, "out/export.csv") is not None
    assert sig_of(url) not in result.stdout + result.stderr


def test_expired_sas_is_refused_before_any_work(
    azurite: Azurite, container: str, small_db: Path, tmp_path: Path
) -> None:
    url = sas_url(azurite, container, "cw", expiry=timedelta(hours=-2))
    result, record = cli_run(
        tmp_path,
        small_db,
        {"type": "azure_blob", "container": container, "sas_url_setting": "EXPORT_SAS"},
        {"EXPORT_SAS": url},
    )
    assert result.returncode == 1
    assert record["status"] == "failed" and record["files"] == []
    assert record["error"]["code"] == "sas_expired"
    message = record["error"]["message"]
    assert message.startswith("the SAS token in app setting `EXPORT_SAS` expired at ")
    assert message.endswith(": generate a new one with write (`w`) and create (`c`) permissions and update the setting")
    assert record["rows"]["read"] == 0
    assert sig_of(url) not in result.stdout + result.stderr
    assert list(service(azurite).get_container_client(container).list_blobs()) == []


def test_expired_sas_sends_no_request(azurite: Azurite, container: str) -> None:
    url = sas_url(azurite, container, "cw", expiry=timedelta(minutes=-1))

    async def attempt() -> list[tuple[str, float]]:
        async with fault_server() as server:
            transport = FaultyTransport(server)
            with pytest.raises(DestinationError) as caught:
                AzureBlobDestination(
                    config(container, sas_url_setting="EXPORT_SAS"),
                    Settings({"EXPORT_SAS": url}),
                    client_options={"transport": transport},
                )
            assert caught.value.code == "sas_expired" and not caught.value.transient
            await transport.close()
            return transport.sent

    assert asyncio.run(attempt()) == []


def test_read_only_sas_is_refused_naming_the_missing_permissions(
    azurite: Azurite, container: str, small_db: Path, tmp_path: Path
) -> None:
    url = sas_url(azurite, container, "rl")
    result, record = cli_run(
        tmp_path,
        small_db,
        {"type": "azure_blob", "container": container, "sas_url_setting": "EXPORT_SAS"},
        {"EXPORT_SAS": url},
    )
    assert result.returncode == 1
    assert record["error"] == {
        "code": "permission_denied",
        "message": f"permission denied to write in container `{container}` of storage account `devstoreaccount1`: "
        "the SAS token in app setting `EXPORT_SAS` grants `rl` (read, list); it needs write (`w`) and "
        "create (`c`) permissions",
    }
    assert sig_of(url) not in result.stdout + result.stderr


def test_permission_refused_by_the_service_is_terminal_and_names_the_permission(
    azurite: Azurite, container: str
) -> None:
    """A create-only SAS passes the local check; Azurite refuses Put Block with 403."""
    url = sas_url(azurite, container, "c")
    destination = AzureBlobDestination(
        config(container, sas_url_setting="EXPORT_SAS"), Settings({"EXPORT_SAS": url}), client_options=fast()
    )
    error = error_of(put_file(destination, "denied.csv", payload(1000)))
    assert error.code == "permission_denied" and not error.transient
    assert error.message == (
        f"permission denied to write `denied.csv` in container `{container}` of storage account `devstoreaccount1` "
        "(AuthorizationPermissionMismatch): the SAS token in app setting `EXPORT_SAS` needs write (`w`) and create "
        "(`c`) permissions"
    )
    assert sig_of(url) not in error.message
    assert read_blob(azurite, container, "denied.csv") is None


def test_tampered_sas_signature_is_an_authentication_error(azurite: Azurite, container: str) -> None:
    url = sas_url(azurite, container, "cw")
    bad = url.replace("sig=", "sig=AAAA")
    destination = AzureBlobDestination(
        config(container, sas_url_setting="EXPORT_SAS"), Settings({"EXPORT_SAS": bad}), client_options=fast()
    )
    error = error_of(put_file(destination, "x.csv", payload(10)))
    assert error.code == "authentication_failed" and not error.transient
    assert error.message.startswith(
        f"not authorised to write `x.csv` in container `{container}` of storage account "
        "`devstoreaccount1`: the credential was refused (AuthorizationFailure); check that "
        "the SAS token in app setting `EXPORT_SAS` was signed with a current account key"
    )
    assert sig_of(bad) not in error.message and sig_of(url) not in error.message


def test_wrong_account_key_is_an_authentication_error(azurite: Azurite, container: str) -> None:
    wrong_key = base64.b64encode(b"not the account key, 64 bytes long..............................").decode()
    conn = azurite.connection_string.replace(AZURITE_KEY, wrong_key)
    destination = AzureBlobDestination(
        config(container, connection_setting="EXPORT_STORAGE"),
        Settings({"EXPORT_STORAGE": conn}),
        client_options=fast(),
    )
    error = error_of(put_file(destination, "x.csv", payload(10)))
    assert error.code == "authentication_failed" and not error.transient
    # Azure answers AuthenticationFailed; Azurite AuthorizationFailure. Both read the same to a user.
    assert error.message == (
        f"not authorised to write `x.csv` in container `{container}` of storage account `devstoreaccount1`: the "
        "credential was refused (AuthorizationFailure); check that app setting `EXPORT_STORAGE` holds the account's "
        "current connection string (keys may have been rotated)"
    )
    assert wrong_key not in error.message


@pytest.mark.parametrize(
    "value, message",
    [
        (
            "https://acct.blob.core.windows.net/exports",
            "app setting `EXPORT_SAS` has no SAS token: it must be the container URL followed by `?sv=…&sig=…`",
        ),
        (
            "OTHER",
            "the SAS URL in app setting `EXPORT_SAS` is for container `other`, but destination `lake` writes to "
            "container `exports`: use a SAS URL of `exports`",
        ),
    ],
    ids=["no-token", "other-container"],
)
def test_unusable_sas_urls_are_refused(azurite: Azurite, value: str, message: str) -> None:
    if value == "OTHER":
        value = sas_url(azurite, "other", "cw")
    with pytest.raises(DestinationError) as caught:
        AzureBlobDestination(config("exports", sas_url_setting="EXPORT_SAS"), Settings({"EXPORT_SAS": value}))
    assert caught.value.message == message and caught.value.code == "bad_credentials"


def test_missing_container_is_a_clear_terminal_error(azurite: Azurite) -> None:
    destination = AzureBlobDestination(
        config("nowhere-to-be-found", connection_setting="EXPORT_STORAGE"),
        Settings({"EXPORT_STORAGE": azurite.connection_string}),
        client_options=fast(),
    )
    error = error_of(put_file(destination, "x.csv", payload(10)))
    assert error.code == "not_found" and not error.transient
    assert error.message == (
        "container `nowhere-to-be-found` of storage account `devstoreaccount1` was not found "
        "while trying to write `x.csv` (ContainerNotFound): create it, or set "
        "`create_container: true` on the destination"
    )


def test_create_container(azurite: Azurite) -> None:
    name = f"new-{uuid.uuid4().hex[:10]}"
    settings = Settings({"EXPORT_STORAGE": azurite.connection_string})
    for _ in range(2):  # the second time it exists already
        destination = AzureBlobDestination(
            config(name, connection_setting="EXPORT_STORAGE", create_container=True), settings
        )
        asyncio.run(put_file(destination, "a.csv", b"a\n1\n"))
    assert read_blob(azurite, name, "a.csv") == b"a\n1\n"


# ---------------------------------------------------------------- managed identity over HTTPS


def _b64url(document: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(document).encode()).rstrip(b"=").decode()


def make_token(audience: str = "https://storage.azure.com", lifetime: int = 3600) -> str:
    """A JWT as Entra ID issues for storage; Azurite's basic OAuth checks all but the signature."""
    now = int(time.time())
    claims = {
        "aud": audience,
        "iss": "https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/",
        "iat": now - 60,
        "nbf": now - 60,
        "exp": now + lifetime,
        "oid": str(uuid.uuid4()),
        "appid": str(uuid.uuid4()),
        "ver": "1.0",
    }
    return f"{_b64url({'alg': 'RS256', 'typ': 'JWT'})}.{_b64url(claims)}.c2lnbmF0dXJl"


@dataclass
class HttpsAzurite:
    blob_url: str  # https://127.0.0.1:port/devstoreaccount1
    ca_file: Path  # the CA that signed Azurite's certificate


@pytest.fixture(scope="module")
def azurite_https(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpsAzurite]:
    """Azurite over HTTPS with `--oauth basic`: the only way it accepts bearer tokens."""
    workdir = tmp_path_factory.mktemp("azurite-https")
    ca = make_ca(workdir / "ca")
    cert = ca.issue(workdir, "azurite")
    ports = [free_port() for _ in range(3)]
    try:
        command = azurite_command()
    except ServiceUnavailable as exc:
        unavailable("Azurite", exc)
    with (workdir / "azurite.log").open("wb") as log:
        process = subprocess.Popen(
            [
                *command,
                "--inMemoryPersistence",
                "--disableTelemetry",
                "--skipApiVersionCheck",
                "--loose",
                "--oauth",
                "basic",
                "--cert",
                str(cert.cert),
                "--key",
                str(cert.key),
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(ports[0]),
                "--queueHost",
                "127.0.0.1",
                "--queuePort",
                str(ports[1]),
                "--tableHost",
                "127.0.0.1",
                "--tablePort",
                str(ports[2]),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
    service_handle = Azurite(process=process, blob_port=ports[0], queue_port=ports[1], table_port=ports[2])
    with service_handle:
        try:
            for port in ports:
                wait_for_service(port, process, "Azurite (HTTPS)")
        except ServiceUnavailable as exc:
            unavailable("Azurite over HTTPS", exc)
        url = f"https://127.0.0.1:{ports[0]}/{AZURITE_ACCOUNT}"
        conn = (
            f"DefaultEndpointsProtocol=https;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};BlobEndpoint={url};"
        )
        admin = BlobServiceClient.from_connection_string(conn, connection_verify=str(ca.cert))
        admin.create_container("identity")
        yield HttpsAzurite(url, ca.cert)


@dataclass
class IdentityEndpoint:
    """An App Service managed identity endpoint (`IDENTITY_ENDPOINT` + `IDENTITY_HEADER`)."""

    url: str
    header: str
    requests: list[dict[str, Any]]


@pytest.fixture
def identity_endpoint() -> Iterator[IdentityEndpoint]:
    requests: list[dict[str, Any]] = []
    secret = uuid.uuid4().hex

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
            requests.append(
                {"path": urlsplit(self.path).path, "query": query, "header": self.headers.get("X-IDENTITY-HEADER")}
            )
            if self.headers.get("X-IDENTITY-HEADER") != secret:
                self.send_error(401)
                return
            body = json.dumps(
                {
                    "access_token": make_token(query["resource"]),
                    "token_type": "Bearer",
                    "expires_on": str(int(time.time()) + 3600),
                    "resource": query["resource"],
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield IdentityEndpoint(f"http://127.0.0.1:{server.server_port}/msi/token", secret, requests)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def app_service_identity(identity_endpoint: IdentityEndpoint, monkeypatch: pytest.MonkeyPatch) -> IdentityEndpoint:
    """The environment a Function App with a system-assigned identity runs in, and nothing else."""
    for name in list(os.environ):
        if name.startswith(("AZURE_", "MSI_", "IDENTITY_", "IMDS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("IDENTITY_ENDPOINT", identity_endpoint.url)
    monkeypatch.setenv("IDENTITY_HEADER", identity_endpoint.header)
    return identity_endpoint


def test_managed_identity_through_default_azure_credential(
    azurite_https: HttpsAzurite, app_service_identity: IdentityEndpoint
) -> None:
    destination = AzureBlobDestination(
        config("identity", account_url=azurite_https.blob_url),
        Settings({}),
        client_options={"connection_verify": str(azurite_https.ca_file)},
    )
    data = payload(300_000, seed=7)
    asyncio.run(put_file(destination, "mi/export.csv", data))

    assert app_service_identity.requests, "DefaultAzureCredential never asked the identity endpoint"
    assert app_service_identity.requests[0]["query"] == {
        "api-version": "2019-08-01",
        "resource": "https://storage.azure.com",
    }
    conn = (
        f"DefaultEndpointsProtocol=https;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint={azurite_https.blob_url};"
    )
    blob = BlobServiceClient.from_connection_string(conn, connection_verify=str(azurite_https.ca_file)).get_blob_client(
        "identity", "mi/export.csv"
    )
    assert blob.download_blob().readall() == data
    assert bytes(blob.get_blob_properties().content_settings.content_md5 or b"") == hashlib.md5(data).digest()


def test_managed_identity_run_through_the_cli(
    azurite_https: HttpsAzurite, identity_endpoint: IdentityEndpoint, small_db: Path, tmp_path: Path
) -> None:
    """The production path end to end: catalog `account_url`, no secret, DefaultAzureCredential."""
    env = {
        "IDENTITY_ENDPOINT": identity_endpoint.url,
        "IDENTITY_HEADER": identity_endpoint.header,
        "SSL_CERT_FILE": str(azurite_https.ca_file),
    }
    result, record = cli_run(
        tmp_path, small_db, {"type": "azure_blob", "container": "identity", "account_url": azurite_https.blob_url}, env
    )
    assert result.returncode == 0, result.stderr
    [file] = record["files"]
    assert file["path"] == "out/export.csv" and file["rows"] == 40_000
    assert identity_endpoint.requests and identity_endpoint.header not in result.stdout + result.stderr


class StaticCredential:
    """An AsyncTokenCredential handing out one token, or failing as an unavailable identity does."""

    def __init__(self, token: str | None):
        self.token = token
        self.scopes: list[tuple[str, ...]] = []

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        if self.token is None:
            raise CredentialUnavailableError("ManagedIdentityCredential: no managed identity endpoint found.")
        return AccessToken(self.token, int(time.time()) + 3600)

    async def close(self) -> None:
        return None


def test_identity_token_for_another_audience_is_refused(azurite_https: HttpsAzurite) -> None:
    credential = StaticCredential(make_token("https://vault.azure.net"))
    destination = AzureBlobDestination(
        config("identity", account_url=azurite_https.blob_url),
        Settings({}),
        credential=credential,
        client_options=fast(connection_verify=str(azurite_https.ca_file)),
    )
    error = error_of(put_file(destination, "x.csv", b"x"))
    assert credential.scopes == [("https://storage.azure.com/.default",)]
    assert error.code == "authentication_failed" and not error.transient
    assert error.message.startswith(
        "not authorised to write `x.csv` in container `identity` of storage account `devstoreaccount1`"
    )
    assert "check that the Function App's managed identity is enabled" in error.message


def test_no_managed_identity_is_a_clear_terminal_error(azurite_https: HttpsAzurite) -> None:
    destination = AzureBlobDestination(
        config("identity", account_url=azurite_https.blob_url),
        Settings({}),
        credential=StaticCredential(None),
        client_options=fast(connection_verify=str(azurite_https.ca_file)),
    )
    error = error_of(put_file(destination, "x.csv", b"x"))
    assert error.code == "authentication_failed" and not error.transient
    assert error.message == (
        "cannot get a token to write `x.csv` in container `identity` of storage account `devstoreaccount1`: "
        "ManagedIdentityCredential: no managed identity endpoint found.; check that the Function App's managed "
        "identity is enabled (and `AZURE_CLIENT_ID` names it if it is user-assigned) and that the account's "
        "firewall lets this app in"
    )


def test_identity_needs_an_https_account_url(azurite: Azurite) -> None:
    with pytest.raises(DestinationError) as caught:
        AzureBlobDestination(
            config("exports", account_url=azurite.endpoint("blob")), Settings({}), credential=StaticCredential("t")
        )
    assert caught.value.message == (
        "`account_url` of destination `lake` must start with https://: a managed "
        "identity's token is only ever sent over HTTPS"
    )


# ================================================================ streaming, limits, atomicity


def test_blocks_are_staged_while_the_file_streams_and_nothing_is_visible_before_commit(
    azurite: Azurite, container: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(azure_blob, "BLOCK_SIZE", 64 * KiB)
    data = payload(40 * 64 * KiB, seed=3)

    async def scenario() -> tuple[int, int, list[int]]:
        async with fault_server() as server:
            transport = FaultyTransport(server, pause=0.02)
            destination = AzureBlobDestination(
                config(container, connection_setting="EXPORT_STORAGE"),
                Settings({"EXPORT_STORAGE": azurite.connection_string}),
                client_options={"transport": transport},
            )
            async with (
                destination,
                ContainerClient.from_connection_string(azurite.connection_string, container) as reader,
            ):
                upload = await destination.open("stream.csv", content_type="text/csv")
                buffered: list[int] = []
                for offset in range(0, len(data), 32 * KiB):
                    await upload.write(data[offset : offset + 32 * KiB])
                    buffered.append(upload._pending)
                staged_before_finish = transport.counts.get("stage_block", 0)
                await upload.finish(len(data), hashlib.md5(data).digest())
                blob = reader.get_blob_client("stream.csv")
                with pytest.raises(ResourceNotFoundError):
                    await blob.get_blob_properties()
                _, uncommitted = await blob.get_block_list("uncommitted")
                assert len(uncommitted) == 40
                await upload.publish()
                return staged_before_finish, transport.peak, buffered

    staged, peak, buffered = asyncio.run(scenario())
    assert staged >= 36  # all but the last few blocks went out while the writer was still writing
    assert peak == azure_blob.MAX_IN_FLIGHT  # blocks overlap, never more than the limit
    assert max(buffered) < 64 * KiB  # at most one block fills in memory besides those in flight
    assert read_blob(azurite, container, "stream.csv") == data


def test_block_budget_grows_blocks_then_refuses_a_file_too_large(
    azurite: Azurite, container: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The 50,000-block limit with a 1 KiB first block and a 40-block budget (same schedule, in miniature)."""
    monkeypatch.setattr(azure_blob, "BLOCK_SIZE", KiB)
    monkeypatch.setattr(azure_blob, "MAX_BLOCKS", 40)
    capacity = azure_blob.max_blob_size()
    assert capacity == KiB * (20 + 2 * 10 + 4 * 10)
    settings = Settings({"EXPORT_STORAGE": azurite.connection_string})

    def make() -> AzureBlobDestination:
        return AzureBlobDestination(config(container, connection_setting="EXPORT_STORAGE"), settings)

    fits = payload(capacity, seed=4)
    asyncio.run(put_file(make(), "fits.bin", fits, sizes=(512,)))
    assert read_blob(azurite, container, "fits.bin") == fits
    assert committed_sizes(azurite, container, "fits.bin") == [KiB] * 20 + [2 * KiB] * 10 + [4 * KiB] * 10

    error = error_of(put_file(make(), "too-big.bin", payload(capacity + 1, seed=5), sizes=(512,)))
    assert error.code == "file_too_large" and not error.transient
    assert error.message == (
        "`too-big.bin` is larger than one blob can hold when uploaded in blocks (40 blocks, "
        "80 KiB): set `max_file_size` on the activation to split it into parts"
    )
    assert read_blob(azurite, container, "too-big.bin") is None


def test_empty_file(azurite: Azurite, container: str) -> None:
    destination = AzureBlobDestination(
        config(container, connection_setting="EXPORT_STORAGE"), Settings({"EXPORT_STORAGE": azurite.connection_string})
    )
    asyncio.run(put_file(destination, "empty.ndjson", b"", "application/x-ndjson"))
    blob = service(azurite).get_blob_client(container, "empty.ndjson")
    properties = blob.get_blob_properties()
    assert properties.size == 0
    assert bytes(properties.content_settings.content_md5 or b"") == hashlib.md5(b"").digest()


def test_size_mismatch_is_detected(azurite: Azurite, container: str) -> None:
    destination = AzureBlobDestination(
        config(container, connection_setting="EXPORT_STORAGE"), Settings({"EXPORT_STORAGE": azurite.connection_string})
    )

    async def scenario() -> None:
        async with destination:
            upload = await destination.open("short.csv", content_type="text/csv")
            await upload.write(b"abc")
            await upload.finish(4, hashlib.md5(b"abcd").digest())

    error = error_of(scenario())
    assert error.message == "size mismatch for `short.csv`: the writer produced 4 bytes, 3 were staged"


def test_discarded_upload_leaves_no_blob_and_the_name_stays_usable(
    azurite: Azurite, container: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(azure_blob, "BLOCK_SIZE", 64 * KiB)
    settings = Settings({"EXPORT_STORAGE": azurite.connection_string})

    async def abort() -> None:
        destination = AzureBlobDestination(config(container, connection_setting="EXPORT_STORAGE"), settings)
        async with destination:
            upload = await destination.open("aborted.csv", content_type="text/csv")
            await upload.write(payload(5 * 64 * KiB + 10))
            await upload.finish(5 * 64 * KiB + 10, b"")
            await upload.discard()

    asyncio.run(abort())
    assert read_blob(azurite, container, "aborted.csv") is None
    assert [b.name for b in service(azurite).get_container_client(container).list_blobs()] == []
    data = payload(100_000, seed=9)
    asyncio.run(
        put_file(
            AzureBlobDestination(config(container, connection_setting="EXPORT_STORAGE"), settings),
            "aborted.csv",
            data,
            sizes=(32 * KiB,),
        )
    )
    assert read_blob(azurite, container, "aborted.csv") == data
    assert committed_sizes(azurite, container, "aborted.csv") == [64 * KiB, 100_000 - 64 * KiB]


@pytest.mark.parametrize("existing", [True, False], ids=["replacing", "new"])
def test_a_concurrent_reader_never_sees_partial_content(
    azurite: Azurite, container: str, small_db: Path, monkeypatch: pytest.MonkeyPatch, existing: bool
) -> None:
    """A real run, slowed to 30 ms per block, polled by a reader every few milliseconds."""
    monkeypatch.setattr(azure_blob, "BLOCK_SIZE", 128 * KiB)
    old = b"customer_id,first_name\n1,old\n"
    if existing:
        service(azurite).get_blob_client(container, "out/export.csv").upload_blob(old)

    async def scenario() -> tuple[RunResult, list[tuple[str, int]], FaultyTransport]:
        async with fault_server() as server:
            transport = FaultyTransport(server, pause=0.03)
            destination = AzureBlobDestination(
                config(container, connection_setting="EXPORT_STORAGE"),
                Settings({"EXPORT_STORAGE": azurite.connection_string}),
                client_options={"transport": transport},
            )
            seen: list[tuple[str, int]] = []
            done = asyncio.Event()

            async def reader() -> None:
                async with ContainerClient.from_connection_string(azurite.connection_string, container) as client:
                    blob = client.get_blob_client("out/export.csv")
                    while not done.is_set():
                        staged = transport.counts.get("stage_block", 0)
                        try:
                            content = await (await blob.download_blob()).readall()
                            seen.append(
                                ("old" if content == old else f"md5:{hashlib.md5(content).hexdigest()}", staged)
                            )
                        except ResourceNotFoundError:
                            seen.append(("absent", staged))
                        await asyncio.sleep(0.005)

            async def export() -> RunResult:
                try:
                    return await run_export(small_db, destination)
                finally:
                    done.set()

            result, _ = await asyncio.gather(export(), reader())
            return result, seen, transport

    result, seen, transport = asyncio.run(scenario())
    assert result.exception is None, result.record.error
    [file] = result.record.files
    new = f"md5:{file['md5']}"
    blocks = transport.counts["stage_block"]
    assert blocks >= 40
    before = "old" if existing else "absent"
    assert {outcome for outcome, _ in seen} <= {before, new}, "a reader saw content that is neither old nor new"
    during = [outcome for outcome, staged in seen if 0 < staged < blocks]
    assert len(during) >= 10 and set(during) == {before}  # polled all along the upload, never saw the new one early
    content = read_blob(azurite, container, "out/export.csv")
    assert content is not None and hashlib.md5(content).hexdigest() == file["md5"] and len(content) == file["bytes"]


@pytest.mark.parametrize("fault", ["400", "reset"])
def test_a_run_failing_mid_upload_keeps_the_old_blob(
    azurite: Azurite, container: str, small_db: Path, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    """A terminal refusal, or the connection dropping for good, after some blocks were staged."""
    monkeypatch.setattr(azure_blob, "BLOCK_SIZE", 256 * KiB)
    old = b"old content\n"
    blob = service(azurite).get_blob_client(container, "out/export.csv")
    blob.upload_blob(old, content_settings=None)
    old_md5 = blob.get_blob_properties().content_settings.content_md5

    async def scenario() -> RunResult:
        async with fault_server() as server:
            transport = FaultyTransport(server, {"stage_block": lambda n, block: fault if n >= 6 else None})
            destination = AzureBlobDestination(
                config(container, connection_setting="EXPORT_STORAGE"),
                Settings({"EXPORT_STORAGE": azurite.connection_string}),
                client_options=fast(transport=transport),
            )
            return await run_export(small_db, destination)

    result = asyncio.run(scenario())
    assert result.record.status == "failed" and result.record.files == []
    assert result.exception is not None
    assert result.exception.transient is (fault == "reset")
    assert read_blob(azurite, container, "out/export.csv") == old
    assert blob.get_blob_properties().content_settings.content_md5 == old_md5
    _, uncommitted = blob.get_block_list("uncommitted")
    assert len(uncommitted) >= 5  # staged, never committed: invisible, dropped by the service later


# ================================================================ throttling and network faults


def test_throttling_and_network_faults_are_retried_until_the_upload_succeeds(
    azurite: Azurite, container: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(azure_blob, "BLOCK_SIZE", 64 * KiB)
    data = payload(6 * 64 * KiB, seed=11)

    async def scenario() -> FaultServer:
        async with fault_server() as server:
            transport = FaultyTransport(
                server, {"stage_block": ["503", "429", "reset", "refused", "500", "503"], "commit": ["503", "reset"]}
            )
            destination = AzureBlobDestination(
                config(container, connection_setting="EXPORT_STORAGE"),
                Settings({"EXPORT_STORAGE": azurite.connection_string}),
                client_options=fast(transport=transport),
            )
            await put_file(destination, "retried.csv", data)
            return server

    with caplog.at_level(logging.WARNING, logger="core.destinations.azure_blob"):
        server = asyncio.run(scenario())
    # aiohttp itself resends an idempotent request once when a reused connection drops: count the statuses only.
    assert sorted(h for h in server.hits if h != "reset") == ["429", "500", "503", "503", "503"]
    assert "reset" in server.hits
    assert read_blob(azurite, container, "retried.csv") == data
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) == 8
    assert any(m.startswith("Azure Blob Storage: HTTP 503 ServerBusy for PUT /devstoreaccount1/") for m in retries)
    assert any("HTTP 429 TooManyRequests" in m for m in retries)


def test_too_much_throttling_fails_with_a_transient_error(azurite: Azurite, container: str) -> None:
    async def scenario() -> tuple[DestinationError, int]:
        async with fault_server() as server:
            transport = FaultyTransport(server, {"stage_block": lambda n, block: "503"})
            destination = AzureBlobDestination(
                config(container, connection_setting="EXPORT_STORAGE"),
                Settings({"EXPORT_STORAGE": azurite.connection_string}),
                client_options=fast(transport=transport),
            )
            with pytest.raises(DestinationError) as caught:
                await put_file(destination, "throttled.csv", payload(1000))
            return caught.value, len(server.hits)

    error, attempts = asyncio.run(scenario())
    assert attempts == FAST_RETRY["retry_total"] + 1
    assert error.transient and error.code == "destination_unavailable"
    assert error.message == (
        f"Azure Blob Storage kept refusing to write `throttled.csv` in container `{container}` of storage account "
        "`devstoreaccount1`: HTTP 503 (ServerBusy) after retrying with backoff; the account is throttling or "
        "unavailable, and the run will be retried"
    )
    assert read_blob(azurite, container, "throttled.csv") is None


def test_unreachable_endpoint_fails_with_a_transient_error(azurite: Azurite, container: str) -> None:
    async def scenario() -> DestinationError:
        async with fault_server() as server:
            transport = FaultyTransport(server, {"commit": lambda n, block: "refused"})
            destination = AzureBlobDestination(
                config(container, connection_setting="EXPORT_STORAGE"),
                Settings({"EXPORT_STORAGE": azurite.connection_string}),
                client_options=fast(transport=transport),
            )
            with pytest.raises(DestinationError) as caught:
                await put_file(destination, "unreachable.csv", payload(1000))
            return caught.value

    error = asyncio.run(scenario())
    assert error.transient and error.code == "destination_unavailable"
    assert error.message.startswith(
        f"cannot reach Azure Blob Storage (container `{container}` of storage account `devstoreaccount1`) to commit "
        "`unreachable.csv`: Cannot connect to host 127.0.0.1:"
    )
    assert error.message.endswith("(after retrying); check the account name or endpoint and the network path to it")
    assert read_blob(azurite, container, "unreachable.csv") is None


def test_the_engine_retries_a_run_that_exhausted_the_sdk_retries(
    azurite: Azurite, container: str, small_db: Path
) -> None:
    """The first block of the first attempt outlasts the SDK's three retries; the engine's second attempt succeeds."""
    first: list[str] = []

    def first_block_of_first_attempt(count: int, block: str) -> str | None:
        token = block.split("-")[1]
        first[:] = first or [token]
        return "503" if token == first[0] and block.endswith("-000000") else None

    async def scenario() -> tuple[RunResult, int]:
        async with fault_server() as server, aiohttp.ClientSession() as session:
            # The engine enters the destination once per attempt; a session it does not own survives that.
            transport = FaultyTransport(
                server, {"stage_block": first_block_of_first_attempt}, session=session, session_owner=False
            )
            destination = AzureBlobDestination(
                config(container, connection_setting="EXPORT_STORAGE"),
                Settings({"EXPORT_STORAGE": azurite.connection_string}),
                client_options=fast(transport=transport),
            )
            result = await run_export(small_db, destination, retries=1)
            return result, len(server.hits)

    result, hits = asyncio.run(scenario())
    assert hits == FAST_RETRY["retry_total"] + 1
    assert result.exception is None, result.record.error
    [file] = result.record.files
    content = read_blob(azurite, container, "out/export.csv")
    assert content is not None and hashlib.md5(content).hexdigest() == file["md5"]


# ================================================================ secrets


def test_no_key_or_signature_in_errors_or_logs(
    azurite: Azurite, container: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Every path that talks about a credential, with the SDK's own request logging switched on."""
    good = sas_url(azurite, container, "cw")
    create_only = sas_url(azurite, container, "c")
    expired = sas_url(azurite, container, "cw", expiry=timedelta(minutes=-5))
    secrets_ = [AZURITE_KEY, AZURITE_KEY[:20]]
    for url in (good, create_only, expired):  # each signature as sent (URL-encoded) and decoded
        secrets_ += [sig_of(url), url.split("sig=")[1].split("&")[0]]
    messages: list[str] = []

    async def scenario() -> None:
        async with fault_server() as server:

            def make(auth: dict[str, str], faults: dict[str, Any] | None = None) -> AzureBlobDestination:
                settings = Settings(
                    {
                        "EXPORT_STORAGE": azurite.connection_string,
                        "EXPORT_SAS": good,
                        "CREATE_ONLY": create_only,
                        "EXPIRED": expired,
                    }
                )
                options = fast(transport=FaultyTransport(server, faults), logging_enable=True)
                return AzureBlobDestination(config(container, **auth), settings, client_options=options)

            await put_file(make({"connection_setting": "EXPORT_STORAGE"}, {"stage_block": ["503"]}), "a.csv", b"a")
            await put_file(make({"sas_url_setting": "EXPORT_SAS"}, {"commit": ["reset"]}), "b.csv", b"b")
            for auth in ({"sas_url_setting": "CREATE_ONLY"}, {"sas_url_setting": "EXPIRED"}):
                try:
                    await put_file(make(auth), "c.csv", b"c")
                except DestinationError as exc:
                    messages.append(exc.message)

    with caplog.at_level(logging.DEBUG):
        asyncio.run(scenario())
    assert len(messages) == 2
    formatter = logging.Formatter("%(name)s %(message)s")
    logged = "\n".join(formatter.format(record) for record in caplog.records)
    assert "x-ms-version" in logged.lower()  # the SDK really logged its requests
    for secret in secrets_:
        assert secret not in logged
        for message in messages:
            assert secret not in message
