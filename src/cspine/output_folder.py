"""Output folders cspine writes into: it overwrites only files it wrote itself.

Each output folder holds a manifest, ``.cspine-outputs.json``: the name and SHA-256 of every file a
cspine command wrote there. Before a command writes ``name``, :meth:`OutputFolder.check` finds out
whether a file of that name is already there and is not cspine's (absent from the manifest, or changed
since cspine wrote it); such a *foreign* file stops the command with a message naming it, unless the
user passed ``--overwrite``. :func:`open_output_folder` also refuses, before any work starts, an output
path that is a file or a folder that cannot be created or written.

Used by ``cspine ct predict``, ``cspine xray predict``, ``cspine ct eda`` and ``cspine ct prepare``.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from cspine.errors import CspineError
from cspine.fileio import read_json, write_json

__all__ = ["MANIFEST", "OutputFolder", "OutputFolderError", "check_output_path", "file_sha256",
           "open_output_folder"]

#: The manifest's file name inside an output folder.
MANIFEST = ".cspine-outputs.json"


class OutputFolderError(CspineError):
    """An output folder cannot be used: a file, not writable, or holding a file cspine did not write."""


def file_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class OutputFolder:
    """A folder a command writes into, with its manifest (see the module docstring).

    Attributes:
        path: the folder.
        overwrite: foreign files may be replaced (``--overwrite``).
    """

    def __init__(self, path: Path, overwrite: bool = False) -> None:
        self.path = path
        self.overwrite = overwrite
        self._files: dict[str, str] = self._read_manifest()

    def _read_manifest(self) -> dict[str, str]:
        manifest = self.path / MANIFEST
        if not manifest.is_file():
            return {}
        try:
            doc = read_json(manifest)
            return {str(k): str(v) for k, v in dict(doc.get("files", {})).items()}
        except (ValueError, TypeError, AttributeError, OSError):
            return {}  # an unreadable manifest owns nothing: every existing output counts as foreign

    @property
    def recorded(self) -> frozenset[str]:
        """The names the manifest lists."""
        return frozenset(self._files)

    def owns(self, name: str) -> bool:
        """Whether ``name`` is absent, or is the very file cspine wrote (same bytes as recorded)."""
        path = self.path / name
        if not path.exists():
            return True
        if not path.is_file():
            return False
        return self._files.get(name) == file_sha256(path)

    def foreign(self, names: Iterable[str]) -> list[str]:
        """The names among ``names`` that hold a file cspine did not write."""
        return [n for n in names if not self.owns(n)]

    def check(self, names: Iterable[str], command: str = "cspine") -> None:
        """Refuse to go on when a file under one of ``names`` is not cspine's (unless ``overwrite``).

        Raises:
            OutputFolderError: naming the first foreign file(s).
        """
        if self.overwrite:
            return
        bad = self.foreign(names)
        if bad:
            shown = ", ".join(str(self.path / n) for n in bad[:3]) + (f" (+{len(bad) - 3} more)"
                                                                       if len(bad) > 3 else "")
            raise OutputFolderError(
                f"{shown} {'was' if len(bad) == 1 else 'were'} not written by {command} (or changed since); "
                "not overwriting it. Move it away, choose another output folder, or pass --overwrite")

    def record(self, *names: str) -> None:
        """Note files just written (their current bytes) in the manifest, atomically."""
        for name in names:
            path = self.path / name
            if path.is_file():
                self._files[name] = file_sha256(path)
            else:
                self._files.pop(name, None)
        write_json(self.path / MANIFEST, {"files": dict(sorted(self._files.items()))})

    def forget(self, name: str) -> None:
        """Remove a file cspine wrote (if it is cspine's) and its manifest entry."""
        path = self.path / name
        if path.is_file() and self.owns(name):
            path.unlink()
        self.record(name)


def check_output_path(path: str | Path, command: str = "cspine") -> Path:
    """Refuse, without creating anything, an output folder that cannot be made: the path is a file, a
    file stands where one of its parent folders belongs, or the nearest existing parent is not writable.

    For commands that create their folder later (``ct train``, ``demo``, ``serve --work``).

    Raises:
        OutputFolderError: naming the path and the problem.
    """
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise OutputFolderError(f"is a file, not a folder; give an output folder for {command}", folder)
    parent = folder
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputFolderError(f"cannot create the output folder: {parent} is a file", folder)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputFolderError(f"the output folder cannot be written ({parent} is not writable)", folder)
    return folder


def open_output_folder(path: str | Path, *, overwrite: bool = False, names: Iterable[str] = (),
                       command: str = "cspine") -> OutputFolder:
    """Create (if needed) and check an output folder before any work starts.

    Args:
        path: the folder.
        overwrite: allow replacing files cspine did not write.
        names: the output names known before the run (``predictions.csv``...), checked now.
        command: the command's name, for messages.

    Raises:
        OutputFolderError: the path is a file, cannot be created or written, or holds a foreign file
            under one of ``names``.
    """
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise OutputFolderError("is a file, not a folder; give an output folder", folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputFolderError(f"cannot create the output folder ({exc.strerror or exc})", folder) from exc
    try:
        fd, probe = tempfile.mkstemp(prefix=".cspine-write-test.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputFolderError(f"the output folder is not writable ({exc.strerror or exc})", folder) from exc
    out = OutputFolder(folder, overwrite=overwrite)
    out.check(names, command)
    return out
