"""What a DICOM node is told on the command line: its AE title, address, destination and rules."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from cspine.errors import CspineError

__all__ = ["DEFAULT_IDLE_SECONDS", "Destination", "NodeConfig", "NodeConfigError", "check_ae_title",
           "is_loopback", "parse_destination"]

#: Seconds without a new instance after which a series counts as complete.
DEFAULT_IDLE_SECONDS = 10.0


class NodeConfigError(CspineError):
    """A node option is malformed (an AE title, a port, a ``--send-to`` destination)."""


def check_ae_title(title: str, option: str = "--ae-title") -> str:
    """An AE title as DICOM allows it: 1..16 printable ASCII characters, no backslash, not only spaces.

    Raises:
        NodeConfigError: naming the option and what is wrong.
    """
    text = str(title).strip()
    if not text or len(text) > 16:
        raise NodeConfigError(f"{option} {title!r}: an AE title has 1 to 16 characters")
    if any(not (32 <= ord(c) < 127) or c == "\\" for c in text):
        raise NodeConfigError(f"{option} {title!r}: an AE title holds printable ASCII characters only, no "
                              "backslash")
    return text


def _check_port(port: int, option: str, *, allow_zero: bool = False) -> int:
    low = 0 if allow_zero else 1
    if not low <= int(port) <= 65535:
        raise NodeConfigError(f"{option} {port}: a TCP port lies in {low}..65535")
    return int(port)


def is_loopback(host: str) -> bool:
    """Whether ``host`` only reaches this machine (``localhost``, 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Destination:
    """A Storage SCP the results are sent to (``--send-to HOST:PORT:AET``)."""

    host: str
    port: int
    ae_title: str

    def __str__(self) -> str:
        return f"{self.host}:{self.port}:{self.ae_title}"


def parse_destination(text: str) -> Destination:
    """Read ``HOST:PORT:AET`` (an IPv6 host may contain colons: the last two fields are port and AET).

    Raises:
        NodeConfigError: a missing field, a port that is not a number, a bad AE title.

    Example:
        >>> parse_destination("127.0.0.1:4242:ORTHANC")
        Destination(host='127.0.0.1', port=4242, ae_title='ORTHANC')
    """
    parts = str(text).rsplit(":", 2)
    if len(parts) != 3 or not all(p.strip() for p in parts):
        raise NodeConfigError(f"--send-to {text!r}: expected HOST:PORT:AET, e.g. 127.0.0.1:4242:ORTHANC")
    host, port, aet = (p.strip() for p in parts)
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        number = int(port)
    except ValueError:
        raise NodeConfigError(f"--send-to {text!r}: the port {port!r} is not a number") from None
    return Destination(host, _check_port(number, "--send-to"), check_ae_title(aet, "--send-to"))


@dataclass(frozen=True)
class NodeConfig:
    """Everything the node needs besides the model.

    Attributes:
        ae_title: this node's AE title (callers must address it; see ``require_called_aet``).
        host, port: where the Storage SCP listens (port 0: any free port, for tests).
        spool: the folder that holds received instances, markers and results (the queue).
        send_to: where SEG and SR go by C-STORE; ``None`` keeps them in the spool only.
        idle_seconds: a series is complete when no instance arrived for this long.
        allow_ae: calling AE titles accepted; empty accepts any.
        require_called_aet: refuse associations addressed to another AE title.
        dicom_timeout: seconds the network waits for a peer (association, DIMSE, network).
    """

    ae_title: str
    spool: Path
    host: str = "127.0.0.1"
    port: int = 11112
    send_to: Destination | None = None
    idle_seconds: float = DEFAULT_IDLE_SECONDS
    allow_ae: tuple[str, ...] = field(default_factory=tuple)
    require_called_aet: bool = True
    dicom_timeout: float = 30.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "ae_title", check_ae_title(self.ae_title))
        object.__setattr__(self, "allow_ae", tuple(check_ae_title(a, "--allow-ae") for a in self.allow_ae))
        object.__setattr__(self, "spool", Path(self.spool))
        _check_port(self.port, "--port", allow_zero=True)
        if not self.idle_seconds > 0:
            raise NodeConfigError(f"--idle-seconds {self.idle_seconds:g}: must be positive")
        if not self.dicom_timeout > 0:
            raise NodeConfigError(f"dicom timeout {self.dicom_timeout:g}: must be positive")
