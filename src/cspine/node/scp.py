"""The Storage SCP: accept CT instances by C-STORE (and C-ECHO) and write them into the spool.

Accepted SOP classes: CT Image Storage, Enhanced CT Image Storage and Legacy Converted Enhanced CT
Image Storage, in any transfer syntax (the instance is stored as it came; the readers decode it), and
Verification. With an allow-list, associations from other calling AE titles are rejected; associations
addressed to another AE title than the node's are rejected too.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from cspine.node.config import NodeConfig
from cspine.node.spool import Spool

if TYPE_CHECKING:
    from pynetdicom.transport import ThreadedAssociationServer

log = logging.getLogger(__name__)

__all__ = ["CT_STORAGE_CLASSES", "start_scp"]

#: CT Image, Enhanced CT Image, Legacy Converted Enhanced CT Image Storage.
CT_STORAGE_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2")
VERIFICATION = "1.2.840.10008.1.1"
#: C-STORE statuses (PS3.4 B.2.3): success, out of resources, cannot understand.
SUCCESS, OUT_OF_RESOURCES, CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xC000


def _identifiers(event: Any) -> tuple[str, str, str]:
    """Study, series and instance UIDs of a C-STORE; anonymised files with empty ones still group:
    the series falls back to the FrameOfReferenceUID, then to the association."""
    ds = event.dataset
    study = str(ds.get("StudyInstanceUID", "") or "").strip()
    series = str(ds.get("SeriesInstanceUID", "") or "").strip()
    if not series:
        series = str(ds.get("FrameOfReferenceUID", "") or "").strip() or f"association-{id(event.assoc)}"
    sop = str(ds.get("SOPInstanceUID", "") or "").strip() or str(event.request.AffectedSOPInstanceUID or "")
    return study, series, sop


def _handle_store(event: Any, spool: Spool) -> int:
    try:
        study, series, sop = _identifiers(event)
        data = event.encoded_dataset()
    except Exception as exc:  # a dataset pynetdicom or pydicom cannot parse
        log.warning("C-STORE from %s refused: the dataset cannot be read (%s)",
                    event.assoc.requestor.ae_title, type(exc).__name__)
        return CANNOT_UNDERSTAND
    try:
        stored = spool.store(study, series, sop, data, calling_ae=event.assoc.requestor.ae_title)
    except OSError as exc:
        log.error("C-STORE refused: the spool cannot be written (%s)", exc)
        return OUT_OF_RESOURCES
    if stored.new_series:
        log.info("series %s: receiving from %s", stored.ref.key, event.assoc.requestor.ae_title)
    if stored.reopened:
        log.warning("series %s: an instance arrived after the series was complete; it will be processed "
                    "again once no instance has arrived for %g s", stored.ref.key, spool.idle_seconds)
    return SUCCESS


def _handle_rejected(event: Any) -> None:
    log.warning("association from %s (calling AE %r) rejected", event.assoc.requestor.address,
                event.assoc.requestor.ae_title)


def start_scp(config: NodeConfig, spool: Spool) -> ThreadedAssociationServer:
    """Start listening on ``config.host:config.port`` (port 0: any free one) in background threads.

    Returns:
        The running server (``server.server_address`` has the port; ``server.shutdown()`` stops it).

    Raises:
        NodeConfigError: the address cannot be bound (in use, not an address of this machine).
    """
    from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt

    from cspine.node.config import NodeConfigError

    ae = AE(ae_title=config.ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = config.dicom_timeout
    ae.maximum_associations = 8
    for sop in CT_STORAGE_CLASSES:
        ae.add_supported_context(sop, ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context(VERIFICATION)
    if config.allow_ae:
        ae.require_calling_aet = list(config.allow_ae)
    ae.require_called_aet = config.require_called_aet
    handlers = [(evt.EVT_C_STORE, _handle_store, [spool]), (evt.EVT_REJECTED, _handle_rejected)]
    try:
        server = ae.start_server((config.host, config.port), block=False, evt_handlers=handlers)
    except OSError as exc:
        raise NodeConfigError(f"cannot listen on {config.host}:{config.port} ({exc.strerror or exc}); "
                              "choose another --port or --host") from exc
    assert server is not None
    return server
