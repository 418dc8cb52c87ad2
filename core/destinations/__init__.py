"""Destinations by catalog type."""

from __future__ import annotations

from ..catalog.model import Destination as DestinationConfig
from ..settings import Settings
from .base import Destination, Upload


def open_destination(config: DestinationConfig, settings: Settings) -> Destination:
    if config.type == "ftp":
        from .ftp import FtpDestination

        return FtpDestination(config, settings)
    if config.type == "sftp":
        from .sftp import SftpDestination

        return SftpDestination(config, settings)
    from .azure_blob import AzureBlobDestination

    return AzureBlobDestination(config, settings)


__all__ = ["Destination", "Upload", "open_destination"]
