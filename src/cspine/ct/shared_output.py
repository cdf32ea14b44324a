"""A prediction folder shared by several workers (``cspine ct predict --part K --parts N``).

Each worker writes its studies' ``<UID>.json`` into the same folder. The folder's manifest
(:mod:`cspine.output_folder`) is then read, updated and written under a POSIX lock
(:func:`cspine.shard.file_lock`), so no worker drops another's entries; :class:`ResultIndex` sees the
results other workers wrote since it last looked, reading only the new files.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

from cspine.ct.outputs import FAILURES_JSON, StudyPrediction
from cspine.fileio import read_json
from cspine.output_folder import MANIFEST, OutputFolder, open_output_folder
from cspine.shard import file_lock

log = logging.getLogger(__name__)

__all__ = ["ResultIndex", "SharedOutputFolder", "open_shared_output_folder"]

#: The lock file beside the manifest.
LOCK = ".cspine-outputs.lock"


class SharedOutputFolder(OutputFolder):
    """An :class:`OutputFolder` whose manifest several processes update (under a lock)."""

    def reload(self) -> None:
        """Re-read the manifest (other workers may have recorded files)."""
        with file_lock(self.path / LOCK):
            self._files = self._read_manifest()

    def check(self, names: Iterable[str], command: str = "cspine") -> None:
        self.reload()
        super().check(names, command)

    def record(self, *names: str) -> None:
        with file_lock(self.path / LOCK):
            self._files = self._read_manifest()
            super().record(*names)


def open_shared_output_folder(path: str | Path, *, overwrite: bool = False, names: Iterable[str] = (),
                              command: str = "cspine") -> SharedOutputFolder:
    """:func:`cspine.output_folder.open_output_folder` (same checks) for a folder shared by workers."""
    checked = open_output_folder(path, overwrite=overwrite, command=command)
    folder = SharedOutputFolder(checked.path, overwrite=overwrite)
    folder.check(names, command)
    return folder


class ResultIndex:
    """The study results in a prediction folder by resolved input path, re-read incrementally.

    Args:
        out_dir: the prediction folder.
        folder: only files cspine recorded there count (as in :func:`cspine.ct.outputs.done_predictions`).
    """

    def __init__(self, out_dir: Path, folder: SharedOutputFolder) -> None:
        self.out_dir = out_dir
        self.folder = folder
        self._seen: dict[str, int] = {}
        self.by_source: dict[str, StudyPrediction] = {}

    def refresh(self) -> dict[str, StudyPrediction]:
        """Read the ``<UID>.json`` files that are new or changed since the last call."""
        self.folder.reload()
        with os.scandir(self.out_dir) as entries:
            for entry in entries:
                name = entry.name
                if (not name.endswith(".json") or name in (FAILURES_JSON, MANIFEST) or name.startswith(".")
                        or name.startswith("failures.") or not entry.is_file()):
                    continue
                stamp = entry.stat().st_mtime_ns
                if self._seen.get(name) == stamp or name not in self.folder.recorded:
                    continue
                self._seen[name] = stamp
                if not self.folder.owns(name):
                    continue
                try:
                    result = StudyPrediction.from_dict(read_json(entry.path))
                except (ValueError, KeyError, TypeError, OSError) as exc:
                    log.warning("%s: not a study result (%s); ignored", entry.path, exc)
                    continue
                if result.source:
                    self.by_source[str(Path(result.source).resolve())] = result
        return self.by_source
