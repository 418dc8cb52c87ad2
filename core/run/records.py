"""The run record (DESIGN.md §4): one JSON object per run, the same in the CLI, the API and history."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    text = moment.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    """An ISO 8601 time; a time without zone is taken as UTC."""
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def new_run_id(logical_time: datetime) -> str:
    """Sortable by logical time, unique by its random tail."""
    return f"{logical_time.astimezone(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


@dataclass
class Rows:
    read: int = 0
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    exported: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class RunRecord:
    run_id: str
    activation: str
    trigger: str
    logical_time: datetime
    status: str = "queued"
    started_at: datetime | None = None
    finished_at: datetime | None = None
    full: bool = True
    rows: Rows = field(default_factory=Rows)
    files: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, str]] = field(default_factory=list)
    error: dict[str, str] | None = None
    alerts: list[dict[str, Any]] = field(default_factory=list)  # delivery outcomes (core/control/alerts.py)

    def warn(self, code: str, message: str) -> None:
        self.warnings.append({"code": code, "message": message})

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "activation": self.activation,
            "status": self.status,
            "trigger": self.trigger,
            "logical_time": iso(self.logical_time),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "full": self.full,
            "rows": self.rows.as_dict(),
            "files": list(self.files),
            "warnings": list(self.warnings),
            "error": self.error,
            "alerts": list(self.alerts),
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> RunRecord:
        def when(key: str) -> datetime | None:
            return parse_time(doc[key]) if doc.get(key) else None

        logical = when("logical_time")
        assert logical is not None
        return cls(
            run_id=doc["run_id"],
            activation=doc["activation"],
            trigger=doc["trigger"],
            logical_time=logical,
            status=doc["status"],
            started_at=when("started_at"),
            finished_at=when("finished_at"),
            full=bool(doc.get("full", True)),
            rows=Rows(**doc.get("rows", {})),
            files=list(doc.get("files", [])),
            warnings=list(doc.get("warnings", [])),
            error=doc.get("error"),
            alerts=list(doc.get("alerts", [])),
        )
