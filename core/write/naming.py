"""File names: template placeholders (all UTC, at the run's logical time), parts and suffixes.

Name = folder + rendered `file_name` + suffix (`_added`…) + part suffix + extension (+ `.gz`)
(+ `.pgp` / `.asc` when encrypted).
"""

from __future__ import annotations

import itertools
import re
import string
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

TIME_PLACEHOLDERS = ("YYYY", "YY", "MM", "DD", "HH", "mm", "ss", "ms", "X", "x")
OTHER_PLACEHOLDERS = ("activation", "run_id", "part")
PLACEHOLDERS = TIME_PLACEHOLDERS + OTHER_PLACEHOLDERS
# C0 and C1 controls, and the bidirectional overrides and isolates that make a name display as
# another one (`invoice\u202egpj.exe`).
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
MAX_BLOB_NAME = 1024  # Azure: a blob name is at most 1,024 characters
MAX_BLOB_SEGMENTS = 254  # Azure: at most 254 path segments
MAX_FTP_PATH = 4096  # bytes of a path on common FTP servers' file systems (PATH_MAX)
MAX_FTP_NAME = 255  # bytes of one name (NAME_MAX)


def _fields(template: str) -> list[str | None]:
    return [name for _, name, _, _ in string.Formatter().parse(template)]


def placeholder_problems(template: str, allowed: tuple[str, ...] = PLACEHOLDERS) -> list[str]:
    try:
        fields = list(string.Formatter().parse(template))
    except ValueError as exc:
        return [f"`{template}` has an unbalanced brace ({exc}); write placeholders as `{{YYYY}}`"]
    problems = []
    for _, name, spec, conversion in fields:
        if name is None:
            continue
        if name not in allowed:
            problems.append(
                f"unknown placeholder `{{{name}}}`; placeholders are: " + ", ".join(f"{{{p}}}" for p in allowed)
            )
        elif spec or conversion:
            written = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            problems.append(
                f"`{written}` has a format spec or conversion, which placeholders do not take; write `{{{name}}}`"
            )
    return problems


def template_problems(template: str) -> list[str]:
    """Problems with a `file_name` template: placeholders, and names that escape the folder."""
    problems = placeholder_problems(template)
    if CONTROL.search(template):
        problems.append("must not contain control characters")
    if "/" in template or "\\" in template:
        problems.append(f"`{template}` must be a file name, not a path: put folders in `folder`")
    elif template.strip() in (".", "..") or template.startswith(".."):
        problems.append(f"`{template}` would escape the folder")
    return problems


def folder_problems(folder: str, destination_type: str | None) -> list[str]:
    """FTP folders may be absolute or relative with `.`/`..`; blob folders are name prefixes."""
    problems = placeholder_problems(folder, (*TIME_PLACEHOLDERS, "activation"))
    if CONTROL.search(folder) or "\\" in folder:
        problems.append("must not contain control characters or backslashes")
    if destination_type == "azure_blob" and ".." in folder.split("/"):
        problems.append(f"`{folder}`: a blob folder is a name prefix and cannot go up with `..`")
    elif destination_type == "azure_blob" and folder.startswith("/"):
        problems.append(f"`{folder}`: a blob folder is a name prefix and cannot start with `/`")
    return problems


def path_problems(path: str, destination_type: str | None) -> list[str]:
    """Problems with a rendered file path (folder + name): checked for every file a run writes, so
    no template can render its way out of the folder or the container."""
    problems = []
    if CONTROL.search(path) or "\\" in path:
        problems.append("has control characters, bidirectional overrides or backslashes")
    segments = path.split("/")
    name = segments[-1]
    if name in ("", ".", ".."):
        problems.append("does not end in a file name")
    if destination_type == "azure_blob":
        if path.startswith("/") or any(s in ("", ".", "..") for s in segments):
            problems.append("a blob name cannot start with `/` or have empty, `.` or `..` segments")
        if len(path) > MAX_BLOB_NAME:
            problems.append(f"is {len(path)} characters, over Azure's {MAX_BLOB_NAME}-character blob name limit")
        if len(segments) > MAX_BLOB_SEGMENTS:
            problems.append(f"has {len(segments)} segments, over Azure's {MAX_BLOB_SEGMENTS}")
    else:
        if len(path.encode()) > MAX_FTP_PATH:
            problems.append(f"is {len(path.encode())} bytes, over the {MAX_FTP_PATH}-byte path limit")
        if any(len(s.encode()) > MAX_FTP_NAME for s in segments):
            problems.append(f"has a name over {MAX_FTP_NAME} bytes")
    return problems


def check_path(path: str, destination_type: str | None, template: str) -> str:
    """`path` if it is a safe file path for the destination, else a `CatalogError`."""
    problems = path_problems(path, destination_type)
    if problems:
        from ..errors import CatalogError

        shown = path if len(path) <= 120 else path[:117] + "..."
        raise CatalogError(
            f"the file name `{ascii(shown)[1:-1]}` rendered from `{template}` "
            + "; ".join(problems)
            + ": fix `folder` and `file_name`"
        )
    return path


def time_values(moment: datetime) -> dict[str, str]:
    moment = moment.astimezone(UTC)
    millis = (
        int(moment.timestamp() * 1000)
        if moment.microsecond % 1000 == 0
        else (int(moment.replace(microsecond=0).timestamp()) * 1000 + moment.microsecond // 1000)
    )
    return {
        "YYYY": f"{moment.year:04d}",
        "YY": f"{moment.year % 100:02d}",
        "MM": f"{moment.month:02d}",
        "DD": f"{moment.day:02d}",
        "HH": f"{moment.hour:02d}",
        "mm": f"{moment.minute:02d}",
        "ss": f"{moment.second:02d}",
        "ms": f"{moment.microsecond // 1000:03d}",
        "X": str(millis // 1000),
        "x": str(millis),
    }


@dataclass(frozen=True)
class NameContext:
    logical_time: datetime
    activation: str
    run_id: str


def render(template: str, context: NameContext, part: int | None = None) -> str:
    values = time_values(context.logical_time)
    values["activation"] = context.activation
    values["run_id"] = context.run_id
    values["part"] = f"{part or 1:05d}"
    return template.format(**values)


def has_part(template: str) -> bool:
    return "part" in _fields(template)


def join_folder(folder: str, name: str) -> str:
    """`exports/daily` + `a.csv`; an absolute FTP folder keeps its leading `/`."""
    if folder in ("", "."):
        return name
    return folder.rstrip("/") + "/" + name if folder.rstrip("/") else "/" + name


def file_name(
    template: str,
    folder: str,
    context: NameContext,
    *,
    extension: str,
    suffix: str = "",
    part: int | None = None,
    gzip: bool = False,
    envelope: str = "",
    destination_type: str | None = None,
) -> str:
    """The full path of one file: `x_added-00002.csv.gz`; `part` adds `-00002` unless the template
    places `{part}` itself; `envelope` (`.pgp`, `.asc`) comes last. The rendered path is checked
    (`path_problems`)."""
    base = render(template, context, part) + suffix
    if part is not None and not has_part(template):
        base += f"-{part:05d}"
    name = f"{base}.{extension}" + (".gz" if gzip else "") + envelope
    if "/" in name or name in (".", ".."):
        from ..errors import CatalogError

        raise CatalogError(f"`{template}` renders `{name}`, which is not a file name: fix `file_name`")
    path = join_folder(render(folder, context), name)
    return check_path(path, destination_type, f"{folder}/{template}" if folder else template)


# Seconds that each placeholder tells apart: a name changes at least this often.
GRANULARITY = {
    "ms": 0.001,
    "x": 0.001,
    "run_id": 0.0,
    "ss": 1,
    "X": 1,
    "mm": 60,
    "HH": 3600,
    "DD": 86400,
    "MM": 28 * 86400,
    "YY": 365 * 86400,
    "YYYY": 365 * 86400,
}


def overwrite_risk(activation: Any) -> str | None:
    """A scheduled activation whose name doesn't change between two runs overwrites the previous file:
    a SNAPSHOT (or FULL ONLY) file is replaced by a newer full one; a delta file holds changes that no
    later file repeats, so overwriting it before the partner collected it loses them."""
    if activation.schedule is None:
        return None
    names = {n for n in _fields(activation.file_name) + _fields(activation.folder) if n}
    finest = min((GRANULARITY[n] for n in names if n in GRANULARITY), default=None)
    interval = schedule_interval(activation.schedule)
    if finest is not None and finest <= interval:
        return None
    said = f"`{activation.file_name}` names the same file for two runs of schedule `{activation.schedule}`, so "
    if activation.run_type == "full_then_delta":
        return (
            said + f"each run overwrites the previous run's file, and with `{activation.sync_mode}` the changes "
            "it holds are lost if the partner has not collected it yet; add a time placeholder as fine as the "
            "schedule (e.g. {HH}{mm}) or {run_id}"
        )
    return said + "each run overwrites the previous file; add a finer time placeholder (e.g. {HH}) if that is not meant"


def schedule_interval(schedule: str) -> float:
    """The shortest gap in seconds between two occurrences of a cron schedule (over the next 60)."""
    from croniter import croniter

    start = datetime(2025, 1, 1, tzinfo=UTC)
    it = croniter(schedule, start)
    times = [it.get_next(datetime) for _ in range(60)]
    return float(min((b - a).total_seconds() for a, b in itertools.pairwise(times)))
