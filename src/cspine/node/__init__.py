"""A DICOM node a PACS can send CT studies to: ``cspine node``.

:mod:`~cspine.node.scp` receives instances by C-STORE into the :mod:`~cspine.node.spool` (the queue,
named by :mod:`~cspine.node.names`); the :mod:`~cspine.node.worker` completes idle series and runs the
:mod:`~cspine.node.pipeline` on each (the CT model, the DICOM SEG and SR); :mod:`~cspine.node.send` sends
them on. :mod:`~cspine.node.service` ties these together; :mod:`~cspine.node.redact` keeps identifiers
out of the logs.
"""

from __future__ import annotations

from cspine.node.config import Destination, NodeConfig, NodeConfigError, parse_destination

__all__ = ["Destination", "NodeConfig", "NodeConfigError", "parse_destination"]
