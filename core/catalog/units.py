"""Human sizes (`500KB`, `100MB`, `2GB`) for `max_file_size`."""

from __future__ import annotations

import re

UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "kib": 1024, "mib": 1024**2, "gib": 1024**3}


def parse_size(value: object) -> int:
    """Bytes for a size such as `100MB` (decimal units) or `64MiB` (binary units); at least 1 KB."""
    if isinstance(value, bool):
        raise ValueError(f"must be a size such as `100MB`, got `{value}`")
    if isinstance(value, int):
        size = value
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(value))
        unit = match.group(2).lower() if match else None
        if match is None or unit not in UNITS:
            raise ValueError(f"must be a size such as `500KB`, `100MB` or `2GB`, got `{value}`")
        size = int(float(match.group(1)) * UNITS[unit])
    if size < 1000:
        raise ValueError(f"must be at least 1KB, got `{value}`")
    return size
