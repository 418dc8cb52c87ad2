"""One Azure boundary for destinations, state and stores, one scrubber for every mapper.

The Azure errors are the SDK's own: real `BlobClient`/`TableClient` calls against a loopback
server that answers each status the way Azure Storage does (error code header, XML or JSON body).
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from xml.sax.saxutils import escape

import aioftp
import asyncssh
import pytest
from azure.data.tables import TableClient
from azure.storage.blob import BlobClient

from core.azure.errors import Access, map_azure_errors
from core.catalog.model import Destination
from core.control import stores
from core.destinations.ftp_errors import FtpContext, map_ftp_errors
from core.destinations.sftp_errors import SftpContext, map_sftp_errors
from core.error_codes import ErrorCode
from core.errors import (
    DestinationError,
    DestinationUnavailable,
    FilecastError,
    SourceError,
    StateError,
    StateUnavailable,
)
from core.read.sources.adbc import classify
from core.scrub import scrub
from core.state import table_storage

KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
SECRETS = {
    "sas": "sv=2024-01-01&sig=SECRETSIG%2Babc&se=2030",
    "account key": f"AccountKey={KEY};",
    "connection string": "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=SECRETKEY/+=;EndpointSuffix=x",
    "password pair": "Server=db;User Id=u;Password=SECRETPW;",
    "uri password": "postgresql://alex:SECRETURIPW@db.example.com:5432/warehouse",
}
LEAKS = ("SECRETSIG", KEY, "SECRETKEY", "SECRETPW", "SECRETURIPW")
SAID = "The request was refused; it quoted " + " and ".join(SECRETS.values())


class _Azure(BaseHTTPRequestHandler):
    """Answers every request with `server.status`, as Azure Storage words an error."""

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        status, code = self.server.status  # type: ignore[attr-defined]
        if self.path.startswith("/devstoreaccount1/t"):  # Table Storage: OData JSON
            body = json.dumps({"odata.error": {"code": code, "message": {"lang": "en-US", "value": SAID}}}).encode()
            kind = "application/json;odata=minimalmetadata"
        else:
            body = (
                f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code><Message>{escape(SAID)}</Message>'
                "</Error>"
            ).encode()
            kind = "application/xml"
        self.send_response(status)
        self.send_header("x-ms-error-code", code)
        self.send_header("x-ms-request-id", "1")
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = do_MERGE = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def azure() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Azure)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _connection(port: int) -> str:
    endpoint = f"http://127.0.0.1:{port}/devstoreaccount1"
    return (
        f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={KEY};"
        f"BlobEndpoint={endpoint};TableEndpoint={endpoint};"
    )


def _blob_call(port: int) -> None:
    client = BlobClient.from_connection_string(
        _connection(port), "exports", "a.csv", retry_total=0, connection_timeout=5, read_timeout=5
    )
    client.upload_blob(b"a,b\n", overwrite=True)


def _table_call(port: int) -> None:
    client = TableClient.from_connection_string(
        _connection(port), "t", retry_total=0, connection_timeout=5, read_timeout=5
    )
    client.get_entity("p", "r")


CALLS = {"blob": _blob_call, "table": _table_call}
WHERE = "container `exports` of storage account `devstoreaccount1`"
MAPPERS: dict[str, tuple[Callable[[], AbstractContextManager[None]], type[FilecastError], type[FilecastError]]] = {
    "destinations": (
        lambda: map_azure_errors("write `a.csv`", WHERE, Access("connection_string", "EXPORT")),
        DestinationError,
        DestinationUnavailable,
    ),
    "state": (lambda: table_storage.map_azure_errors("reading the delta state of `x`"), StateError, StateUnavailable),
    "stores": (lambda: stores.map_table_errors("read run `x`"), StateError, StateUnavailable),
}
STATUSES = [
    (400, "InvalidInput", False),
    (401, "AuthenticationFailed", False),
    (403, "AuthorizationFailure", False),
    (403, "AuthorizationPermissionMismatch", False),
    (404, "ResourceNotFound", False),
    (409, "EntityAlreadyExists", False),
    (412, "UpdateConditionNotSatisfied", False),
    (429, "TooManyRequests", True),
    (500, "InternalError", True),
    (503, "ServerBusy", True),
]


def _mapped(mapper: str, call: str, port: int) -> FilecastError:
    boundary, _, _ = MAPPERS[mapper]
    with pytest.raises(FilecastError) as caught, boundary():
        CALLS[call](port)
    assert caught.value.__cause__ is not None  # translated from the SDK's error, not raised by Filecast
    return caught.value


@pytest.mark.parametrize("call", sorted(CALLS))
@pytest.mark.parametrize("status, code, transient", STATUSES, ids=[f"{s}-{c}" for s, c, _ in STATUSES])
def test_the_same_status_is_the_same_error_everywhere(
    azure: ThreadingHTTPServer, call: str, status: int, code: str, transient: bool
) -> None:
    azure.status = (status, code)  # type: ignore[attr-defined]
    port = azure.server_address[1]
    for mapper, (_, terminal, retried) in MAPPERS.items():
        error = _mapped(mapper, call, int(port))
        assert type(error) is (retried if transient else terminal), (mapper, call, type(error))
        assert error.transient is transient, (mapper, call)
        assert not any(leak in error.message for leak in LEAKS), (mapper, error.message)
    destination = _mapped("destinations", call, int(port))
    expected = {
        401: ErrorCode.AUTHENTICATION_FAILED,
        404: ErrorCode.NOT_FOUND,
        429: ErrorCode.DESTINATION_UNAVAILABLE,
        500: ErrorCode.DESTINATION_UNAVAILABLE,
        503: ErrorCode.DESTINATION_UNAVAILABLE,
    }.get(status)
    if status == 403:
        expected = ErrorCode.AUTHENTICATION_FAILED if code == "AuthorizationFailure" else ErrorCode.PERMISSION_DENIED
    assert destination.code == (expected or ErrorCode.DESTINATION_ERROR)
    assert _mapped("state", call, int(port)).code == _mapped("stores", call, int(port)).code == ErrorCode.STATE_ERROR


@pytest.mark.parametrize("call", sorted(CALLS))
def test_an_unreachable_account_is_transient_everywhere(call: str) -> None:
    port = _closed_port()
    for mapper, (_, _, retried) in MAPPERS.items():
        error = _mapped(mapper, call, port)
        assert type(error) is retried and error.transient, mapper
        assert KEY not in error.message
    assert _mapped("destinations", call, port).code == ErrorCode.DESTINATION_UNAVAILABLE
    assert _mapped("state", call, port).message.startswith(
        "reading the delta state of `x`: the storage account could not be reached (ServiceRequestError)"
    )


@pytest.mark.parametrize("call", sorted(CALLS))
def test_what_the_service_said_is_scrubbed(azure: ThreadingHTTPServer, call: str) -> None:
    azure.status = (400, "InvalidInput")  # type: ignore[attr-defined]
    for mapper in MAPPERS:
        error = _mapped(mapper, call, int(azure.server_address[1]))
        assert "The request was refused; it quoted" in error.message, (mapper, error.message)  # the words are kept
        assert "***" in error.message and not any(leak in error.message for leak in LEAKS), (mapper, error.message)


def test_filecast_errors_pass_through_every_azure_mapper() -> None:
    for mapper, (boundary, _, _) in MAPPERS.items():
        original = StateError("already mapped")
        with pytest.raises(StateError) as caught, boundary():
            raise original
        assert caught.value is original, mapper


# --- the one scrubber, in every mapper --------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SECRETS))
def test_the_scrubber_blanks_credentials_by_their_shape(name: str) -> None:
    cleaned = scrub(f"failed: {SECRETS[name]} (retrying)")
    assert not any(leak in cleaned for leak in LEAKS) and "***" in cleaned and cleaned.startswith("failed: ")


def test_the_scrubber_blanks_known_values_and_key_lines() -> None:
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAE\n-----END OPENSSH PRIVATE KEY-----"
    text = "bad: hunter2-pw b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAE ok"
    assert scrub(text, ["hunter2-pw", key, None, ""]) == "bad: *** *** ok"
    assert scrub("a b", ["a"]) == "a b"  # too short to be told from ordinary text


def _ftp_context(password: str) -> FtpContext:
    config = Destination(
        "partner", "ftp", host="ftp.example.com", port=21, username="alex", password_setting="FTP_PASSWORD"
    )
    return FtpContext(config, password, 10)


def test_ftp_messages_are_scrubbed() -> None:
    context = _ftp_context("s3cret-ftp-pw")
    reply = aioftp.StatusCodeError(
        aioftp.Code("2xx"), aioftp.Code("550"), ["550 denied for s3cret-ftp-pw; see https://x/?sig=SECRETSIG"]
    )
    with pytest.raises(DestinationError) as caught, map_ftp_errors(context, "write", "out/a.csv"):
        raise reply
    message = caught.value.message
    assert "s3cret-ftp-pw" not in message and "SECRETSIG" not in message and "denied for ***" in message
    assert caught.value.code == ErrorCode.PERMISSION_DENIED and not caught.value.transient


def test_sftp_messages_are_scrubbed() -> None:
    config = Destination(
        "partner", "sftp", host="sftp.example.com", port=22, username="alex", password_setting="SFTP_PASSWORD"
    )
    context = SftpContext(config, ["s3cret-sftp-pw"], 10)
    with pytest.raises(DestinationError) as caught, map_sftp_errors(context, "rename", "out/a.csv"):
        raise asyncssh.SFTPFailure("failure for s3cret-sftp-pw AccountKey=SECRETKEY;")
    assert caught.value.message == (
        "SFTP rename `out/a.csv` failed on sftp.example.com:22 (server said: failure for *** AccountKey=***;)"
    )


def test_source_messages_are_scrubbed() -> None:
    error = classify(
        Exception("connection to postgresql://alex:SECRETURIPW@db:5432/w failed for pw hunter2x"),
        "source `pg`",
        secrets=["hunter2x"],
    )
    assert isinstance(error, SourceError)
    assert "hunter2x" not in error.message and "SECRETURIPW" not in error.message
    assert "postgresql://alex:***@db:5432/w" in error.message


def test_the_ftp_and_sftp_mappers_share_the_network_failures() -> None:
    config = Destination("partner", "sftp", host="sftp.example.com", port=22, username="alex")
    for context, mapper in (
        (_ftp_context("pw-unused"), map_ftp_errors),
        (SftpContext(config, [], 10), map_sftp_errors),
    ):
        with pytest.raises(DestinationUnavailable) as caught, mapper(context, "connect"):  # type: ignore[arg-type]
            raise ConnectionRefusedError(111, "refused")
        assert caught.value.code == ErrorCode.CONNECTION_REFUSED
        assert caught.value.message == (
            f"connection refused by {context.host}: check `host`, `port` and that the {context.kind} server is running"
        )
        with pytest.raises(ValueError), mapper(context, "connect"):  # type: ignore[arg-type]
            raise ValueError("not a network error: propagates unchanged")
