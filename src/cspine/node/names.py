"""Names the node gives studies, series and instances: keyed hashes, never UIDs or patients' names.

A plain hash of a UID could be turned back by hashing candidate UIDs (RSNA's are short running
numbers), so the names are HMAC-SHA256 under a key drawn once per spool and kept in ``SPOOL/.key``:
the same study gets the same folder after a restart, and nobody without the key can tell which study
a folder or a log line is about.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cspine.fileio import atomic_path

__all__ = ["KEY_FILE", "SpoolNames"]

KEY_FILE = ".key"


class SpoolNames:
    """Keyed short hashes for the folders and files of one spool.

    Args:
        key: the secret (32 random bytes).
    """

    def __init__(self, key: bytes) -> None:
        self._key = bytes(key)

    @classmethod
    def open(cls, spool: str | Path) -> SpoolNames:
        """The spool's names, creating its key on first use (readable by its owner only)."""
        path = Path(spool) / KEY_FILE
        if not path.is_file():
            with atomic_path(path) as tmp:
                tmp.write_bytes(secrets.token_bytes(32))
            os.chmod(path, 0o600)
        return cls(path.read_bytes())

    def _digest(self, *parts: str, n: int) -> str:
        msg = "\0".join(parts).encode("utf-8", "surrogateescape")
        return hmac.new(self._key, msg, hashlib.sha256).hexdigest()[:n]

    def study(self, study_uid: str) -> str:
        """A study's name (12 hex digits), e.g. in logs: ``study 3f9a0c1b2d4e``."""
        return self._digest("study", study_uid, n=12)

    def series(self, study_uid: str, series_uid: str) -> str:
        """A series' name (12 hex digits)."""
        return self._digest("series", study_uid, series_uid, n=12)

    def instance(self, sop_instance_uid: str) -> str:
        """An instance's file stem (24 hex digits): a resent instance replaces its earlier copy."""
        return self._digest("instance", sop_instance_uid, n=24)
