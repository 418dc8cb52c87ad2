"""The error vocabulary: every code in the one table, the API and the CLI answering from it alike,
and transience decided by an error's type (core/error_codes.py, core/errors.py)."""

from __future__ import annotations

import ast
import inspect
import sys
from pathlib import Path
from typing import Any

import pytest

from core import cli, errors
from core.control import api
from core.error_codes import ANSWERS, ErrorCode, markdown_table
from core.errors import (
    DestinationError,
    DestinationUnavailable,
    FilecastError,
    InvalidKeys,
    SettingError,
    SourceError,
    StateError,
    StateUnavailable,
)
from core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
BAD_INPUT_STATUSES = {400, 404, 413}


def _tree(cls: type[FilecastError] = FilecastError) -> list[type[FilecastError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found += _tree(sub)
    return found


def _codes_named_in(path: Path) -> set[str]:
    """Every `ErrorCode.X` the source names; a `code="…"` string instead fails."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "code" and isinstance(node.value, ast.Constant):
            raise AssertionError(
                f"{path.name}:{node.value.lineno}: `code={node.value.value!r}` is a free string; "
                "name an ErrorCode member"
            )
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "ErrorCode"
    }


def test_every_code_has_an_answer() -> None:
    assert set(ANSWERS) == set(ErrorCode)
    for code, answer in ANSWERS.items():
        assert answer.exit in (1, 2, 130), code
        assert (answer.exit == 2) == (answer.status in BAD_INPUT_STATUSES), code


def test_the_values_users_read_are_unchanged() -> None:
    """Run records and API answers carry these strings: renaming a member must not change them."""
    assert {c.value for c in ErrorCode} >= {
        "invalid_catalog",
        "not_found",
        "bad_request",
        "catalog_too_large",
        "missing_setting",
        "refused_setting",
        "source_error",
        "format_error",
        "destination_error",
        "destination_unavailable",
        "state_error",
        "state_conflict",
        "run_in_progress",
        "duplicate_run",
        "internal",
        "interrupted",
        "poisoned",
        "invalid_primary_key",
        "authentication_failed",
        "permission_denied",
        "disk_full",
        "connection_lost",
    }
    assert all(c.value == c.name.lower() for c in ErrorCode)


def test_every_code_the_code_base_names_is_in_the_vocabulary() -> None:
    named: set[str] = set()
    for path in [*sorted((ROOT / "core").rglob("*.py")), ROOT / "function_app.py"]:
        named |= _codes_named_in(path)
    assert named <= set(ErrorCode.__members__), named - set(ErrorCode.__members__)
    assert all(isinstance(cls.code, ErrorCode) for cls in _tree())


def test_a_string_outside_the_vocabulary_is_refused() -> None:
    with pytest.raises(ValueError, match="'no_such_code' is not a valid ErrorCode"):
        FilecastError("x", code="no_such_code")  # type: ignore[arg-type]
    assert FilecastError("x", code="disk_full").code is ErrorCode.DISK_FULL  # type: ignore[arg-type]


def _api_answer(monkeypatch: pytest.MonkeyPatch, exc: FilecastError) -> tuple[int, Any]:
    def fail(settings: Settings) -> Any:
        raise exc

    monkeypatch.setattr(api, "Services", fail)
    return api.handle(Settings({}), "list_activations", {})


def _cli_exit(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], exc: FilecastError) -> int:
    def fail() -> Settings:
        raise exc

    monkeypatch.setattr(Settings, "load", staticmethod(fail))
    monkeypatch.setattr(cli, "_configure_logging", lambda: cli._LogHandler(sys.stderr))  # leave the root logger be
    code = cli.main(["runs", "anything"])
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: {exc.message}"
    return code


@pytest.mark.parametrize("code", list(ErrorCode), ids=[c.value for c in ErrorCode])
@pytest.mark.parametrize("kind", [DestinationError, DestinationUnavailable], ids=["terminal", "transient"])
def test_the_api_and_the_cli_agree(
    code: ErrorCode, kind: type[FilecastError], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    exc = kind(f"failed with `{code.value}`", code=code)
    status, body = _api_answer(monkeypatch, exc)
    exit_code = _cli_exit(monkeypatch, capsys, exc)
    assert body == {"error": {"code": code.value, "message": f"failed with `{code.value}`"}}
    assert exit_code == ANSWERS[code].exit
    expected = 503 if kind.transient and ANSWERS[code].status == 500 else ANSWERS[code].status
    assert status == expected
    assert (exit_code == 2) == (status in BAD_INPUT_STATUSES)


@pytest.mark.parametrize(
    "exc, status, exit_code",
    [
        # answered 400 by the API but exited 1 before: a destination's own catalog check
        (DestinationError("destination `d` has no `container`", code=ErrorCode.INVALID_CATALOG), 400, 2),
        # exited 2 but answered 500 before: a missing or refused setting is bad input
        (SettingError("app setting `X` is not set"), 400, 2),
        (SettingError("app setting `X` is refused", code=ErrorCode.REFUSED_SETTING), 400, 2),
        (DestinationError("app setting `FILECAST_FTP_TIMEOUT` must be…", code=ErrorCode.INVALID_SETTING), 400, 2),
        # answered 404 but exited 1 before: a container the catalog names that does not exist
        (DestinationError("container `x` was not found", code=ErrorCode.NOT_FOUND), 404, 2),
        (StateUnavailable("the storage account could not be reached"), 503, 1),
        (StateError("storage answered 403"), 500, 1),
        (InvalidKeys("the source has a duplicate primary key"), 500, 1),
    ],
    ids=[
        "destination-catalog",
        "missing-setting",
        "refused-setting",
        "invalid-setting",
        "missing-container",
        "state-unreachable",
        "state-refused",
        "invalid-keys",
    ],
)
def test_former_mismatches_answer_alike(
    exc: FilecastError, status: int, exit_code: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _api_answer(monkeypatch, exc)[0] == status
    assert _cli_exit(monkeypatch, capsys, exc) == exit_code


def test_type_decides_transience() -> None:
    assert "transient" not in inspect.signature(FilecastError.__init__).parameters
    with pytest.raises(TypeError):
        DestinationError("x", transient=True)  # type: ignore[call-arg]
    for cls in _tree():
        assert isinstance(cls.__dict__.get("transient", cls.transient), bool), cls
    transient = {cls.__name__ for cls in _tree() if cls.transient}
    assert transient == {
        "SourceUnavailable",
        "DestinationUnavailable",
        "StateUnavailable",
        "EncryptionInterrupted",
        "RunInProgress",
    }
    # the same code, either way: the type says which
    late = DestinationUnavailable("452 no space", code=ErrorCode.DISK_FULL)
    full = DestinationError("552 no space", code=ErrorCode.DISK_FULL)
    assert (late.code, late.transient, full.code, full.transient) == (
        ErrorCode.DISK_FULL,
        True,
        ErrorCode.DISK_FULL,
        False,
    )
    # a transient subclass keeps its family's default code, so records read as before
    assert StateUnavailable("x").code is StateError("x").code is ErrorCode.STATE_ERROR
    assert isinstance(late, DestinationError) and isinstance(StateUnavailable("x"), StateError)


def test_invalid_keys_is_in_the_tree() -> None:
    assert InvalidKeys.__module__ == errors.__name__ and issubclass(InvalidKeys, SourceError)
    assert InvalidKeys("x").as_dict() == {"code": "invalid_primary_key", "message": "x"}
    assert not InvalidKeys.transient


def test_the_readme_lists_every_code() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert markdown_table() in readme, "README.md's `Errors and exit codes` table is stale: paste markdown_table()"
