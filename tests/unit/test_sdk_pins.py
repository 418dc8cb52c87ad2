"""Every private SDK use and every override, pinned: a library update that changes what Filecast
relies on fails here, naming the override and the version it was written against, instead of
failing at run time.

What is pinned, and where it is used:
- azure-data-tables: `TableClient._client.send_request` (core/azure/table_requests.py);
- azure-storage-blob: `ExportRetry.send` re-implements the storage retry loop
  (`AsyncStorageRetryPolicy.send`) and calls its `configure_retries`/`increment`
  (core/azure/retry.py);
- aioftp: `FtpClient` overrides `_open_connection`, `_do_pasv` and `get_stream`, reads `_stream`
  and uses `aioftp.common.SSLSessionBoundContext` (core/destinations/ftp_client.py);
- asyncssh: `_PinnedHostKey.validate_host_public_key` (core/destinations/sftp.py) and
  `SFTPClient.limits` (max write length);
- adbc-driver-manager: the cursor's private `_results.reader`; adbc-driver-postgresql's private
  `_driver_path()` (core/read/sources/adbc.py);
- pysequoia (0.1.x, no stable API yet): the calls and packet fields core/write/encryption.py and the
  OpenPGP helper (core/write/pgp_stream.py) use.

When a test here fails after an upgrade: read the library's change, adapt the override (or drop
it), then update the pinned hash or signature and the range in requirements.txt together.
"""

from __future__ import annotations

import hashlib
import inspect
import re
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]

# package → (the version the overrides were written and tested against, what uses it privately)
WRITTEN_AGAINST = {
    "azure-data-tables": ("12.7.0", "TableClient._client.send_request in core/azure/table_requests.py"),
    "azure-storage-blob": ("12.31.1", "ExportRetry.send in core/azure/retry.py"),
    "aioftp": ("0.28.3", "FtpClient's overrides in core/destinations/ftp_client.py"),
    "asyncssh": ("2.24.1", "_PinnedHostKey in core/destinations/sftp.py"),
    "adbc-driver-manager": ("1.13.0", "result_reader's cursor._results in core/read/sources/adbc.py"),
    "adbc-driver-postgresql": ("1.13.0", "_driver_path() in core/read/sources/adbc.py"),
    "pysequoia": ("0.1.35", "core/write/encryption.py and the helper in core/write/pgp_stream.py"),
}


def _requirements() -> dict[str, Requirement]:
    found = {}
    for line in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            requirement = Requirement(line)
            found[requirement.name.lower()] = requirement
    return found


def _source_hash(function: Callable[..., Any]) -> str:
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()[:16]


def _changed(what: str, package: str) -> str:
    pinned, user = WRITTEN_AGAINST[package]
    return (
        f"{what} changed in {package} {version(package)}: {user} was written against {package} {pinned}; "
        "check the override against the library's new code, then update this pin and requirements.txt"
    )


@pytest.mark.parametrize("package", sorted(WRITTEN_AGAINST))
def test_the_installed_version_is_the_one_the_overrides_were_written_against(package: str) -> None:
    requirement = _requirements().get(package)
    assert requirement is not None, f"requirements.txt must pin {package} ({WRITTEN_AGAINST[package][1]})"
    installed, (pinned, user) = version(package), WRITTEN_AGAINST[package]
    assert requirement.specifier.contains(installed), (
        f"{package} {installed} is outside requirements.txt's `{requirement.specifier}`"
    )
    assert requirement.specifier.contains(pinned), f"requirements.txt's {package} range excludes {pinned}"
    # no wider than the minor release tested: the next one may change the internals
    major, minor = (int(part) for part in pinned.split(".")[:2])
    nxt = f"{major}.{minor + 1}"
    assert not requirement.specifier.contains(nxt + ".0"), (
        f"requirements.txt allows {package} {nxt}, but {user} was only tested against {pinned}"
    )
    assert installed.split(".")[:2] == pinned.split(".")[:2], _changed("the version", package)


# --- azure-data-tables ----------------------------------------------------------------------------


def test_table_client_pipeline_send_request() -> None:
    from azure.core.rest import HttpRequest, HttpResponse
    from azure.data.tables import TableClient

    table = TableClient.from_connection_string(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
        "TableEndpoint=http://127.0.0.1:9/devstoreaccount1;",
        "pinned",
    )
    client = getattr(table, "_client", None)
    assert client is not None and callable(getattr(client, "send_request", None)), _changed(
        "`TableClient._client.send_request`", "azure-data-tables"
    )
    parameters = list(inspect.signature(client.send_request).parameters)
    assert parameters[:1] == ["request"] and "kwargs" in parameters, _changed(
        "send_request's signature", "azure-data-tables"
    )
    hints = inspect.signature(client.send_request)
    assert hints.parameters["request"].annotation in (HttpRequest, "HttpRequest", "azure.core.rest.HttpRequest"), (
        _changed("send_request's request type", "azure-data-tables")
    )
    assert hints.return_annotation in (HttpResponse, "HttpResponse", "azure.core.rest.HttpResponse"), _changed(
        "send_request's response type", "azure-data-tables"
    )
    assert table.table_name == "pinned" and table.url.startswith("http://127.0.0.1:9/devstoreaccount1")


# --- azure-storage-blob: the retry loop ExportRetry re-implements ----------------------------------

STORAGE_RETRY = {  # method → source hash at azure-storage-blob 12.31.1
    "AsyncStorageRetryPolicy.send": "81065531485b4a72",
    "StorageRetryPolicy.increment": "8a00e4f017212f5e",
    "StorageRetryPolicy.configure_retries": "baa16438b0f2b4cd",
}


@pytest.mark.parametrize("method", sorted(STORAGE_RETRY))
def test_the_storage_retry_loop_is_the_one_export_retry_reimplements(method: str) -> None:
    from azure.storage.blob._shared import policies, policies_async

    owner, name = method.split(".")
    cls = getattr(policies_async, owner, None) or getattr(policies, owner)
    assert _source_hash(getattr(cls, name)) == STORAGE_RETRY[method], _changed(f"`{method}`", "azure-storage-blob")


def test_export_retry_still_sits_on_the_storage_retry_policy() -> None:
    from azure.core.pipeline import PipelineContext, PipelineRequest
    from azure.core.rest import HttpRequest
    from azure.storage.blob._shared.policies_async import AsyncStorageRetryPolicy

    from core.azure.retry import ExportRetry

    policy = ExportRetry()
    assert isinstance(policy, AsyncStorageRetryPolicy), _changed("ExponentialRetry's base", "azure-storage-blob")
    settings = policy.configure_retries(
        PipelineRequest(
            HttpRequest("PUT", "http://127.0.0.1:9/c/b"),
            PipelineContext(None),
        )
    )
    assert {"count", "history", "mode", "total"} <= set(settings), _changed(
        "configure_retries' settings", "azure-storage-blob"
    )
    assert policy.total_retries == 5 and settings["total"] == 5
    increment = inspect.signature(policy.increment).parameters
    assert list(increment)[:2] == ["settings", "request"] and {"response", "error"} <= set(increment), _changed(
        "`StorageRetryPolicy.increment`'s signature", "azure-storage-blob"
    )


# --- aioftp: FtpClient's overrides -----------------------------------------------------------------

AIOFTP = {  # aioftp.Client method FtpClient overrides or relies on → (signature, source hash) at 0.28.3
    "_open_connection": (
        "(self, host: str, port: int) -> tuple[asyncio.streams.StreamReader, asyncio.streams.StreamWriter]",
        "11f66bf186fb4319",
    ),
    "_do_pasv": ("(self) -> tuple[str | None, int]", "d4967f7cf7a7b6ab"),
    "get_stream": (
        "(self, command: str | None = None, expected_codes: str | tuple[str, ...] = (), wait_codes: "
        "str | tuple[str, ...] = (), censor_after: int | None = None, conn_type: Literal['I', 'A', 'E', "
        "'L'] = 'I', offset: int = 0) -> aioftp.client.DataConnectionThrottleStreamIO",
        "12c2ee895c29e79a",
    ),
    "get_passive_connection": (
        "(self, conn_type: Literal['I', 'A', 'E', 'L'] = 'I', commands: "
        "collections.abc.Sequence[str] | None = None) -> tuple[asyncio.streams.StreamReader, "
        "asyncio.streams.StreamWriter]",
        "30c541d343615b3d",
    ),
}


@pytest.mark.parametrize("name", sorted(AIOFTP))
def test_the_aioftp_methods_ftp_client_overrides(name: str) -> None:
    import aioftp

    signature, digest = AIOFTP[name]
    original = getattr(aioftp.Client, name, None)
    assert original is not None, _changed(f"`aioftp.Client.{name}` (gone)", "aioftp")
    assert str(inspect.signature(original)) == signature, _changed(f"`aioftp.Client.{name}`'s signature", "aioftp")
    assert _source_hash(original) == digest, _changed(f"`aioftp.Client.{name}`'s code", "aioftp")


def test_the_aioftp_internals_ftp_client_reads() -> None:
    import aioftp
    from aioftp.common import SSLSessionBoundContext, async_enterable

    from core.destinations.ftp_client import FtpClient

    client = FtpClient(tls=None, implicit=False, timeout=5)
    assert hasattr(client, "_stream") and client._stream is None, _changed("`Client._stream`", "aioftp")
    for attribute in ("throttle", "socket_timeout"):
        assert attribute in vars(client), _changed(f"`aioftp.Client.{attribute}`", "aioftp")
    for attribute in ("parse_pasv_response", "command", "stream", "get_current_directory", "exists"):
        assert hasattr(aioftp.Client, attribute), _changed(f"`aioftp.Client.{attribute}`", "aioftp")
    connect = inspect.getsource(aioftp.BaseClient.connect)  # sets what the overrides read, calls `_open_connection`
    assert all(
        line in connect
        for line in ("self.server_host = host", "await self._open_connection(host, port)", "self._stream = ")
    ), _changed("`BaseClient.connect`", "aioftp")
    assert list(inspect.signature(SSLSessionBoundContext).parameters) == ["protocol", "context", "session"], _changed(
        "`aioftp.common.SSLSessionBoundContext`", "aioftp"
    )
    stream = inspect.signature(aioftp.DataConnectionThrottleStreamIO).parameters
    assert list(stream)[:4] == ["client", "reader", "writer", "throttles"] and "timeout" in stream, _changed(
        "`aioftp.DataConnectionThrottleStreamIO`", "aioftp"
    )
    assert callable(async_enterable)
    assert aioftp.Client.parse_pasv_response("227 Entering Passive Mode (127,0,0,1,4,1)") == ("127.0.0.1", 1025)


# --- asyncssh --------------------------------------------------------------------------------------


def test_the_asyncssh_callback_the_host_key_pin_overrides() -> None:
    import asyncssh

    from core.destinations.sftp import _PinnedHostKey

    expected = ["self", "host", "addr", "port", "key"]
    for cls in (asyncssh.SSHClient, _PinnedHostKey):
        assert list(inspect.signature(cls.validate_host_public_key).parameters) == expected, _changed(
            "`SSHClient.validate_host_public_key`", "asyncssh"
        )
    assert "max_write_len" in asyncssh.SFTPLimits.__annotations__, _changed("`SFTPLimits.max_write_len`", "asyncssh")
    assert "limits" in dir(asyncssh.SFTPClient), _changed("`SFTPClient.limits`", "asyncssh")


# --- ADBC ------------------------------------------------------------------------------------------


def test_the_adbc_cursor_internals_result_reader_reads() -> None:
    import adbc_driver_sqlite.dbapi
    import pyarrow as pa

    from core.read.sources.adbc import result_reader

    with adbc_driver_sqlite.dbapi.connect() as connection, connection.cursor() as cursor:
        cursor.execute("SELECT 1 AS one")
        results = getattr(cursor, "_results", None)
        assert isinstance(getattr(results, "reader", None), pa.RecordBatchReader), _changed(
            "the cursor's `_results.reader`", "adbc-driver-manager"
        )
        reader = result_reader(cursor)
        assert reader is results.reader  # type: ignore[union-attr]
        assert reader.read_all().to_pylist() == [{"one": 1}]


def test_the_adbc_driver_path_function() -> None:
    import adbc_driver_postgresql

    finder = getattr(adbc_driver_postgresql, "_driver_path", None)
    assert callable(finder) and not inspect.signature(finder).parameters, _changed(
        "`adbc_driver_postgresql._driver_path()`", "adbc-driver-postgresql"
    )
    assert Path(finder()).is_file(), _changed("`_driver_path()`'s answer", "adbc-driver-postgresql")


# --- pysequoia -------------------------------------------------------------------------------------


def test_the_pysequoia_calls_encryption_uses() -> None:
    import pysequoia
    from pysequoia.packet import PacketPile, SignatureType, Tag

    assert (
        str(inspect.signature(pysequoia.encrypt))
        == "(bytes, recipients=Ellipsis, signer=None, passwords=Ellipsis, *, armor=True)"
    ), _changed("`pysequoia.encrypt`", "pysequoia")
    assert (
        str(inspect.signature(pysequoia.encrypt_file))
        == "(input, output, recipients=Ellipsis, signer=None, passwords=Ellipsis, *, armor=True)"
    ), _changed("`pysequoia.encrypt_file`", "pysequoia")
    assert list(inspect.signature(pysequoia.Tsk.signer).parameters) == ["self", "password"], _changed(
        "`Tsk.signer`", "pysequoia"
    )
    for cls, names in (
        (pysequoia.Cert, ("from_bytes", "fingerprint", "user_ids", "is_revoked", "expiration")),
        (pysequoia.Tsk, ("from_bytes", "signer")),
        (PacketPile, ("from_bytes",)),
        (
            pysequoia.packet.Packet,
            ("tag", "key_id", "key_created", "signature_type", "signature_created", "key_validity_period", "body"),
        ),
    ):
        missing = [n for n in names if not hasattr(cls, n)]
        assert not missing, _changed(f"`{cls.__name__}` ({', '.join(missing)})", "pysequoia")
    for tag in ("PublicSubkey", "Signature", "SecretKey", "SecretSubkey", "PKESK"):
        assert hasattr(Tag, tag), _changed(f"`Tag.{tag}`", "pysequoia")
    assert hasattr(SignatureType, "SubkeyBinding"), _changed("`SignatureType.SubkeyBinding`", "pysequoia")


def test_the_helper_process_script_uses_only_pinned_calls() -> None:
    from core.write.pgp_stream import _CHILD

    calls = set(re.findall(r"pysequoia\.([A-Za-z_.]+)\(", _CHILD))
    assert calls == {"Cert.from_bytes", "Tsk.from_bytes", "encrypt_file"}, calls
