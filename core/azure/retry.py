"""Azure Blob Storage exports: the retry policy and the transport's timeouts.

`ExportRetry` retries throttling (429, 503 `ServerBusy`), 408, other 5xx and network faults with
capped exponential backoff and jitter, honouring `Retry-After`; what is left is translated by
core/azure/errors.py (`map_azure_errors()`, the one Azure error boundary) into a
`DestinationError` that names the container and what to fix.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import urlsplit

from azure.core.exceptions import AzureError, ClientAuthenticationError
from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.storage.blob.aio import ExponentialRetry

from ..error_codes import ErrorCode
from ..errors import DestinationError
from .errors import RETRY_STATUSES, first_line

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


class ExportRetry(ExponentialRetry):
    """The storage SDK's exponential retry, plus 429, `Retry-After`, a backoff cap and a log line.

    The SDK's own policy does not retry 429; credential failures are never retried here.
    """

    def __init__(
        self,
        *,
        retry_total: int = RETRY_TOTAL,
        initial_backoff: float = RETRY_INITIAL_BACKOFF,
        increment_base: float = RETRY_INCREMENT_BASE,
        jitter: float = RETRY_JITTER,
        max_backoff: float = RETRY_MAX_BACKOFF,
    ):
        super().__init__(
            retry_total=retry_total,
            retry_connect=min(retry_total, RETRY_CONNECT),
            retry_read=retry_total,
            retry_status=retry_total,
        )
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
                what = first_line(err)
            else:
                status = response.http_response.status_code
                if status not in RETRY_STATUSES or not self.increment(
                    settings, request=request.http_request, response=response.http_response
                ):
                    break
                what = f"HTTP {status} {response.http_response.headers.get('x-ms-error-code', '')}".rstrip()
            backoff = self.get_backoff_time(settings)
            log.warning(
                "Azure Blob Storage: %s for %s %s; retry %d of %d in %.1f s",
                what,
                request.http_request.method,
                path,
                settings["count"],
                self.total_retries,
                backoff,
            )
            await asyncio.sleep(backoff)
        if settings["history"]:
            response.context["history"] = settings["history"]
        response.http_response.location_mode = settings["mode"]
        return response  # type: ignore[no-any-return]


def timeouts(raw: str | None) -> dict[str, float]:
    """The transport's `connection_timeout` and `read_timeout` from FILECAST_AZURE_TIMEOUT."""
    value = CONNECT_TIMEOUT
    if raw is not None:
        try:
            value = float(raw)
        except ValueError:
            value = 0.0
        if not 1 <= value <= 600:
            raise DestinationError(
                f"app setting `{TIMEOUT_SETTING}` must be a number of seconds from 1 to 600, not `{raw}`",
                code=ErrorCode.INVALID_SETTING,
            )
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
