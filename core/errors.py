"""One exception tree for Filecast.

    FilecastError                 (transient: bool decides whether the host retries)
    ├── CatalogError              bad catalog or bad request input            terminal
    │   ├── CatalogInvalid        validation found problems (carries them)   terminal
    │   └── SchemaMismatch        the real columns don't fit (carries it)    terminal
    ├── SettingError              a *_setting names an app setting not set     terminal
    ├── SourceError               the warehouse failed                        either
    ├── FormatError               a value could not be encoded                terminal
    ├── DestinationError          FTP / Azure Blob failed                     either
    ├── StateError                row-hash state could not be read/written   either
    │   └── StateConflict         another run committed first                 terminal
    ├── RunInProgress             the activation already runs (lease held)    transient
    └── DuplicateRun              the same run id was delivered twice          dropped

Messages are the ones a user reads: what went wrong, the value in backticks, how to fix it.
They never contain secrets.
"""

from __future__ import annotations

from dataclasses import dataclass


class FilecastError(Exception):
    """Base of every error Filecast raises on purpose."""

    code = "error"
    transient = False

    def __init__(self, message: str, *, transient: bool | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        if transient is not None:
            self.transient = transient
        if code is not None:
            self.code = code

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True)
class Problem:
    """One validation problem, located by a dotted path into the catalog."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class CatalogError(FilecastError):
    code = "invalid_catalog"


class CatalogInvalid(CatalogError):
    """Validation found one or more problems; all of them are carried."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        count = len(self.problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"the catalog has {count} {noun}:\n{lines}")


class SchemaMismatch(CatalogError):
    """A check against a source's real columns failed (core/columns.py); `problem` carries the path
    and the message apart, the error's message is `path: message`."""

    def __init__(self, problem: Problem):
        self.problem = problem
        super().__init__(str(problem))


class NotFound(CatalogError):
    code = "not_found"


class SettingError(FilecastError):
    code = "missing_setting"


class SourceError(FilecastError):
    code = "source_error"


class FormatError(FilecastError):
    code = "format_error"


class DestinationError(FilecastError):
    code = "destination_error"


class StateError(FilecastError):
    code = "state_error"


class StateConflict(StateError):
    code = "state_conflict"


class RunInProgress(FilecastError):
    code = "run_in_progress"
    transient = True


class DuplicateRun(FilecastError):
    """The same run id is already being (or was) processed: the message is dropped."""

    code = "duplicate_run"
