"""Archives given where a folder of files is expected (a zip of a DICOM study, a tarball of a dataset).

cspine reads folders of files; an archive is refused with a message that says to unpack it, instead of
"no DICOM image" or "cannot be decoded". (The viewer's upload, which does take zips, unpacks them
itself: :mod:`cspine.viewer.uploads`.)
"""

from __future__ import annotations

import zipfile
from pathlib import Path

__all__ = ["ARCHIVE_SUFFIXES", "UNPACK_HINT", "is_archive"]

#: File endings of archives (lower case). ``.gz`` alone is not one: ``.nii.gz`` is a NIfTI image.
ARCHIVE_SUFFIXES: tuple[str, ...] = (".zip", ".tar", ".tgz", ".tar.gz", ".tar.bz2", ".tar.xz", ".7z", ".rar")
UNPACK_HINT = "is an archive, not a folder of files; unpack it and give the folder it holds"


def is_archive(path: str | Path) -> bool:
    """Whether ``path`` is an archive file: by its ending, or a zip whatever its name."""
    path = Path(path)
    if not path.is_file():
        return False
    if path.name.lower().endswith(ARCHIVE_SUFFIXES):
        return True
    try:
        return zipfile.is_zipfile(path)
    except OSError:
        return False
