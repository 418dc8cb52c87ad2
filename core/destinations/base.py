"""The destination seam: files are staged while they stream, then published all at once.

A run opens one `Upload` per file, writes its bytes as they are produced, `finish`es it (all
bytes sent and checked, still invisible under the target name), and only when every file of the
run is finished does it `publish` them. A failed run `discard`s what it staged, so a reader never
sees a partial file and a target that existed keeps its old content.
"""

from __future__ import annotations

from types import TracebackType
from typing import Protocol


class Upload(Protocol):
    path: str  # the target path, as the run record shows it

    async def write(self, data: bytes) -> None: ...

    async def finish(self, size: int, md5: bytes) -> None:
        """All bytes are written: flush, check the stored size, keep it invisible."""

    async def publish(self) -> None:
        """Make the file visible under its target name, atomically (replacing an older one)."""

    async def discard(self) -> None:
        """Remove whatever was staged; best effort, never raises."""


class Destination(Protocol):
    description: str  # where files go, for messages (never a secret)
    warnings: list[dict[str, str]]  # e.g. a SAS token expiring soon

    async def __aenter__(self) -> Destination: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def open(self, path: str, *, content_type: str) -> Upload: ...
