"""Reads typed fields out of a raw catalog mapping, recording each problem instead of raising.

Every section of the catalog (sources, models, destinations, activations, alerts) is read with a
`Reader`, so a document with many mistakes gets them all in one list, each with its path.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import Problem
from ..settings import allowed_settings, setting_refusal


class Reader:
    """Reads typed fields out of a raw mapping, recording a problem instead of raising."""

    def __init__(self, problems: list[Problem], path: str, raw: Any):
        self.problems = problems
        self.path = path
        self.raw: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
        if not isinstance(raw, Mapping):
            self.problem("", f"must be a mapping of fields, got `{show(raw)}`")

    def problem(self, key: str, message: str) -> None:
        self.problems.append(Problem(f"{self.path}.{key}" if key else self.path, message))

    def known(self, allowed: Sequence[str]) -> None:
        for key in self.raw:
            if key not in allowed:
                self.problem(str(key), f"unknown field; allowed fields are: {', '.join(allowed)}")

    def text(self, key: str, *, required: bool = False, default: str | None = None) -> str | None:
        value = self.raw.get(key)
        if value is None:
            if required:
                self.problem(key, "is required")
            return default
        if not isinstance(value, str) or not value.strip():
            self.problem(key, f"must be a non-empty string, got `{show(value)}`")
            return default
        return value

    def choice(self, key: str, choices: Sequence[str], default: str) -> str:
        value = self.raw.get(key, default)
        if value not in choices:
            self.problem(key, f"must be one of {', '.join(choices)}; got `{show(value)}`")
            return default
        return str(value)

    def flag(self, key: str, default: bool) -> bool:
        value = self.raw.get(key, default)
        if not isinstance(value, bool):
            self.problem(key, f"must be true or false, got `{show(value)}`")
            return default
        return value

    def integer(self, key: str, *, minimum: int, maximum: int | None = None) -> int | None:
        value = self.raw.get(key)
        if value is None:
            return None
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or value < minimum
            or (maximum is not None and value > maximum)
        ):
            bound = f"from {minimum} to {maximum}" if maximum is not None else f"of at least {minimum}"
            self.problem(key, f"must be a whole number {bound}, got `{show(value)}`")
            return None
        return value

    def setting(self, key: str, *, required: bool = False) -> str | None:
        value = self.text(key, required=required)
        if value is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.:-]*", value):
            self.problem(key, f"must name an app setting (letters, digits, `_`), got `{show(value)}`")
        elif value is not None and (refusal := setting_refusal(value, allowed_settings())):
            self.problem(key, refusal)
        return value

    def reference(self, key: str, targets: Mapping[str, Any], kind: str, *, required: bool = True) -> str | None:
        value = self.text(key, required=required)
        if value is not None and value not in targets:
            known = ", ".join(sorted(targets)) or "(none)"
            self.problem(key, f"unknown {kind} `{value}`; {kind}s are: {known}")
            return None
        return value


def show(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:57] + "..."
