"""Azure Blob Storage failures: the retry policy and the messages a user reads.

`ExportRetry` retries throttling (429, 503 `ServerBusy`), 408, other 5xx and network faults with
capped exponential backoff and jitter, honouring `Retry-After`; what is left is translated by
`map_azure_errors()` into a `DestinationError` that names the container and what to fix.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import urlsplit

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.storage.blob.aio import ExponentialRetry

from ..errors import DestinationError

log = logging.getLogger(__name__)

# Backoff before retry n (1-based): INITIAL + BASE**(n-1) seconds, +-JITTER, at most MAX:
# about 2, 4, 6, 10, 18 s for the defaults, 40 s over the five retries.
RETRY_TOTAL = 5
# A request that cannot connect (refused, no DNS, no route, connect timeout) is retried once: an
# unreachable account is not throttling, and the run's own retries (engine.RETRIES) follow.
RETRY_CONNECT = 1
# Seconds a connection may take to open (FILECAST_AZURE_TIMEOUT) and, times READ_FACTOR, a response
# may stall. With the run's two retries an unreachable account fails a run within about 15 s when
# connections are refused, and within 3 × (2 × timeout + 3) + 6 s (75 s at the default) when
# packets are silently dropped.
TIMEOUT_SETTING = "FILECAST_AZURE_TIMEOUT"
CONNECT_TIMEOUT = 10.0
READ_FACTOR = 6
RETRY_INITIAL_BACKOFF = 2.0
RETRY_INCREMENT_BASE = 2.0
RETRY_JITTER = 1.0
RETRY_MAX_BACKOFF = 30.0
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

_SECRET_PATTERNS = (
    re.compile(r"(?i)(sig=)[^&\s'\"]+"),
    re.compile(r"(?i)(AccountKey=)[^;\s'\"]+"),
    re.compile(r"(?i)(SharedAccessSignature=)[^;\s'\"]+"),
)


def scrub(text: str) -> str:
    """`text` with SAS signatures and account keys blanked: SDK messages may quote a URL or setting."""
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(r"\1***", text)
    return text


def _error_code(exc: AzureError) -> str:
    code = getattr(exc, "error_code", None)
    if code is None:
        return ""
    return str(getattr(code, "value", code))


def _reason(exc: AzureError) -> str:
    return _error_code(exc) or type(exc).__name__


def service_message(exc: AzureError) -> str:
    """What the storage service itself said (its `<Message>`), first line, scrubbed; "" if nothing."""
    response = getattr(exc, "response", None)
    said = str(getattr(response, "reason", "") or "") if response is not None else ""
    text = said if len(said) > 40 else str(getattr(exc, "message", "") or "")
    line = text.strip().splitlines()[0].strip() if text.strip() else ""
    return scrub(line) if line and not line.startswith(("Operation returned", "(")) else ""


def _first_line(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return scrub(str(text).strip().splitlines()[0] if str(text).strip() else type(exc).__name__)


@dataclass(frozen=True)
class Access:
    """How the destination authenticates, for messages that say what to fix."""

    mode: str     # connection_string | sas | identity
    setting: str  # the app setting, or the account URL for an identity

    def refused(self) -> str:
        if self.mode == "connection_string":
            return (f"check that app setting `{self.setting}` holds the account's current connection string "
                    "(keys may have been rotated)")
        if self.mode == "sas":
            return (f"check that the SAS token in app setting `{self.setting}` was signed with a current account "
                    "key, is within its start and expiry times, and that the account's firewall lets this app in")
        return ("check that the Function App's managed identity is enabled (and `AZURE_CLIENT_ID` names it if it "
                "is user-assigned) and that the account's firewall lets this app in")

    def needs(self) -> str:
        if self.mode == "sas":
            return f"the SAS token in app setting `{self.setting}` needs write (`w`) and create (`c`) permissions"
        if self.mode == "identity":
            return ("the managed identity needs the `Storage Blob Data Contributor` role on the container or the "
                    "storage account")
        return f"the credential in app setting `{self.setting}` needs write (`w`) and create (`c`) permissions"


@contextmanager
def map_azure_errors(action: str, where: str, access: Access | None = None) -> Iterator[None]:
    """Translate Azure SDK errors into DestinationError with a message a user can act on.

    Authorisation failures and missing containers are terminal; throttling, server errors and
    network faults (what is left after the SDK's retries) are transient.
    """
    access = access or Access("connection_string", "the connection setting")
    try:
        yield
    except DestinationError:
        raise
    except ClientAuthenticationError as exc:
        if exc.status_code is None:  # no answer from storage: the credential itself could not produce a token
            raise DestinationError(
                f"cannot get a token to {action} in {where}: {_first_line(exc)}; {access.refused()}",
                code="authentication_failed") from exc
        raise DestinationError(
            f"not authorised to {action} in {where}: the credential was refused ({_reason(exc)}); {access.refused()}",
            code="authentication_failed") from exc
    except ResourceNotFoundError as exc:
        fix = ("create it, or use a SAS URL for an existing container" if access.mode == "sas"
               else "create it, or set `create_container: true` on the destination")
        raise DestinationError(f"{where} was not found while trying to {action} ({_reason(exc)}): {fix}",
                               code="not_found") from exc
    except HttpResponseError as exc:
        status, code = exc.status_code or 0, _error_code(exc)
        if status == 403 and code in ("AuthorizationFailure", "AuthenticationFailed",
                                      "AuthorizationSourceIPMismatch", "AuthorizationProtocolMismatch"):
            raise DestinationError(
                f"not authorised to {action} in {where}: the credential was refused ({code}); {access.refused()}",
                code="authentication_failed") from exc
        if status == 403:
            raise DestinationError(f"permission denied to {action} in {where} ({_reason(exc)}): {access.needs()}",
                                   code="permission_denied") from exc
        if status in RETRY_STATUSES:
            raise DestinationError(
                f"Azure Blob Storage kept refusing to {action} in {where}: HTTP {status} ({_reason(exc)}) after "
                "retrying with backoff; the account is throttling or unavailable, and the run will be retried",
                code="destination_unavailable", transient=True) from exc
        said = service_message(exc)
        raise DestinationError(f"Azure Blob Storage refused to {action} in {where}: HTTP {status} ({_reason(exc)})"
                               + (f"; the service said: {said}" if said else ""), transient=status >= 500) from exc
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise DestinationError(f"cannot reach Azure Blob Storage ({where}) to {action}: {_first_line(exc)} (after "
                               "retrying); check the account name or endpoint and the network path to it",
                               code="destination_unavailable", transient=True) from exc
    except AzureError as exc:
        raise DestinationError(f"Azure Blob Storage failed to {action} in {where}: {_first_line(exc)}",
                               transient=True) from exc


class ExportRetry(ExponentialRetry):
    """The storage SDK's exponential retry, plus 429, `Retry-After`, a backoff cap and a log line.

    The SDK's own policy does not retry 429; credential failures are never retried here.
    """

    def __init__(
        self, *, retry_total: int = RETRY_TOTAL, initial_backoff: float = RETRY_INITIAL_BACKOFF,
        increment_base: float = RETRY_INCREMENT_BASE, jitter: float = RETRY_JITTER,
        max_backoff: float = RETRY_MAX_BACKOFF,
    ):
        super().__init__(retry_total=retry_total, retry_connect=min(retry_total, RETRY_CONNECT),
                         retry_read=retry_total, retry_status=retry_total)
        self.backoff = (initial_backoff, increment_base, jitter, max_backoff)

    def get_backoff_time(self, settings: dict[str, Any]) -> float:
        initial, base, jitter, cap = self.backoff
        count = settings["count"]
        backoff = initial + (0 if count <= 1 else base ** (count - 1))
        backoff = random.uniform(max(backoff - jitter, 0), backoff + jitter)
        history = settings.get("history") or []
        last = history[-1].http_response if history else None
        hinted = _retry_after(last.headers.get("Retry-After")) if last is not None else None
        if hinted is not None:
            backoff = max(backoff, hinted)
        return min(backoff, cap)

    async def send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:  # type: ignore[override]
        settings = self.configure_retries(request)
        path = urlsplit(request.http_request.url).path
        while True:
            try:
                response = await cast(Any, self.next).send(request)
            except ClientAuthenticationError:
                raise
            except AzureError as err:
                if not self.increment(settings, request=request.http_request, error=err):
                    raise
                what = _first_line(err)
            else:
                status = response.http_response.status_code
                if status not in RETRY_STATUSES or not self.increment(
                        settings, request=request.http_request, response=response.http_response):
                    break
                what = f"HTTP {status} {response.http_response.headers.get('x-ms-error-code', '')}".rstrip()
            backoff = self.get_backoff_time(settings)
            log.warning("Azure Blob Storage: %s for %s %s; retry %d of %d in %.1f s", what,
                        request.http_request.method, path, settings["count"], self.total_retries, backoff)
            await asyncio.sleep(backoff)
        if settings["history"]:
            response.context["history"] = settings["history"]
        response.http_response.location_mode = settings["mode"]
        return response


def timeouts(raw: str | None) -> dict[str, float]:
    """The transport's `connection_timeout` and `read_timeout` from FILECAST_AZURE_TIMEOUT."""
    value = CONNECT_TIMEOUT
    if raw is not None:
        try:
            value = float(raw)
        except ValueError:
            value = 0.0
        if not 1 <= value <= 600:
            raise DestinationError(f"app setting `{TIMEOUT_SETTING}` must be a number of seconds from 1 to 600, not "
                                   f"`{raw}`", code="invalid_setting")
    return {"connection_timeout": value, "read_timeout": value * READ_FACTOR}


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max((moment - datetime.now(UTC)).total_seconds(), 0.0)
