"""Sharded work over a shared folder: which studies a part takes, and claims so no study runs twice.

``N`` workers (a Slurm job array, ``torchrun`` ranks, or copies started by hand) each take the ``K``-th of
``N`` slices of the sorted study list (:meth:`Shard.select`) and coordinate only through the file system:

* before a study is processed, its *claim* file is created with ``O_CREAT | O_EXCL`` (atomic, also on
  NFS), holding the worker's host, PID and a random token; a daemon thread refreshes its modification
  time (the heartbeat) while the study runs, and the claim is removed once the study's own result file
  (the cache's ``done.json``, the prediction's ``<UID>.json``) is written;
* a worker that finds a claim skips the study unless the claim is *stale*: its PID is dead on this host,
  or its heartbeat is older than ``stale_after_s`` (a worker on another host that was killed). A stale
  claim is retaken under a lock (:func:`file_lock`), so only one worker redoes that study;
* a killed worker leaves no result file (results are written atomically, last), so its study is redone.

Example:
    >>> shard = resolve_shard(1, 4)
    >>> shard.select(["d", "a", "c", "b", "e"])
    ['b']
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cspine.errors import CspineError

__all__ = ["CLAIMS_DIR", "Claim", "ClaimInfo", "Claims", "Shard", "ShardError", "claim_key", "file_lock",
           "resolve_shard"]

T = TypeVar("T")

#: The folder, inside the shared output or cache folder, that holds the claims.
CLAIMS_DIR = ".claims"
#: A claim whose heartbeat is older than this (seconds) is taken to belong to a dead worker.
STALE_AFTER_S = 600.0
#: How often a running claim's heartbeat is refreshed (seconds).
HEARTBEAT_S = 30.0


class ShardError(CspineError):
    """Bad ``--part``/``--parts`` values (or RANK/WORLD_SIZE)."""


@dataclass(frozen=True)
class Shard:
    """Part ``part`` (0-based) of ``parts``: every ``parts``-th item of the sorted list, from ``part``."""

    part: int
    parts: int

    def select(self, items: Sequence[T], key: Callable[[T], str] = str) -> list[T]:
        """This part's items: ``sorted(items, key)[part::parts]`` (deterministic on every machine)."""
        return sorted(items, key=key)[self.part::self.parts]

    @property
    def label(self) -> str:
        """``part-K-of-N``, for file names."""
        return f"part-{self.part}-of-{self.parts}"


def resolve_shard(part: int | None, parts: int | None, env: Mapping[str, str] | None = None) -> Shard | None:
    """The shard asked for: ``--part/--parts`` when given, else ``RANK``/``WORLD_SIZE`` under torchrun.

    Returns:
        ``None`` when neither is given (one worker, no claims).

    Raises:
        ShardError: only one of the two options, ``parts < 1``, or ``part`` outside ``0..parts-1``.
    """
    env = os.environ if env is None else env
    if part is None and parts is None:
        if "WORLD_SIZE" not in env or "RANK" not in env:
            return None
        try:
            part, parts = int(env["RANK"]), int(env["WORLD_SIZE"])
        except ValueError as exc:
            raise ShardError(f"RANK={env['RANK']!r}, WORLD_SIZE={env['WORLD_SIZE']!r}: not integers") from exc
    if part is None or parts is None:
        raise ShardError("--part and --parts go together (e.g. --part 0 --parts 4)")
    if parts < 1 or not 0 <= part < parts:
        raise ShardError(f"--part {part} --parts {parts}: the part must be 0..{parts - 1} (0-based)")
    return Shard(part, parts)


_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def claim_key(name: str, identity: str | None = None) -> str:
    """A file-name-safe claim key: ``name`` (e.g. a UID), plus a hash of ``identity`` (e.g. the input's
    absolute path) when given, so two inputs that share a folder name get different claims."""
    safe = _SAFE.sub("_", name)[:100] or "study"
    if identity is not None or safe != name:
        digest = hashlib.sha1((identity if identity is not None else name).encode()).hexdigest()[:12]
        safe = f"{safe}-{digest}"
    return safe


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive POSIX lock on ``path`` (created if needed) for the ``with`` block; released when the
    process dies, and honoured across NFS clients that run a lock daemon."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    # POSIX record locks belong to the process: two threads of one process (workers in threads, the
    # viewer's jobs) would both hold it, and closing either descriptor would drop the other's lock. A
    # per-path thread lock, taken first, serialises them.
    with _LOCKS_GUARD:
        local = _THREAD_LOCKS.setdefault(str(path.resolve()), threading.Lock())
    with local:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.lockf(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


_LOCKS_GUARD = threading.Lock()
_THREAD_LOCKS: dict[str, threading.Lock] = {}


@dataclass(frozen=True)
class ClaimInfo:
    """Who holds a claim: ``host``, ``pid``, ``token``, and the heartbeat's age in seconds."""

    host: str
    pid: int
    token: str
    age_s: float


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    try:  # a killed child not yet reaped is a zombie: dead for our purpose
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True


class Claim:
    """A held claim: refreshes its heartbeat until :meth:`release` (also on leaving a ``with`` block)."""

    def __init__(self, path: Path, token: str, heartbeat_s: float) -> None:
        self.path = path
        self.token = token
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(heartbeat_s,), daemon=True,
                                        name=f"claim-heartbeat-{path.name}")
        self._thread.start()

    def _beat(self, every: float) -> None:
        while not self._stop.wait(every):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self) -> None:
        """Stop the heartbeat and remove the claim file, if it is still this claim's."""
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(OSError, ValueError):
            if json.loads(self.path.read_text()).get("token") == self.token:
                self.path.unlink()

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Claims:
    """The claims of one shared folder (``<folder>/.claims/<key>.claim``).

    Args:
        folder: the shared output or cache folder.
        stale_after_s: a claim whose heartbeat is older is retaken (whatever host holds it).
        heartbeat_s: how often a held claim's heartbeat is refreshed.
    """

    def __init__(self, folder: str | Path, stale_after_s: float = STALE_AFTER_S,
                 heartbeat_s: float = HEARTBEAT_S) -> None:
        self.dir = Path(folder) / CLAIMS_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self.stale_after_s = stale_after_s
        self.heartbeat_s = heartbeat_s
        self.host = socket.gethostname()

    def path(self, key: str) -> Path:
        return self.dir / f"{key}.claim"

    def holder(self, key: str) -> ClaimInfo | None:
        """Who holds ``key`` (``None`` when nobody does). An unreadable claim (its writer died between
        creating and filling it) has an empty host and PID 0."""
        path = self.path(key)
        try:
            age = time.time() - path.stat().st_mtime
            text = path.read_text()
        except FileNotFoundError:
            return None
        try:
            doc = json.loads(text)
            return ClaimInfo(str(doc["host"]), int(doc["pid"]), str(doc["token"]), age)
        except (ValueError, KeyError, TypeError):
            return ClaimInfo("", 0, "", age)

    def is_stale(self, info: ClaimInfo) -> bool:
        """The holder is dead: a dead PID on this host, or no heartbeat for ``stale_after_s``."""
        if info.age_s > self.stale_after_s:
            return True
        return info.host == self.host and info.pid > 0 and not _pid_alive(info.pid)

    def _create(self, key: str) -> Claim | None:
        token = uuid.uuid4().hex
        doc = json.dumps({"host": self.host, "pid": os.getpid(), "token": token, "time": time.time()})
        try:
            fd = os.open(self.path(key), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            return None
        try:
            os.write(fd, doc.encode())
        finally:
            os.close(fd)
        return Claim(self.path(key), token, self.heartbeat_s)

    def acquire(self, key: str) -> Claim | None:
        """Claim ``key``; ``None`` when a live worker holds it. A stale claim is retaken (logged by the
        caller through :meth:`holder` if it wants to say so)."""
        claim = self._create(key)
        if claim is not None:
            return claim
        with file_lock(self.dir / ".lock"):
            info = self.holder(key)
            if info is not None and not self.is_stale(info):
                return None
            if info is not None:  # still the same stale claim: nobody else retakes it while we hold the lock
                self.path(key).unlink(missing_ok=True)
            return self._create(key)
