"""Send result files (SEG, SR) to a Storage SCP by C-STORE, as a Storage SCU."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from cspine.errors import CspineError
from cspine.node.config import Destination

log = logging.getLogger(__name__)

__all__ = ["SendError", "send_files"]


class SendError(CspineError):
    """The destination refused the association or a C-STORE, or could not be reached."""


def _sop_and_syntax(path: Path) -> tuple[str, str]:
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as exc:  # pydicom raises several types for a broken file
        raise SendError(f"cannot be read as DICOM ({exc})", path) from exc
    return str(ds.file_meta.MediaStorageSOPClassUID), str(ds.file_meta.TransferSyntaxUID)


def send_files(destination: Destination, files: Sequence[str | Path], *, calling_ae: str,
               timeout: float = 30.0) -> None:
    """C-STORE ``files`` to ``destination`` in one association.

    Args:
        destination: host, port and AE title of the Storage SCP.
        files: DICOM files (Part 10).
        calling_ae: this node's AE title.
        timeout: seconds to wait for the peer at each step.

    Raises:
        SendError: the peer cannot be reached, rejects the association or a presentation context, or
            answers a C-STORE with a status other than success (the message names the destination).
    """
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
    from pynetdicom import AE

    paths = [Path(f) for f in files]
    if not paths:
        return
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.connection_timeout = timeout
    wanted: dict[str, set[str]] = {}
    for path in paths:
        sop, syntax = _sop_and_syntax(path)
        wanted.setdefault(sop, {ExplicitVRLittleEndian, ImplicitVRLittleEndian}).add(syntax)
    for sop, syntaxes in wanted.items():
        ae.add_requested_context(sop, sorted(syntaxes))
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if not assoc.is_established:
        why = "rejected the association" if assoc.is_rejected else "could not be reached or aborted"
        raise SendError(f"destination {destination} {why} (check its address, port and AE title, and that "
                        f"it accepts the calling AE title {calling_ae!r})")
    try:
        for path in paths:
            try:
                status = assoc.send_c_store(path)
            except ValueError as exc:  # no accepted presentation context for this SOP class
                raise SendError(f"destination {destination} does not accept {path.name} ({exc})") from exc
            code = int(getattr(status, "Status", -1)) if status else -1
            if code not in (0x0000, 0xB000, 0xB007, 0xB006):  # success and warnings
                raise SendError(f"destination {destination} answered C-STORE of {path.name} with status "
                                f"0x{code & 0xFFFF:04X}" if code >= 0 else
                                f"destination {destination} did not answer the C-STORE of {path.name}")
    finally:
        if assoc.is_established:
            assoc.release()
    log.info("sent %d file(s) to %s", len(paths), destination)
