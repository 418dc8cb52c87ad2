"""`validate --probe` for SFTP destinations: each server's host key, whether it is pinned, and the
line to paste into `host_key`. Read from the raw catalog, so it works before any pin exists (the
catalog is invalid until `host_key` is set)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from ..errors import DestinationError, FilecastError, Problem
from .sftp_keys import fingerprint, known_hosts_line, pins, server_key

TIMEOUT = 15.0


def _sftp_entries(doc: Any) -> list[tuple[str, dict[str, Any]]]:
    destinations = doc.get("destinations") if isinstance(doc, dict) else None
    if not isinstance(destinations, dict):
        return []
    return [
        (str(did), raw)
        for did, raw in destinations.items()
        if isinstance(raw, dict) and raw.get("type") == "sftp" and isinstance(raw.get("host"), str)
    ]


async def _probe(did: str, raw: dict[str, Any], lines: list[str], problems: list[Problem]) -> None:
    from ..catalog.model import Destination
    from .sftp_errors import SftpContext, map_sftp_errors

    port: int = raw["port"] if isinstance(raw.get("port"), int) else 22
    host = raw["host"]
    context = SftpContext(Destination(did, "sftp", host=host, port=port), [], TIMEOUT)
    entries = raw.get("host_key")
    entries = [entries] if isinstance(entries, str) else entries if isinstance(entries, list) else []
    pinned_keys = pins([str(e) for e in entries])
    try:
        with map_sftp_errors(context, "connect"):
            key = await asyncio.wait_for(server_key(host, port, TIMEOUT, pinned_keys.algorithms), TIMEOUT)
    except DestinationError as exc:
        problems.append(Problem(f"destinations.{did}", exc.message))
        return
    if key is None:
        problems.append(Problem(f"destinations.{did}", f"{host}:{port} presented no host key to pin"))
        return
    seen, line = fingerprint(key), known_hosts_line(host, port, key)
    pinned = seen in pinned_keys.fingerprints
    state = "pinned" if pinned else ("NOT pinned" if entries else "no `host_key` yet")
    lines.append(
        f"destinations.{did}: {host}:{port} presents host key {seen} ({key.get_algorithm()}), {state}; "
        f'to pin it, set\n    host_key: "{seen}"\n  or the known_hosts line\n    host_key: "{line}"'
    )
    if entries and not pinned:
        problems.append(
            Problem(
                f"destinations.{did}.host_key",
                f"the server presents `{seen}`, which is not "
                "pinned: if it is the server you expect, pin it (the line is printed above)",
            )
        )


def probe_host_keys(path: str | Path) -> tuple[list[str], list[Problem]]:
    """Lines to show, and problems (a server that can't be reached, a key that is not the pinned one)."""
    from ..catalog.parse import parse_text

    try:
        doc = parse_text(Path(path).read_text(encoding="utf-8"), str(path))
    except (OSError, FilecastError):
        return [], []  # load_catalog reports it
    lines: list[str] = []
    problems: list[Problem] = []

    async def probe_all() -> None:
        await asyncio.gather(*(_probe(did, raw, lines, problems) for did, raw in _sftp_entries(doc)))

    if _sftp_entries(doc):
        asyncio.run(probe_all())
    return lines, problems
