"""The Azure Blob destination's pure parts: block schedule, SAS checks, retry backoff, error mapping.

No service: clients are only constructed (the SDK opens no connection until a request).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
)

from core.azure.errors import Access, map_azure_errors
from core.azure.retry import ExportRetry
from core.catalog.model import Destination as DestinationConfig
from core.destinations import azure_blob
from core.destinations.azure_blob import AzureBlobDestination, block_size, max_blob_size, sas_expiry
from core.error_codes import ErrorCode
from core.errors import DestinationError
from core.scrub import scrub
from core.settings import Settings

WHERE = "container `exports` of storage account `acct`"
SAS = Access("sas", "EXPORT_SAS")


def sas(*, days: float = 30, permissions: str = "cw", start_hours: float | None = None) -> str:
    expiry = (datetime.now(UTC) + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")
    query = f"sv=2025-11-05&sr=c&sp={permissions}&se={quote(expiry)}&sig=c2VjcmV0LXNpZ25hdHVyZQ%3D%3D"
    if start_hours is not None:
        start = (datetime.now(UTC) + timedelta(hours=start_hours)).strftime("%Y-%m-%dT%H:%M:%SZ")
        query += f"&st={quote(start)}"
    return f"https://acct.blob.core.windows.net/exports?{query}"


def destination(url: str) -> AzureBlobDestination:
    config = DestinationConfig("lake", "azure_blob", container="exports", sas_url_setting="EXPORT_SAS")
    return AzureBlobDestination(config, Settings({"EXPORT_SAS": url}))


# ---------------------------------------------------------------- blocks


def test_block_schedule_stays_within_the_service_limit() -> None:
    assert azure_blob.MAX_BLOCKS == 50_000 and azure_blob.BLOCK_SIZE == 8 * 2**20
    sizes = [block_size(i) for i in range(azure_blob.MAX_BLOCKS)]
    assert sizes[0] == sizes[24_999] == 8 * 2**20
    assert sizes[25_000] == sizes[37_499] == 16 * 2**20
    assert sizes[37_500] == sizes[-1] == 32 * 2**20
    assert sum(sizes) == max_blob_size() == 800_000 * 2**20  # about 781 GiB in at most 50,000 blocks
    assert azure_blob.MAX_IN_FLIGHT == 3
    slots = {size: min(size // azure_blob.BLOCK_SIZE, azure_blob.MAX_IN_FLIGHT) for size in set(sizes)}
    in_flight = {size: size * (azure_blob.MAX_IN_FLIGHT // units) for size, units in slots.items()}
    assert in_flight == {8 * 2**20: 24 * 2**20, 16 * 2**20: 16 * 2**20, 32 * 2**20: 32 * 2**20}  # fewer as they grow


# ---------------------------------------------------------------- SAS


@pytest.mark.parametrize(
    "value, expected",
    [
        ("se=2025-04-14T06:00:00Z", datetime(2025, 4, 14, 6, tzinfo=UTC)),
        ("se=2025-04-14T06%3A00%3A00Z", datetime(2025, 4, 14, 6, tzinfo=UTC)),
        ("se=2025-04-14", datetime(2025, 4, 14, tzinfo=UTC)),
        ("se=2025-04-14T08:00:00%2B02:00", datetime(2025, 4, 14, 6, tzinfo=UTC)),
        ("sp=r", None),
        ("se=tomorrow", None),
    ],
)
def test_sas_expiry(value: str, expected: datetime | None) -> None:
    assert sas_expiry(f"https://a.blob.core.windows.net/c?sv=x&{value}&sig=s") == expected


def test_valid_sas_has_no_warning() -> None:
    assert destination(sas(days=30)).warnings == []


def test_sas_expiring_soon_warns_without_the_token() -> None:
    [warning] = destination(sas(days=2)).warnings
    assert warning["code"] == "sas_expiring"
    assert warning["message"].startswith("the SAS token in app setting `EXPORT_SAS` expires at ")
    assert "(in 2.0 days)" in warning["message"] and "c2VjcmV0" not in warning["message"]


@pytest.mark.parametrize(
    "url, code, message",
    [
        (sas(days=-1), "sas_expired", "the SAS token in app setting `EXPORT_SAS` expired at "),
        (sas(start_hours=3), "bad_credentials", "the SAS token in app setting `EXPORT_SAS` is not valid before "),
        (
            sas(permissions="rl"),
            "permission_denied",
            "permission denied to write in container `exports` of storage account `acct`: the SAS token in app setting "
            "`EXPORT_SAS` grants `rl` (read, list); it needs write (`w`) and create (`c`) permissions",
        ),
        (
            "https://acct.blob.core.windows.net/exports",
            "bad_credentials",
            "app setting `EXPORT_SAS` has no SAS token: it must be the container URL followed by `?sv=…&sig=…`",
        ),
    ],
    ids=["expired", "not-yet-valid", "read-only", "no-token"],
)
def test_unusable_sas_is_refused_before_any_request(url: str, code: str, message: str) -> None:
    with pytest.raises(DestinationError) as caught:
        destination(url)
    assert caught.value.code == code and not caught.value.transient
    assert caught.value.message.startswith(message)
    assert "c2VjcmV0" not in caught.value.message


def test_create_only_sas_passes_the_local_check() -> None:
    """`c` may write new blobs; the service decides, and its 403 names the permission."""
    assert destination(sas(permissions="c")).access == SAS


def test_missing_setting_names_it() -> None:
    config = DestinationConfig("lake", "azure_blob", container="exports", connection_setting="EXPORT_STORAGE")
    with pytest.raises(Exception) as caught:
        AzureBlobDestination(config, Settings({}))
    assert "app setting `EXPORT_STORAGE` (connection string of destination `lake`) is not set" in str(caught.value)


def test_bad_connection_string_does_not_echo_it() -> None:
    config = DestinationConfig("lake", "azure_blob", container="exports", connection_setting="EXPORT_STORAGE")
    with pytest.raises(DestinationError) as caught:
        AzureBlobDestination(config, Settings({"EXPORT_STORAGE": "AccountKey=hunter2"}))
    assert caught.value.code == "bad_credentials" and "hunter2" not in caught.value.message


# ---------------------------------------------------------------- retry


@dataclass
class _Response:
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _History:
    http_response: _Response | None


def test_backoff_grows_and_is_capped() -> None:
    policy = ExportRetry(initial_backoff=2, increment_base=2, jitter=0, max_backoff=30)
    delays = [policy.get_backoff_time({"count": n, "history": []}) for n in range(1, 8)]
    assert delays == [2, 4, 6, 10, 18, 30, 30]


def test_retry_after_is_honoured_within_the_cap() -> None:
    policy = ExportRetry(initial_backoff=1, increment_base=2, jitter=0, max_backoff=30)
    hinted = {"count": 1, "history": [_History(_Response({"Retry-After": "7"}))]}
    assert policy.get_backoff_time(hinted) == 7
    hinted["history"] = [_History(_Response({"Retry-After": "3600"}))]
    assert policy.get_backoff_time(hinted) == 30


def test_retry_after_as_an_http_date() -> None:
    policy = ExportRetry(initial_backoff=0, increment_base=2, jitter=0, max_backoff=30)
    when = (datetime.now(UTC) + timedelta(seconds=12)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    delay = policy.get_backoff_time({"count": 1, "history": [_History(_Response({"Retry-After": when}))]})
    assert 10 <= delay <= 12


# ---------------------------------------------------------------- errors


def http_error(status: int, code: str, cls: type[HttpResponseError] = HttpResponseError) -> HttpResponseError:
    error = cls(message=f"{code} RequestId:… Content: <Error>…</Error>")
    error.status_code = status
    error.error_code = code  # type: ignore[attr-defined]
    return error


def mapped(exc: Exception, access: Access = SAS) -> DestinationError:
    with pytest.raises(DestinationError) as caught, map_azure_errors("write `a.csv`", WHERE, access):
        raise exc
    return caught.value


@pytest.mark.parametrize(
    "exc, code, transient, text",
    [
        (
            http_error(403, "AuthorizationPermissionMismatch"),
            "permission_denied",
            False,
            "permission denied to write `a.csv` in container `exports` of storage account `acct` "
            "(AuthorizationPermissionMismatch): the SAS token in app setting `EXPORT_SAS` needs write (`w`) and create "
            "(`c`) permissions",
        ),
        (
            http_error(403, "AuthenticationFailed", ClientAuthenticationError),
            "authentication_failed",
            False,
            "not authorised to write `a.csv` in container `exports` of storage account `acct`: the credential was refused "  # noqa: E501
            "(AuthenticationFailed); check that the SAS token in app setting `EXPORT_SAS` was signed",
        ),
        (
            http_error(403, "AuthorizationSourceIPMismatch"),
            "authentication_failed",
            False,
            "not authorised to write `a.csv` in container `exports` of storage account `acct`: the credential was refused "  # noqa: E501
            "(AuthorizationSourceIPMismatch)",
        ),
        (
            http_error(404, "ContainerNotFound", ResourceNotFoundError),
            "not_found",
            False,
            "container `exports` of storage account `acct` was not found while trying to write `a.csv` (ContainerNotFound): "  # noqa: E501
            "create it, or use a SAS URL for an existing container",
        ),
        (
            http_error(503, "ServerBusy"),
            "destination_unavailable",
            True,
            "Azure Blob Storage kept refusing to write `a.csv` in container `exports` of storage account `acct`: HTTP 503 "  # noqa: E501
            "(ServerBusy) after retrying with backoff",
        ),
        (http_error(429, "TooManyRequests"), "destination_unavailable", True, "HTTP 429 (TooManyRequests)"),
        (
            http_error(400, "InvalidBlockList"),
            "destination_error",
            False,
            "Azure Blob Storage refused to write `a.csv` in container `exports` of storage account `acct`: HTTP 400 "
            "(InvalidBlockList)",
        ),
        (
            ServiceRequestError(
                "Cannot connect to host acct.blob.core.windows.net:443 ssl:default [Name or service not known]"
            ),
            "destination_unavailable",
            True,
            "cannot reach Azure Blob Storage (container `exports` of storage account `acct`) to write `a.csv`: Cannot "
            "connect to host acct.blob.core.windows.net:443",
        ),
    ],
    ids=[
        "permission",
        "authentication",
        "firewall",
        "no-container",
        "server-busy",
        "too-many-requests",
        "bad-request",
        "unreachable",
    ],
)
def test_error_mapping(exc: Exception, code: str, transient: bool, text: str) -> None:
    error = mapped(exc)
    assert error.code == code and error.transient is transient
    assert text in error.message


def test_identity_permission_error_names_the_role() -> None:
    error = mapped(http_error(403, "AuthorizationPermissionMismatch"), Access("identity", "https://acct"))
    assert error.message.endswith(
        "the managed identity needs the `Storage Blob Data Contributor` role on the container or the storage account"
    )


def test_sdk_text_is_scrubbed_of_secrets() -> None:
    error = mapped(ServiceRequestError("failed https://a/c/b?sv=1&sig=SECRETSIG&se=2 with AccountKey=SECRETKEY;x"))
    assert "SECRETSIG" not in error.message and "SECRETKEY" not in error.message
    assert (
        scrub("a?sig=abc%2B&x=1 AccountKey=k/+=;B SharedAccessSignature=sv=1&sig=z")
        == "a?sig=***&x=1 AccountKey=***;B SharedAccessSignature=***"
    )


def test_errors_of_filecast_pass_through() -> None:
    original = DestinationError("already mapped", code=ErrorCode.SIZE_MISMATCH)
    assert mapped(original) is original


def test_unexpected_azure_errors_are_transient() -> None:
    from azure.core.exceptions import AzureError

    error: Any = mapped(AzureError("odd"))
    assert error.transient and error.message == (
        "Azure Blob Storage failed to write `a.csv` in container `exports` of storage account `acct`: odd"
    )


# ---------------------------------------------------------------- bounded failure time


def test_connect_faults_are_retried_once_and_timeouts_are_set() -> None:
    """An unreachable account is not throttling: one connect retry, connect and read timeouts from
    FILECAST_AZURE_TIMEOUT (the worst case is documented in core/azure/retry.py and the README)."""
    assert ExportRetry().connect_retries == 1 and ExportRetry().total_retries == 5
    config = DestinationConfig("lake", "azure_blob", container="exports", connection_setting="EXPORT_STORAGE")
    conn = "DefaultEndpointsProtocol=http;AccountName=acct;AccountKey=a2V5;BlobEndpoint=http://127.0.0.1:9/acct"
    for raw, connect in ((None, 10.0), ("3", 3.0)):
        values = {"EXPORT_STORAGE": conn, **({"FILECAST_AZURE_TIMEOUT": raw} if raw else {})}
        client = AzureBlobDestination(config, Settings(values)).client
        transport: Any = client._pipeline._transport
        assert (transport.connection_config.timeout, transport.connection_config.read_timeout) == (connect, connect * 6)
    with pytest.raises(
        DestinationError,
        match="app setting `FILECAST_AZURE_TIMEOUT` must be a number of seconds from 1 to 600, not `0`",
    ):
        AzureBlobDestination(config, Settings({"EXPORT_STORAGE": conn, "FILECAST_AZURE_TIMEOUT": "0"}))


def test_unreachable_account_fails_naming_the_service() -> None:
    """Nothing listens on 127.0.0.1:9 (discard): connection refused, one retry, then a named error."""
    import asyncio

    config = DestinationConfig(
        "lake", "azure_blob", container="exports", connection_setting="EXPORT_STORAGE", create_container=True
    )
    conn = "DefaultEndpointsProtocol=http;AccountName=acct;AccountKey=a2V5;BlobEndpoint=http://127.0.0.1:9/acct"
    destination = AzureBlobDestination(config, Settings({"EXPORT_STORAGE": conn}))

    async def enter() -> None:
        async with destination:
            pass

    with pytest.raises(DestinationError) as caught:
        asyncio.run(enter())
    assert caught.value.code == "destination_unavailable" and caught.value.transient
    assert caught.value.message.startswith(
        "cannot reach Azure Blob Storage (container `exports` of storage account "
        "`acct`) to create the container: Cannot connect to host 127.0.0.1:9"
    )


# ---------------------------------------------------------------- block bodies


class _Writer:
    """Collects what aiohttp's stream writer would send."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = []

    async def write(self, piece: Any) -> None:
        self.pieces.append(bytes(piece))


def test_a_block_body_is_sent_whole_from_its_writes_on_every_attempt() -> None:
    import asyncio
    import io

    import aiohttp.payload

    chunks: list[bytes | memoryview] = [b"a" * 300_000, memoryview(b"0123456789")[2:7], b"z" * 5]
    body = azure_blob._Body(chunks)
    expected = b"".join(bytes(c) for c in chunks)
    assert body.size == len(expected) == 300_010
    payload = aiohttp.payload.PAYLOAD_REGISTRY.get(body)
    assert isinstance(payload, azure_blob._BodyPayload) and payload.size == len(expected)
    for _ in range(2):  # a retry after a dropped connection sends the same bytes again, from the start
        writer = _Writer()
        asyncio.run(payload.write_with_length(writer, len(expected)))
        assert b"".join(writer.pieces) == expected
        assert max(len(p) for p in writer.pieces) == azure_blob.SEND_PIECE
    assert body.seek(299_998) == 299_998 and body.read(4) == b"aa23"  # the stream side, for other readers
    assert body.seek(-3, io.SEEK_END) == 300_007 and body.read() == b"zzz"
    body.close()  # aiohttp closes a body once sent; it stays usable for a retry
    assert body.seek(0) == 0 and body.read(2) == b"aa"
