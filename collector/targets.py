"""How to reach one meter: the link parameters that ``hes read`` and the inventory share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from collector.transport import (
    HdlcTransport,
    TcpWrapperTransport,
    Transport,
    hdlc_tcp_transport,
    serial_hdlc_transport,
)
from protocols.apdu import Authentication
from protocols.hdlc import HdlcSettings

TRANSPORTS = ("tcp", "hdlc-tcp", "serial")


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
    max_info_length: int = 128

    def open_transport(self) -> Transport:
        """Build a fresh (unopened) transport for one session."""
        if self.transport == "tcp":
            if self.host is None:
                raise ValueError("a tcp meter needs a host")
            return TcpWrapperTransport(
                self.host,
                self.port or 4059,
                client_wport=self.client_sap,
                server_wport=self.logical_address,
            )
        hdlc_args: dict[str, Any] = {
            "client_sap": self.client_sap,
            "logical_address": self.logical_address,
            "physical_address": self.physical_address,
            "settings": HdlcSettings(
                max_info_tx=self.max_info_length, max_info_rx=self.max_info_length
            ),
            "frame_timeout": self.frame_timeout,
            "retries": self.retries,
        }
        transport: HdlcTransport
        if self.transport == "hdlc-tcp":
            if self.host is None or self.port is None:
                raise ValueError("an hdlc-tcp meter needs a host and a port")
            transport = hdlc_tcp_transport(self.host, self.port, **hdlc_args)
        elif self.transport == "serial":
            if self.device is None:
                raise ValueError("a serial meter needs a device")
            transport = serial_hdlc_transport(self.device, self.baudrate, **hdlc_args)
        else:
            raise ValueError(f"unknown transport {self.transport!r}; use one of {TRANSPORTS}")
        return transport


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
