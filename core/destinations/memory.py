"""An in-memory destination for unit tests, with the same staging/publish semantics."""

from __future__ import annotations

from types import TracebackType

from ..errors import DestinationError, DestinationUnavailable


class MemoryUpload:
    def __init__(self, owner: MemoryDestination, path: str, content_type: str):
        self.owner = owner
        self.path = path
        self.content_type = content_type
        self.buffer = bytearray()
        self.finished = False

    async def write(self, data: bytes) -> None:
        self.owner.check_fault("write", self.path)
        self.buffer += data

    async def finish(self, size: int, md5: bytes) -> None:
        if size != len(self.buffer):
            raise DestinationError(f"size mismatch for `{self.path}`: wrote {size}, stored {len(self.buffer)}")
        self.finished = True

    async def publish(self) -> None:
        self.owner.check_fault("publish", self.path)
        self.owner.files[self.path] = bytes(self.buffer)
        self.owner.content_types[self.path] = self.content_type

    async def discard(self) -> None:
        self.owner.discarded.append(self.path)


class MemoryDestination:
    """Published files in `files`; `fail_on={(action, path-substring)}` injects failures."""

    def __init__(self, fail_on: set[tuple[str, str]] | None = None):
        self.description = "memory"
        self.files: dict[str, bytes] = {}
        self.content_types: dict[str, str] = {}
        self.discarded: list[str] = []
        self.warnings: list[dict[str, str]] = []
        self.fail_on = fail_on or set()

    def check_fault(self, action: str, path: str) -> None:
        for fault_action, fragment in self.fail_on:
            if fault_action == action and fragment in path:
                raise DestinationUnavailable(f"injected failure: {action} `{path}`")

    async def __aenter__(self) -> MemoryDestination:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    async def open(self, path: str, *, content_type: str) -> MemoryUpload:
        return MemoryUpload(self, path, content_type)


class PreviewUpload(MemoryUpload):
    """Counts bytes and keeps none: what a preview needs to report file names and sizes."""

    async def write(self, data: bytes) -> None:
        self.size = getattr(self, "size", 0) + len(data)

    async def finish(self, size: int, md5: bytes) -> None:
        self.finished = True

    async def publish(self) -> None:
        return None


class PreviewDestination(MemoryDestination):
    """A dry run's destination: nothing is uploaded, nothing published."""

    def __init__(self) -> None:
        super().__init__()
        self.description = "preview"

    async def open(self, path: str, *, content_type: str) -> PreviewUpload:
        return PreviewUpload(self, path, content_type)
