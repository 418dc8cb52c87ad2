"""The error vocabulary: every code Filecast reports, and the one table of what each answers.

A code is what a run record's `error.code` and an API error's `code` hold; the values are the
strings users (and their scripts) already read, so they never change. `ANSWERS` gives each code
its HTTP status (core/control/api.py, core/control/console/pages.py) and its `filecast` exit code (core/cli.py), so the
API and the command line can't disagree (DESIGN.md §4: 0 succeeded, 1 failed, 2 bad input):

- bad input, the caller fixes the request, the catalog or a setting: HTTP 400 (404 for a name that
  does not exist, 413 for a catalog over the size limit) and exit 2;
- a conflict with a run in progress: HTTP 409, exit 1;
- a failed run or operation: HTTP 500, exit 1 — 503 when the error is transient (its type says so,
  core/errors.py), telling the caller a retry may succeed.

Whether an error is transient is decided by its type, never by its code: the same `disk_full` is
transient from an FTP 452 and terminal from a 552.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ErrorCode(StrEnum):
    # the request, the catalog, the settings
    BAD_REQUEST = "bad_request"
    INVALID_CATALOG = "invalid_catalog"
    CATALOG_TOO_LARGE = "catalog_too_large"
    NOT_FOUND = "not_found"
    MISSING_SETTING = "missing_setting"
    REFUSED_SETTING = "refused_setting"
    INVALID_SETTING = "invalid_setting"
    INVALID_CA_FILE = "invalid_ca_file"
    UNSUPPORTED = "unsupported"
    # any failure (the tree's root), and failures of Filecast itself
    ERROR = "error"
    INTERNAL = "internal"
    FAILED_ON_WARNING = "failed_on_warning"
    INTERRUPTED = "interrupted"
    POISONED = "poisoned"
    RUN_IN_PROGRESS = "run_in_progress"
    DUPLICATE_RUN = "duplicate_run"
    # the warehouse
    SOURCE_ERROR = "source_error"
    SOURCE_NOT_FOUND = "source_not_found"
    SOURCE_UNREACHABLE = "source_unreachable"
    SOURCE_CONNECTION_FAILED = "source_connection_failed"
    SOURCE_OUT_OF_MEMORY = "source_out_of_memory"
    STATEMENT_TIMEOUT = "statement_timeout"
    MODEL_QUERY_FAILED = "model_query_failed"
    FILE_ACCESS_DENIED = "file_access_denied"
    INVALID_PRIMARY_KEY = "invalid_primary_key"
    # encoding and encryption
    FORMAT_ERROR = "format_error"
    INVALID_TEXT = "invalid_text"
    ENCRYPTION_ERROR = "encryption_error"
    # destinations (some, like `authentication_failed`, sources too)
    DESTINATION_ERROR = "destination_error"
    DESTINATION_UNAVAILABLE = "destination_unavailable"
    AUTHENTICATION_FAILED = "authentication_failed"
    PERMISSION_DENIED = "permission_denied"
    BAD_CREDENTIALS = "bad_credentials"
    SAS_EXPIRED = "sas_expired"
    FILE_TOO_LARGE = "file_too_large"
    SIZE_MISMATCH = "size_mismatch"
    DISK_FULL = "disk_full"
    CONNECTION_LOST = "connection_lost"
    CONNECTION_REFUSED = "connection_refused"
    UNKNOWN_HOST = "unknown_host"
    TIMEOUT = "timeout"
    FTP_ERROR = "ftp_error"
    TLS_FAILED = "tls_failed"
    TLS_REQUIRED = "tls_required"
    TLS_CERTIFICATE = "tls_certificate"
    SFTP_ERROR = "sftp_error"
    HOST_KEY_MISMATCH = "host_key_mismatch"
    INVALID_PRIVATE_KEY = "invalid_private_key"
    SSH_NEGOTIATION_FAILED = "ssh_negotiation_failed"
    # the delta state and Filecast's own storage
    STATE_ERROR = "state_error"
    STATE_CONFLICT = "state_conflict"


@dataclass(frozen=True)
class Answer:
    """What a code answers: the HTTP status and the `filecast` exit code."""

    status: int
    exit: int

    def http_status(self, transient: bool) -> int:
        """503 instead of 500 for a transient failure: the caller may retry."""
        return 503 if transient and self.status == 500 else self.status


BAD_INPUT = Answer(400, 2)
UNKNOWN_NAME = Answer(404, 2)
TOO_LARGE = Answer(413, 2)
CONFLICT = Answer(409, 1)
FAILED = Answer(500, 1)
INTERRUPTED_EXIT = 130  # 128 + SIGINT, as shells report it

_BAD_INPUT = {
    ErrorCode.BAD_REQUEST,
    ErrorCode.INVALID_CATALOG,
    ErrorCode.MISSING_SETTING,
    ErrorCode.REFUSED_SETTING,
    ErrorCode.INVALID_SETTING,
    ErrorCode.INVALID_CA_FILE,
    ErrorCode.UNSUPPORTED,
}

ANSWERS: dict[ErrorCode, Answer] = {
    **{code: FAILED for code in ErrorCode},
    **{code: BAD_INPUT for code in _BAD_INPUT},
    ErrorCode.NOT_FOUND: UNKNOWN_NAME,
    ErrorCode.CATALOG_TOO_LARGE: TOO_LARGE,
    ErrorCode.RUN_IN_PROGRESS: CONFLICT,
    ErrorCode.DUPLICATE_RUN: CONFLICT,
    ErrorCode.INTERRUPTED: Answer(503, INTERRUPTED_EXIT),
}


def answer(code: str) -> Answer:
    """The table's entry for `code`; a code outside the vocabulary (an old record's) is a failure."""
    try:
        return ANSWERS[ErrorCode(code)]
    except ValueError:
        return FAILED


def markdown_table() -> str:
    """The README's "Errors and exit codes" table, one row per code (tests check the README holds it)."""
    rows = ["| code | HTTP | exit |", "|---|---|---|"]
    for code in ErrorCode:
        entry = ANSWERS[code]
        status = f"{entry.status} (503 when transient)" if entry.status == 500 else str(entry.status)
        rows.append(f"| `{code.value}` | {status} | {entry.exit} |")
    return "\n".join(rows)
