"""A DICOM node: the Storage SCP, the spool and the worker, started and stopped together."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from cspine.node.config import NodeConfig, is_loopback
from cspine.node.pipeline import SeriesProcessor
from cspine.node.redact import Redactor
from cspine.node.scp import start_scp
from cspine.node.spool import FAILED_JSON, Spool
from cspine.node.worker import Processor, Worker

if TYPE_CHECKING:
    from cspine.ct.cls.operating_points import ResolvedOperatingPoint
    from cspine.ct.model import CtModel

log = logging.getLogger(__name__)

__all__ = ["DicomNode"]


class DicomNode:
    """Receive CT series by C-STORE, run the two-stage model on each, send the SEG and SR on.

    Args:
        config: address, AE titles, spool, destination, idle time.
        model: the loaded model (``None`` only with ``process``, for tests of the plumbing).
        operating_point: thresholds of the SR's present/absent calls.
        process: replaces the pipeline (tests).

    Example:
        >>> node = DicomNode(NodeConfig("CSPINE", spool="spool"), model, op)  # doctest: +SKIP
        >>> with node:  # doctest: +SKIP
        ...     print(node.port)
    """

    def __init__(self, config: NodeConfig, model: CtModel | None = None,
                 operating_point: ResolvedOperatingPoint | None = None, *, process: Processor | None = None,
                 poll_seconds: float = 0.2) -> None:
        self.config = config
        self.redactor = Redactor()
        if process is None:
            if model is None or operating_point is None:
                raise ValueError("a model and an operating point are needed unless `process` is given")
            process = SeriesProcessor(model, operating_point, config.send_to, config.ae_title, self.redactor,
                                      timeout=config.dicom_timeout)
        self.spool = Spool(config.spool, config.idle_seconds)
        self.worker = Worker(self.spool, process, poll_seconds=poll_seconds)
        self._server: Any = None

    @property
    def port(self) -> int:
        """The port the SCP listens on (the actual one when ``config.port`` is 0)."""
        return int(self._server.server_address[1]) if self._server is not None else self.config.port

    def start(self) -> None:
        """Report the spool, start the worker, then listen.

        Raises:
            NodeConfigError: the address cannot be bound.
        """
        self.redactor.install()
        counts = self.spool.counts()
        log.info("spool %s: %s", self.config.spool, ", ".join(f"{n} {s}" for s, n in counts.items()))
        for ref in self.spool.resumed:
            log.info("series %s: half received before the restart (%d instances); it is processed once no "
                     "instance has arrived for %g s", ref.key, len(self.spool.instances(ref)),
                     self.config.idle_seconds)
        for ref in self.spool.series():
            failed = self.spool.read_marker(ref, FAILED_JSON)
            if failed is not None:
                log.info("series %s: failed earlier at %s: %s (delete its failed.json to retry)", ref.key,
                         failed.get("stage"), failed.get("reason"))
        if not is_loopback(self.config.host) and not self.config.allow_ae:
            log.warning("listening on %s without --allow-ae: any DICOM peer that reaches it can send studies",
                        self.config.host)
        self.worker.start()
        try:
            self._server = start_scp(self.config, self.spool)
        except BaseException:
            self.worker.stop(timeout=1.0)
            self.redactor.uninstall()
            raise
        log.info("DICOM node %s listening on %s:%d", self.config.ae_title, self.config.host, self.port)

    def stop(self, timeout: float | None = None) -> bool:
        """Stop listening, then let the series in progress finish (a new start redoes an unfinished one).

        Returns:
            Whether the worker ended within ``timeout``.
        """
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        ended = self.worker.stop(timeout)
        self.redactor.uninstall()
        return ended

    def __enter__(self) -> DicomNode:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
