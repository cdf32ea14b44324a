"""Uploaded studies: a zip of DICOM files, size-limited while it arrives and checked before extraction.

A zip is refused before anything is written from it when a member's name is absolute or climbs out
of the folder (``..``), a member is a symbolic link or encrypted, or it has too many members, too many
bytes once uncompressed, or a member compressed more than a plausible ratio (a zip bomb). The sizes a
zip declares are not trusted during extraction either: a member that inflates past its declared
size stops the extraction.
"""

from __future__ import annotations

import stat
import zipfile
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from cspine.errors import CspineError

__all__ = ["UPLOAD_TYPES", "UploadError", "UploadLimits", "check_zip", "extract_zip", "receive_to_file"]

_CHUNK = 1 << 20
#: Content types an upload may be sent with (the body is the zip itself).
UPLOAD_TYPES = frozenset({"application/zip", "application/x-zip-compressed", "application/octet-stream"})


class UploadError(CspineError):
    """An upload the viewer refuses; ``status`` is the HTTP status that says why."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class UploadLimits:
    """What an upload may be.

    Attributes:
        max_upload_bytes: largest request body (the zip as sent).
        max_members: most files in the zip.
        max_total_bytes: largest sum of the members' uncompressed sizes.
        max_ratio: largest uncompressed / compressed size of one member (DICOM CT deflates 2-10x;
            a bomb, thousands of times).
    """

    max_upload_bytes: int = 2 * 1024**3
    max_members: int = 10_000
    max_total_bytes: int = 8 * 1024**3
    max_ratio: float = 200.0


async def receive_to_file(chunks: AsyncIterator[bytes], dest: Path, limit: int,
                          declared: int | None = None) -> int:
    """Write a request body to ``dest``, refusing it once it passes ``limit`` bytes.

    Args:
        chunks: the body as it arrives.
        dest: the file to write.
        limit: most bytes accepted.
        declared: the Content-Length header, refused at once when above ``limit``.

    Returns:
        The number of bytes written.

    Raises:
        UploadError: 413 when the body is larger than ``limit``, 400 when it is empty.
    """
    too_big = f"the upload is larger than the limit of {_mb(limit)} (cspine serve --max-upload-mb)"
    if declared is not None and declared > limit:
        raise UploadError(too_big, 413)
    size = 0
    with open(dest, "wb") as f:
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise UploadError(too_big, 413)
            f.write(chunk)
    if size == 0:
        raise UploadError("the upload is empty; send a zip of the DICOM files of one CT study")
    return size


def _mb(n: int) -> str:
    return f"{n / 1024**2:g} MiB"


def _unsafe_name(name: str) -> str | None:
    """Why a member name may not be extracted, or ``None`` when it is safe."""
    if "\x00" in name:
        return "has a NUL character"
    norm = name.replace("\\", "/")
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":"):
        return "is an absolute path"
    if any(part == ".." for part in PurePosixPath(norm).parts):
        return "climbs out of the folder ('..')"
    return None


def check_zip(zf: zipfile.ZipFile, limits: UploadLimits) -> list[zipfile.ZipInfo]:
    """Check every member of an opened zip against ``limits``; return the file members.

    Raises:
        UploadError: 400 for unsafe names, links, encryption or no files; 413 for too many members,
            too many uncompressed bytes or a compression ratio above the limit.
    """
    members = zf.infolist()
    if len(members) > limits.max_members:
        raise UploadError(f"the zip has {len(members)} members; the limit is {limits.max_members}", 413)
    files, total = [], 0
    for info in members:
        why = _unsafe_name(info.filename)
        if why:
            raise UploadError(f"refused: a zip member name {why}")
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise UploadError("refused: the zip holds a symbolic link")
        if info.flag_bits & 0x1:
            raise UploadError("refused: the zip is encrypted")
        if info.is_dir():
            continue
        total += info.file_size
        if total > limits.max_total_bytes:
            raise UploadError(f"refused: the zip inflates to more than {_mb(limits.max_total_bytes)}", 413)
        if info.file_size > limits.max_ratio * max(info.compress_size, 1):
            raise UploadError(f"refused: a member is compressed more than {limits.max_ratio:g}:1 "
                              "(a zip bomb?)", 413)
        files.append(info)
    if not files:
        raise UploadError("the zip holds no files; send the DICOM files of one CT study")
    return files


def extract_zip(zip_path: Path, dest: Path, limits: UploadLimits) -> list[Path]:
    """Check a zip (:func:`check_zip`) and extract its files into ``dest``, flat.

    Members are written as ``dest/00000.dcm``, ``00001.dcm``... in zip order: the names inside the zip
    (often a patient's name) are not used, and the study reader finds DICOM files by content.

    Args:
        zip_path: the uploaded file.
        dest: an empty folder to extract into.
        limits: the upload limits.

    Returns:
        The extracted files.

    Raises:
        UploadError: the file is not a zip, or fails a check (nothing is extracted then), or a member
            inflates past its declared size (extraction stops).
    """
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UploadError(f"the upload is not a zip file ({exc})") from exc
    out: list[Path] = []
    dest.mkdir(parents=True, exist_ok=True)
    with zf:
        files = check_zip(zf, limits)
        for i, info in enumerate(files):
            target = dest / f"{i:05d}.dcm"
            written = 0
            try:
                with zf.open(info) as src, open(target, "wb") as dst:
                    while chunk := src.read(_CHUNK):
                        written += len(chunk)
                        if written > info.file_size:
                            raise UploadError("refused: a zip member inflates past its declared size", 413)
                        dst.write(chunk)
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
                raise UploadError(f"the zip is damaged or uses an unsupported method ({exc})") from exc
            out.append(target)
    return out
