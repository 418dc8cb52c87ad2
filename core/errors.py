"""One exception tree for Filecast.

    FilecastError                 (the type decides whether the host retries: `transient`)
    ├── CatalogError              bad catalog or bad request input            terminal
    │   ├── CatalogInvalid        validation found problems (carries them)   terminal
    │   ├── SchemaMismatch        the real columns don't fit (carries it)    terminal
    │   └── NotFound              a named object does not exist               terminal
    ├── SettingError              a *_setting names an app setting not set     terminal
    ├── SourceError               the warehouse failed                        terminal
    │   ├── SourceUnavailable     unreachable, timed out, busy: retried       transient
    │   └── InvalidKeys           duplicate/NULL keys with on_duplicate_key=fail terminal
    ├── FormatError               a value could not be encoded                terminal
    ├── EncryptionError           OpenPGP failed                              terminal
    │   └── EncryptionInterrupted the helper process died: retried            transient
    ├── DestinationError          FTP / SFTP / Azure Blob failed              terminal
    │   └── DestinationUnavailable  throttled, unreachable, 4xx FTP: retried   transient
    ├── StateError                row-hash state or run records failed        terminal
    │   ├── StateConflict         another run committed first                 terminal
    │   └── StateUnavailable      throttled, unreachable: retried             transient
    ├── RunInProgress             the activation already runs (lease held)    transient
    └── DuplicateRun              the same run id was delivered twice          dropped

Transience belongs to the type, not to a raise: to report a retryable failure, raise the
transient subclass. `code` (core/error_codes.py) says what failed, for records and the API; each
class has a default, and a raise may name a more precise one. `ANSWERS` there maps codes to HTTP
statuses and exit codes.

Messages are the ones a user reads: what went wrong, the value in backticks, how to fix it.
They never contain secrets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .error_codes import ErrorCode


class FilecastError(Exception):
    """Base of every error Filecast raises on purpose."""

    code: ErrorCode = ErrorCode.ERROR
    transient: ClassVar[bool] = False

    def __init__(self, message: str, *, code: ErrorCode | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = ErrorCode(code)  # a string outside the vocabulary fails here, loudly

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code.value, "message": self.message}


@dataclass(frozen=True)
class Problem:
    """One validation problem, located by a dotted path into the catalog."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class CatalogError(FilecastError):
    code = ErrorCode.INVALID_CATALOG


class CatalogInvalid(CatalogError):
    """Validation found one or more problems; all of them are carried."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        count = len(self.problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"the catalog has {count} {noun}:\n{lines}")


class SchemaMismatch(CatalogError):
    """A check against a source's real columns failed (core/catalog/columns.py); `problem` carries the path
    and the message apart, the error's message is `path: message`."""

    def __init__(self, problem: Problem):
        self.problem = problem
        super().__init__(str(problem))


class NotFound(CatalogError):
    code = ErrorCode.NOT_FOUND


class SettingError(FilecastError):
    code = ErrorCode.MISSING_SETTING


class SourceError(FilecastError):
    code = ErrorCode.SOURCE_ERROR


class SourceUnavailable(SourceError):
    """The warehouse is unreachable, busy or timed out: the run is retried."""

    transient = True


class InvalidKeys(SourceError):
    """The source has duplicate or NULL primary keys and the activation asked to fail on them."""

    code = ErrorCode.INVALID_PRIMARY_KEY


class FormatError(FilecastError):
    code = ErrorCode.FORMAT_ERROR


class EncryptionError(FilecastError):
    code = ErrorCode.ENCRYPTION_ERROR


class EncryptionInterrupted(EncryptionError):
    """The OpenPGP helper process died (killed, out of memory): the keys were checked, so retry."""

    transient = True


class DestinationError(FilecastError):
    code = ErrorCode.DESTINATION_ERROR


class DestinationUnavailable(DestinationError):
    """Throttled, unreachable, a broken connection or a 4xx FTP reply: the run is retried."""

    transient = True


class StateError(FilecastError):
    code = ErrorCode.STATE_ERROR


class StateConflict(StateError):
    code = ErrorCode.STATE_CONFLICT


class StateUnavailable(StateError):
    """The storage account is throttling or unreachable: the run is retried."""

    transient = True


class RunInProgress(FilecastError):
    code = ErrorCode.RUN_IN_PROGRESS
    transient = True


class DuplicateRun(FilecastError):
    """The same run id is already being (or was) processed: the message is dropped."""

    code = ErrorCode.DUPLICATE_RUN
