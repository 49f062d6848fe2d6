"""How to reach a meter, and the inventory file that lists them: the contract between the
collector (which reads meters) and the simulator (which plays them and writes their inventory).

Pure data: opening a link from a :class:`MeterTarget` is the collector's job
(``collector.transport.open_transport``).
"""

from __future__ import annotations

from dataclasses import dataclass

from protocols.xdlms import Authentication

TRANSPORTS = ("tcp", "hdlc-tcp", "serial")
#: How a serial link starts: HDLC at once, or the IEC 62056-21 mode E sign-on first.
MODE_E_STARTUP = "iec62056-21"
STARTUPS = ("hdlc", MODE_E_STARTUP)
DEFAULT_TCP_PORT = 4059  # IANA port for DLMS/COSEM
#: Every column an inventory CSV may carry; ``meter_id`` and ``transport`` are required.
INVENTORY_COLUMNS = (
    "meter_id",
    "transport",
    "host",
    "port",
    "device",
    "physical_address",
    "logical_address",
    "client_sap",
    "authentication",
    "password",
    "password_ref",
    "link_id",
    "area",
    "station",
    "security_profile",
    "installed_on",
    "role",
    "profile",
)
REQUIRED_COLUMNS = ("meter_id", "transport")
#: A meter's role in its transformer area (``role`` column; blank is a customer): the
#: transformer meter measures what the area is supplied, customers what it is sold.
ROLES = ("customer", "transformer")
#: The inventory security profile of meters read over HLS-GMAC with suite-0 ciphering.
SECURE_PROFILE = "hls-gmac-suite0"


@dataclass(slots=True, frozen=True)
class MeterTarget:
    """Everything needed to open a link and associate with one meter."""

    transport: str
    host: str | None = None
    port: int | None = None
    device: str | None = None
    baudrate: int = 9600
    physical_address: int | None = None
    logical_address: int = 1
    client_sap: int = 16
    authentication: Authentication = "none"
    frame_timeout: float = 3.0
    retries: int = 3
    #: HDLC maximum information field length sent (and received, unless ``max_info_rx``).
    max_info_length: int = 128
    max_info_rx: int | None = None
    window_size: int = 1
    #: HDLC server address size in bytes (0: the smallest that fits; 1, 2 or 4).
    address_size: int = 0
    #: The client's max receive PDU size proposed in the AARQ.
    max_pdu_size: int = 0xFFFF
    #: General block transfer: blocks received at once (0: GBT not proposed).
    gbt_window: int = 0
    #: What opens a serial link: "hdlc" (HDLC at once) or "iec62056-21" (mode E sign-on).
    startup: str = "hdlc"
    #: The IEC 62056-21 device address sent in the sign-on request ("": none).
    device_address: str = ""


def parse_host_port(text: str, default_port: int = 4059) -> tuple[str, int]:
    """Parse ``HOST[:PORT]`` (IPv6 in brackets), with a clear error for anything else."""
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, default_port
    host = host.strip("[]")
    if not host:
        raise ValueError(f"{text!r}: missing host")
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"{text!r}: port {port!r} is not a number") from None
    if not 0 < number < 65536:
        raise ValueError(f"{text!r}: port {number} is out of range")
    return host, number
