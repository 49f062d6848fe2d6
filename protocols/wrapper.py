"""IEC 62056-47 wrapper layer (DLMS/COSEM over TCP or UDP).

Every APDU travels behind an 8-byte header: version (0x0001), source wPort,
destination wPort and APDU length, each 2 bytes big-endian.  TCP delivers a byte
stream, so :class:`WrapperDecoder` reassembles PDUs split at any point.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NoReturn

from protocols.errors import DecodeError

__all__ = [
    "HEADER_SIZE",
    "MANAGEMENT_WPORT",
    "PUBLIC_CLIENT_WPORT",
    "WRAPPER_VERSION",
    "WrapperDecoder",
    "WrapperPdu",
    "encode_wrapper",
]

WRAPPER_VERSION = 1
#: Public client wPort; the management logical device listens on wPort 1.
PUBLIC_CLIENT_WPORT = 16
MANAGEMENT_WPORT = 1

_HEADER = struct.Struct(">HHHH")
HEADER_SIZE = _HEADER.size


@dataclass(slots=True, frozen=True)
class WrapperPdu:
    """One wrapped APDU with its wPorts (source as sent by the peer)."""

    source: int
    destination: int
    apdu: bytes


def encode_wrapper(source: int, destination: int, apdu: bytes) -> bytes:
    """Prefix ``apdu`` with the wrapper header; ValueError on out-of-range fields."""
    length = len(apdu)
    if length > 0xFFFF:
        raise ValueError(f"APDU of {length} bytes does not fit the 2-byte wrapper length")
    if not (0 <= source <= 0xFFFF and 0 <= destination <= 0xFFFF):
        raise ValueError("wPort out of range 0..65535")
    return _HEADER.pack(WRAPPER_VERSION, source, destination, length) + bytes(apdu)


class WrapperDecoder:
    """Reassemble wrapper PDUs from a TCP byte stream.

    A bad version or an announced length above ``max_length`` means the stream
    lost framing (there is no resynchronisation marker in the wrapper), so the
    decoder raises :class:`DecodeError` and stays failed: the caller must drop
    the connection.
    """

    __slots__ = ("_buffer", "_error", "max_length")

    def __init__(self, max_length: int = 65535) -> None:
        self.max_length = max_length
        self._buffer = bytearray()
        self._error: DecodeError | None = None

    @property
    def pending(self) -> int:
        """Bytes held waiting for the rest of a PDU."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[WrapperPdu]:
        """Add received bytes; return every PDU now complete, in order."""
        if self._error is not None:
            raise DecodeError(f"wrapper stream already failed: {self._error}")
        buffer = self._buffer
        buffer += data
        out: list[WrapperPdu] = []
        pos = 0
        available = len(buffer)
        unpack_from = _HEADER.unpack_from
        while available - pos >= HEADER_SIZE:
            version, source, destination, length = unpack_from(buffer, pos)
            if version != WRAPPER_VERSION:
                self._fail(f"wrapper version {version:#06x}, expected 0x0001")
            if length > self.max_length:
                self._fail(f"wrapper length {length} above maximum {self.max_length}")
            end = pos + HEADER_SIZE + length
            if end > available:
                break
            out.append(WrapperPdu(source, destination, bytes(buffer[pos + HEADER_SIZE : end])))
            pos = end
        if pos:
            del buffer[:pos]
        return out

    def _fail(self, message: str) -> NoReturn:
        self._error = DecodeError(message)
        self._buffer.clear()
        raise self._error
