"""Errors cspine raises for bad input. Each names the file and says what is wrong.

The CLI catches :class:`CspineError` and prints its message without a traceback; library code
raises, never exits.
"""

from __future__ import annotations

from pathlib import Path


class CspineError(Exception):
    """Base class of errors caused by the user's input, printed without a traceback."""

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else Path(path)
        super().__init__(f"{self.path}: {message}" if self.path is not None else message)


class DicomError(CspineError):
    """A DICOM file or series cannot be read as asked."""


class UnsupportedTransferSyntaxError(DicomError):
    """No installed decoder handles this file's transfer syntax."""


class SeriesGeometryError(DicomError):
    """The slices of a series do not form a volume (duplicates, tilt, one slice, ...)."""


class NiftiError(CspineError):
    """A NIfTI file is missing, unreadable, or not a 3-D image / label map."""


class DatasetError(CspineError):
    """A dataset folder or CSV does not follow the expected layout or schema."""


class ImageError(CspineError):
    """A radiograph cannot be read or used."""


class CheckpointError(CspineError):
    """A model folder is missing a file or holds an inconsistent config."""


class DeviceError(CspineError):
    """The compute device asked for (``--device``) does not exist on this machine."""
