"""A logging filter that replaces identifiers (UIDs, patients' names and IDs) with the node's names.

The pipeline's own messages name a study by its StudyInstanceUID (fine in a results folder, not in a
node's log, which a PACS administrator may ship elsewhere). The node registers the identifiers of each
series it handles; every log record passing a handler of the root logger is rewritten, tracebacks
included, before it is formatted.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict

__all__ = ["Redactor"]

#: Identifiers shorter than this are left alone (a one-character patient ID would blank every digit).
MIN_LENGTH = 3
#: How many identifiers are remembered (oldest forgotten first).
MAX_ENTRIES = 4096


class Redactor(logging.Filter):
    """Replace registered identifiers in log records and in texts (failure reasons).

    Example:
        >>> r = Redactor()
        >>> r.add("1.2.840.99.7", "study 3f9a0c1b2d4e")
        >>> r.redact("skipped 1.2.840.99.7: no slices")
        'skipped study 3f9a0c1b2d4e: no slices'
    """

    def __init__(self) -> None:
        super().__init__()
        self._names: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()
        self._pattern: re.Pattern[str] | None = None
        self._handlers: list[logging.Handler] = []

    def add(self, identifier: object, replacement: str) -> None:
        """Hide ``identifier`` (``None``/short values are ignored) behind ``replacement``."""
        text = str(identifier or "").strip()
        if len(text) < MIN_LENGTH:
            return
        with self._lock:
            self._names[text] = replacement
            self._names.move_to_end(text)
            while len(self._names) > MAX_ENTRIES:
                self._names.popitem(last=False)
            # longest first, so that a UID is not half-replaced by a registered prefix of it
            alternatives = sorted(self._names, key=len, reverse=True)
            body = "|".join(map(re.escape, alternatives))
            self._pattern = re.compile(r"(?<![\w.])(?:" + body + r")(?![\w.])")

    def redact(self, text: str) -> str:
        """``text`` with every registered identifier replaced."""
        with self._lock:
            pattern, names = self._pattern, dict(self._names)
        if pattern is None:
            return text
        return pattern.sub(lambda m: names[m.group(0)], text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            message += "\n" + record.exc_text
            record.exc_text = None
        record.msg, record.args = self.redact(message), None
        return True

    def install(self) -> None:
        """Filter every handler of the root logger (call after logging is configured), and the handler
        Python falls back on when there is none (``logging.lastResort``)."""
        handlers = list(logging.getLogger().handlers)
        if logging.lastResort is not None:
            handlers.append(logging.lastResort)
        for handler in handlers:
            if self not in handler.filters:
                handler.addFilter(self)
                self._handlers.append(handler)

    def uninstall(self) -> None:
        for handler in self._handlers:
            handler.removeFilter(self)
        self._handlers.clear()
