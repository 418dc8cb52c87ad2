"""Bounded catalog parsing: size, nesting depth and alias expansion are checked before a catalog
document is built, so a hostile catalog fails in well under a second with a clear error.

A YAML alias is shared, not copied, when the document is built, but everything that walks the
document afterwards (validation, the stored JSON copy) pays for every expansion: nine levels of
ten aliases ("billion laughs") is 10^9 nodes. PyYAML's event parser is iterative, so one pass over
the events measures depth and the expanded node count, anchors' sizes remembered, before the
recursive composer (which ends in `RecursionError` on 100 k nested `[`) ever runs.
"""

from __future__ import annotations

from typing import Any

import yaml

from ..error_codes import ErrorCode
from ..errors import CatalogError

MAX_CATALOG_BYTES = 2 * 1024 * 1024  # a catalog of hundreds of activations is well under 1 MiB
MAX_DEPTH = 64  # a catalog is nested about 6 levels deep
MAX_NODES = 500_000  # values after alias expansion


class CatalogTooLarge(CatalogError):
    """The catalog is over MAX_CATALOG_BYTES (HTTP 413)."""

    code = ErrorCode.CATALOG_TOO_LARGE


def check_size(size: int, origin: str) -> None:
    if size > MAX_CATALOG_BYTES:
        raise CatalogTooLarge(
            f"`{origin}` is {size:,} bytes, over the {MAX_CATALOG_BYTES:,}-byte limit of a catalog; "
            "split it, or remove what the activations do not use"
        )


def check_structure(text: str, origin: str) -> None:
    """Raise `CatalogError` when the document nests deeper than MAX_DEPTH or expands (aliases
    included) to more than MAX_NODES values. YAML syntax errors are left to the loader."""
    sizes: dict[str, int] = {}
    stack: list[list[Any]] = [[None, 0]]  # [anchor, expanded size so far] per open collection
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.CollectionStartEvent):
                stack.append([event.anchor, 1])
                if len(stack) - 1 > MAX_DEPTH:
                    raise CatalogError(
                        f"`{origin}` nests deeper than {MAX_DEPTH} levels{_where(event)}; a catalog needs about 6"
                    )
                continue
            if isinstance(event, yaml.CollectionEndEvent):
                anchor, size = stack.pop()
            elif isinstance(event, yaml.ScalarEvent):
                anchor, size = event.anchor, 1
            elif isinstance(event, yaml.AliasEvent):
                anchor, size = None, sizes.get(event.anchor or "", 1)
            else:
                continue
            if anchor is not None:
                sizes[anchor] = size
            stack[-1][1] += size
            if stack[-1][1] > MAX_NODES or size > MAX_NODES:
                raise CatalogError(
                    f"`{origin}` expands to more than {MAX_NODES:,} values{_where(event)} (YAML "
                    "aliases `*name` repeat what `&name` anchors); write the values out, or use "
                    "fewer nested aliases"
                )
    except yaml.YAMLError:
        return  # the loader reports it, with its line and column


def _where(event: Any) -> str:
    mark = getattr(event, "start_mark", None)
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
