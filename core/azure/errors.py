"""The one Azure error boundary: every Azure SDK error becomes a Filecast error here.

Three callers, one decision: the export destination (Blob Storage, `BLOB`), the delta state
(Table + Blob Storage, `STATE`) and Filecast's own records (catalog, runs, leases: `RECORDS`).
`classify` decides what a failure is, and so its type and whether it is retried, the same way for
all three:

    refused credentials (401, 403 auth codes, no token)   terminal   authentication_failed
    403 otherwise                                         terminal   permission_denied
    404                                                   terminal   not_found
    408, 429, 500, 502, 503, 504 (left after retrying)    transient  destination_unavailable
    other 5xx                                             transient
    other 4xx (400, 409, 412…)                            terminal
    no connection, broken response, other SDK errors      transient

A `Boundary` only words the message and names the types and codes of its error family (the state
keeps its single `state_error` code, which run records have always carried). Every piece of SDK
text is scrubbed (core/scrub.py); messages say what to fix (`Access`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)

from ..error_codes import ErrorCode
from ..errors import DestinationError, DestinationUnavailable, FilecastError, StateError, StateUnavailable
from ..scrub import scrub

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
AUTH_CODES = (
    "AuthorizationFailure",
    "AuthenticationFailed",
    "AuthorizationSourceIPMismatch",
    "AuthorizationProtocolMismatch",
)


class Kind(Enum):
    NO_TOKEN = "no_token"  # the credential could not produce a token (no answer from storage)
    REFUSED = "refused"  # the credential was refused
    DENIED = "denied"  # authenticated, not permitted
    MISSING = "missing"  # 404
    BUSY = "busy"  # throttled or unavailable after the SDK's retries
    ANSWERED = "answered"  # any other HTTP status
    UNREACHABLE = "unreachable"  # no connection, or the response broke
    OTHER = "other"  # any other SDK error


def transient_status(status: int) -> bool:
    """Whether an HTTP status from Azure Storage is worth retrying (throttling, timeouts, 5xx)."""
    return status in RETRY_STATUSES or status >= 500


@dataclass(frozen=True)
class Fault:
    """One Azure SDK error, classified; every text field is scrubbed."""

    kind: Kind
    status: int  # 0 without an HTTP answer
    reason: str  # the service's error code, else the exception's class name
    detail: str  # the exception's first line
    said: str  # the service's own `<Message>`, or ""

    @property
    def transient(self) -> bool:
        if self.kind is Kind.ANSWERED:
            return transient_status(self.status)
        return self.kind in (Kind.BUSY, Kind.UNREACHABLE, Kind.OTHER)


def _error_code(exc: AzureError) -> str:
    code = getattr(exc, "error_code", None)
    if code is None:
        return ""
    return str(getattr(code, "value", code))


def service_message(exc: AzureError) -> str:
    """What the storage service itself said (its `<Message>`), first line, scrubbed; "" if nothing."""
    response = getattr(exc, "response", None)
    said = str(getattr(response, "reason", "") or "") if response is not None else ""
    text = said if len(said) > 40 else str(getattr(exc, "message", "") or "")
    line = text.strip().splitlines()[0].strip() if text.strip() else ""
    return scrub(line) if line and not line.startswith(("Operation returned", "(")) else ""


def first_line(exc: BaseException) -> str:
    """The exception's first line of text (or its class name), scrubbed."""
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return scrub(str(text).strip().splitlines()[0] if str(text).strip() else type(exc).__name__)


def classify(exc: AzureError) -> Fault:
    """What an Azure SDK error means for Filecast: the one place its kind (and so its type and
    transience) is decided."""
    code = _error_code(exc)
    reason = code or type(exc).__name__
    status = int(getattr(exc, "status_code", None) or 0)
    if isinstance(exc, ClientAuthenticationError):
        kind = Kind.REFUSED if status else Kind.NO_TOKEN
    elif isinstance(exc, ResourceNotFoundError) or status == 404:
        kind = Kind.MISSING
    elif isinstance(exc, HttpResponseError) and status == 403:
        kind = Kind.REFUSED if code in AUTH_CODES else Kind.DENIED
    elif isinstance(exc, HttpResponseError) and status == 401:
        kind = Kind.REFUSED
    elif isinstance(exc, HttpResponseError) and status in RETRY_STATUSES:
        kind = Kind.BUSY
    elif isinstance(exc, HttpResponseError):
        kind = Kind.ANSWERED
    elif isinstance(exc, ServiceRequestError | ServiceResponseError):
        kind = Kind.UNREACHABLE
    else:
        kind = Kind.OTHER
    return Fault(kind, status, reason, first_line(exc), service_message(exc))


@dataclass(frozen=True)
class Access:
    """How a client authenticates, for messages that say what to fix."""

    mode: str  # connection_string | sas | identity
    setting: str  # the app setting, or the account URL for an identity

    def refused(self) -> str:
        if self.mode == "connection_string":
            return (
                f"check that app setting `{self.setting}` holds the account's current connection string "
                "(keys may have been rotated)"
            )
        if self.mode == "sas":
            return (
                f"check that the SAS token in app setting `{self.setting}` was signed with a current account "
                "key, is within its start and expiry times, and that the account's firewall lets this app in"
            )
        return (
            "check that the Function App's managed identity is enabled (and `AZURE_CLIENT_ID` names it if it "
            "is user-assigned) and that the account's firewall lets this app in"
        )

    def needs(self) -> str:
        if self.mode == "sas":
            return f"the SAS token in app setting `{self.setting}` needs write (`w`) and create (`c`) permissions"
        if self.mode == "identity":
            return (
                "the managed identity needs the `Storage Blob Data Contributor` role on the container or the "
                "storage account"
            )
        return f"the credential in app setting `{self.setting}` needs write (`w`) and create (`c`) permissions"


def blob_message(fault: Fault, action: str, where: str, access: Access) -> str:
    """An export destination's words: `action` ("write `a.csv`") in `where` ("container `x` of …")."""
    kind, reason = fault.kind, fault.reason
    if kind is Kind.NO_TOKEN:
        return f"cannot get a token to {action} in {where}: {fault.detail}; {access.refused()}"
    if kind is Kind.REFUSED:
        return f"not authorised to {action} in {where}: the credential was refused ({reason}); {access.refused()}"
    if kind is Kind.MISSING:
        fix = (
            "create it, or use a SAS URL for an existing container"
            if access.mode == "sas"
            else "create it, or set `create_container: true` on the destination"
        )
        return f"{where} was not found while trying to {action} ({reason}): {fix}"
    if kind is Kind.DENIED:
        return f"permission denied to {action} in {where} ({reason}): {access.needs()}"
    if kind is Kind.BUSY:
        return (
            f"Azure Blob Storage kept refusing to {action} in {where}: HTTP {fault.status} ({reason}) after "
            "retrying with backoff; the account is throttling or unavailable, and the run will be retried"
        )
    if kind is Kind.ANSWERED:
        return f"Azure Blob Storage refused to {action} in {where}: HTTP {fault.status} ({reason})" + (
            f"; the service said: {fault.said}" if fault.said else ""
        )
    if kind is Kind.UNREACHABLE:
        return (
            f"cannot reach Azure Blob Storage ({where}) to {action}: {fault.detail} (after retrying); check the "
            "account name or endpoint and the network path to it"
        )
    return f"Azure Blob Storage failed to {action} in {where}: {fault.detail}"


def storage_message(fault: Fault, action: str, where: str, access: Access) -> str:
    """Filecast's own storage (delta state, records): `action` is the whole subject, e.g.
    "reading the delta state of `x`"; the fix names the storage setting or the identity's role."""
    if fault.kind in (Kind.NO_TOKEN, Kind.REFUSED):
        return (
            f"{action}: the storage account refused the credentials; check the state storage connection "
            "setting or the identity's role assignments"
        )
    if fault.kind is Kind.UNREACHABLE:
        return f"{action}: the storage account could not be reached ({fault.reason})"
    if fault.kind is Kind.OTHER:
        return f"{action}: {fault.reason}"
    detail = f" ({fault.said[:200]})" if fault.said and fault.said != fault.reason else ""
    hint = "; the identity needs data access to the storage account" if fault.kind is Kind.DENIED else ""
    return f"{action}: storage answered {fault.status} `{fault.reason}`{detail}{hint}"


@dataclass(frozen=True)
class Boundary:
    """One error family's words and types; `codes` overrides the family's default code by kind."""

    terminal: type[FilecastError]
    transient: type[FilecastError]
    message: Callable[[Fault, str, str, Access], str]
    codes: Mapping[Kind, ErrorCode] = field(default_factory=dict)

    def error(self, fault: Fault, action: str, where: str = "", access: Access | None = None) -> FilecastError:
        kind = self.transient if fault.transient else self.terminal
        access = access or Access("connection_string", "the connection setting")
        return kind(self.message(fault, action, where, access), code=self.codes.get(fault.kind))


BLOB = Boundary(
    DestinationError,
    DestinationUnavailable,
    blob_message,
    {
        Kind.NO_TOKEN: ErrorCode.AUTHENTICATION_FAILED,
        Kind.REFUSED: ErrorCode.AUTHENTICATION_FAILED,
        Kind.MISSING: ErrorCode.NOT_FOUND,
        Kind.DENIED: ErrorCode.PERMISSION_DENIED,
        Kind.BUSY: ErrorCode.DESTINATION_UNAVAILABLE,
        Kind.UNREACHABLE: ErrorCode.DESTINATION_UNAVAILABLE,
    },
)
STATE = Boundary(StateError, StateUnavailable, storage_message)
RECORDS = STATE  # the catalog, runs, leases and schedule marks live in the same account


@contextmanager
def map_azure_errors(
    action: str, where: str = "", access: Access | None = None, *, boundary: Boundary = BLOB
) -> Iterator[None]:
    """Translate Azure SDK errors raised inside the block into `boundary`'s Filecast errors;
    Filecast's own errors pass through unchanged."""
    try:
        yield
    except FilecastError:
        raise
    except AzureError as exc:
        raise boundary.error(classify(exc), action, where, access) from exc
