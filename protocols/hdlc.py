"""HDLC frame format type 3 of IEC 62056-46 (DLMS/COSEM over serial lines), sans-IO.

Frame layout between two 0x7E flags (no byte stuffing: the length field delimits)::

    format(2) destination(1|2|4) source(1|2|4) control(1) [HCS(2) information(n)] FCS(2)

The HCS (over format..control) is present only when there is an information field; the FCS
covers everything between the flags except itself, so without information it covers just
the header. Both are CRC-16/X.25, least significant byte first.

The same code is the collector's link layer and the simulated meter's, so every decoder
takes any bytes and returns a valid result or raises :class:`DecodeError`. This module holds
the frames (addresses, encoding, the stream decoder); :mod:`protocols.hdlc_link` the link
built of them (parameter negotiation and the connection state machine).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from protocols.crc import crc16_x25
from protocols.errors import DecodeError, FrameCheckError

__all__ = [
    "FLAG",
    "LLC_REQUEST",
    "LLC_RESPONSE",
    "MAX_FRAME_LENGTH",
    "MAX_INFO_LENGTH",
    "MAX_WINDOW",
    "FrameDecoder",
    "FrameKind",
    "HdlcAddress",
    "HdlcFrame",
]

FLAG = 0x7E
#: LLC header of a client→server information field (destination LSAP, source LSAP, quality).
LLC_REQUEST = b"\xe6\xe6\x00"
#: LLC header of a server→client information field.
LLC_RESPONSE = b"\xe6\xe7\x00"
#: Largest value of the 11-bit frame length field (the frame without its flags).
MAX_FRAME_LENGTH = 0x7FF
#: Green Book upper bound of the negotiable maximum information field length.
MAX_INFO_LENGTH = 2030
MAX_WINDOW = 7

_FORMAT_TYPE_3 = 0xA000
_SEGMENTED = 0x0800
_MIN_FRAME_LENGTH = 7  # format(2) + two 1-byte addresses + control + FCS(2)

# Parameter negotiation field of SNRM/UA (IEC 62056-46, ISO/IEC 13239 XID-like group).


class FrameKind(enum.Enum):
    """Frame types used by IEC 62056-46 (REJ/SREJ are not part of the DLMS profile)."""

    I = "I"  # noqa: E741 - the standard's name for information frames
    RR = "RR"
    RNR = "RNR"
    SNRM = "SNRM"
    DISC = "DISC"
    UA = "UA"
    DM = "DM"
    FRMR = "FRMR"
    UI = "UI"


# Control byte of the unnumbered frames with P/F = 0; P/F is bit 0x10.
_U_CONTROL: dict[FrameKind, int] = {
    FrameKind.SNRM: 0x83,
    FrameKind.DISC: 0x43,
    FrameKind.UA: 0x63,
    FrameKind.DM: 0x0F,
    FrameKind.FRMR: 0x87,
    FrameKind.UI: 0x03,
}
_U_KIND: dict[int, FrameKind] = {value: kind for kind, value in _U_CONTROL.items()}
_PF = 0x10


@dataclass(frozen=True, slots=True)
class HdlcAddress:
    """An HDLC address: client (1 byte, its SAP) or server (upper = logical, lower = physical).

    ``size`` 0 picks the smallest encoding that fits and is then replaced by it, so
    ``HdlcAddress(1, 17) == HdlcAddress(1, 17, 2)``. One byte holds only an upper address
    (7 bits), two bytes a 7-bit upper and a 7-bit lower, four bytes a 14-bit upper and a
    14-bit lower address, each split into 7-bit groups, high group first, shifted left by
    one; the low bit of the last byte (the extension bit) is 1.
    """

    upper: int
    lower: int | None = None
    size: int = 0
    _raw: bytes = field(init=False, repr=False, compare=False, default=b"")

    def __post_init__(self) -> None:
        upper, lower, size = self.upper, self.lower, self.size
        if size == 0:
            if lower is None:
                size = 1
            elif upper <= 0x7F and lower <= 0x7F:
                size = 2
            else:
                size = 4
        if size == 1:
            if lower is not None:
                raise ValueError("a 1-byte HDLC address has no lower part")
            limit = 0x7F
        elif size in (2, 4):
            if lower is None:
                raise ValueError(f"a {size}-byte HDLC address needs a lower part")
            limit = 0x7F if size == 2 else 0x3FFF
        else:
            raise ValueError(f"HDLC address size must be 0, 1, 2 or 4, not {size}")
        if not 0 <= upper <= limit or (lower is not None and not 0 <= lower <= limit):
            raise ValueError(f"HDLC address {upper}/{lower} out of range for {size} bytes")
        if size == 1:
            raw = bytes(((upper << 1) | 1,))
        elif size == 2:
            assert lower is not None
            raw = bytes((upper << 1, (lower << 1) | 1))
        else:
            assert lower is not None
            raw = bytes(
                (
                    (upper >> 7) << 1,
                    (upper & 0x7F) << 1,
                    (lower >> 7) << 1,
                    ((lower & 0x7F) << 1) | 1,
                )
            )
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "_raw", raw)

    def encode(self) -> bytes:
        """The address bytes as they appear in a frame."""
        return self._raw

    def same_station(self, other: HdlcAddress) -> bool:
        """True when both name the same station, whatever their encoded sizes."""
        return self.upper == other.upper and self.lower == other.lower

    @classmethod
    def decode(cls, data: bytes) -> HdlcAddress:
        """Decode one complete address (1, 2 or 4 bytes, extension bit only on the last)."""
        n = len(data)
        if n not in (1, 2, 4) or not data[-1] & 1 or any(b & 1 for b in data[:-1]):
            raise DecodeError(f"invalid HDLC address {data.hex()}")
        if n == 1:
            return cls(data[0] >> 1, None, 1)
        if n == 2:
            return cls(data[0] >> 1, data[1] >> 1, 2)
        return cls(
            ((data[0] >> 1) << 7) | (data[1] >> 1),
            ((data[2] >> 1) << 7) | (data[3] >> 1),
            4,
        )


_ADDRESS_CACHE: dict[bytes, HdlcAddress] = {}
_ADDRESS_CACHE_LIMIT = 4096


def _address_at(data: bytes, pos: int, end: int) -> tuple[HdlcAddress, int]:
    """Decode the address starting at ``data[pos]``; return it and the position after it."""
    stop = min(pos + 4, end)
    i = pos
    while i < stop and not data[i] & 1:
        i += 1
    if i >= stop:
        raise DecodeError("HDLC address without extension bit")
    raw = data[pos : i + 1]
    address = _ADDRESS_CACHE.get(raw)
    if address is None:
        address = HdlcAddress.decode(raw)
        if len(_ADDRESS_CACHE) >= _ADDRESS_CACHE_LIMIT:
            _ADDRESS_CACHE.clear()
        _ADDRESS_CACHE[raw] = address
    return address, i + 1


def _control_byte(kind: FrameKind, poll_final: bool, send_seq: int, recv_seq: int) -> int:
    pf = _PF if poll_final else 0
    if kind is FrameKind.I:
        return (recv_seq << 5) | pf | (send_seq << 1)
    if kind is FrameKind.RR:
        return (recv_seq << 5) | pf | 0x01
    if kind is FrameKind.RNR:
        return (recv_seq << 5) | pf | 0x05
    return _U_CONTROL[kind] | pf


@dataclass(slots=True)
class HdlcFrame:
    """One HDLC frame; ``send_seq``/``recv_seq`` are N(S)/N(R) (I, RR, RNR only)."""

    kind: FrameKind
    destination: HdlcAddress
    source: HdlcAddress
    poll_final: bool = True
    send_seq: int = 0
    recv_seq: int = 0
    segmented: bool = False
    information: bytes = b""

    def encode(self) -> bytes:
        """The frame with both flags, HCS (when there is information) and FCS."""
        if not 0 <= self.send_seq <= 7 or not 0 <= self.recv_seq <= 7:
            raise ValueError("HDLC sequence numbers are 0..7")
        dst = self.destination.encode()
        src = self.source.encode()
        info = self.information
        header_length = 3 + len(dst) + len(src)  # format, addresses, control
        length = header_length + 2 + (len(info) + 2 if info else 0)
        if length > MAX_FRAME_LENGTH:
            raise ValueError(f"HDLC frame of {length} bytes exceeds the 11-bit length field")
        fmt = _FORMAT_TYPE_3 | length | (_SEGMENTED if self.segmented else 0)
        out = bytearray(length + 2)
        out[0] = FLAG
        out[1] = fmt >> 8
        out[2] = fmt & 0xFF
        pos = 3 + len(dst)
        out[3:pos] = dst
        out[pos : pos + len(src)] = src
        pos += len(src)
        out[pos] = _control_byte(self.kind, self.poll_final, self.send_seq, self.recv_seq)
        pos += 1
        if info:
            hcs = crc16_x25(memoryview(out)[1:pos])
            out[pos] = hcs & 0xFF
            out[pos + 1] = hcs >> 8
            pos += 2
            out[pos : pos + len(info)] = info
            pos += len(info)
        fcs = crc16_x25(memoryview(out)[1:pos])
        out[pos] = fcs & 0xFF
        out[pos + 1] = fcs >> 8
        out[pos + 2] = FLAG
        return bytes(out)

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> HdlcFrame:
        """Decode exactly one frame, flags included; :class:`DecodeError` on any defect."""
        if not isinstance(data, bytes):
            data = bytes(data)
        n = len(data)
        if n < _MIN_FRAME_LENGTH + 2:
            raise DecodeError(f"HDLC frame too short ({n} bytes)")
        if data[0] != FLAG or data[-1] != FLAG:
            raise DecodeError("HDLC frame not enclosed in 0x7E flags")
        fmt = (data[1] << 8) | data[2]
        if fmt & 0xF000 != _FORMAT_TYPE_3:
            raise DecodeError(f"not an HDLC frame format type 3: {fmt:04x}")
        if (fmt & MAX_FRAME_LENGTH) + 2 != n:
            raise DecodeError(f"HDLC length field {fmt & MAX_FRAME_LENGTH} but {n - 2} bytes")
        end = n - 3  # position of the FCS
        destination, pos = _address_at(data, 3, end)
        source, pos = _address_at(data, pos, end)
        if pos >= end:
            raise DecodeError("HDLC frame without control field")
        control = data[pos]
        pos += 1
        fcs = data[end] | (data[end + 1] << 8)
        if crc16_x25(data[1:end]) != fcs:
            raise FrameCheckError("HDLC FCS mismatch")
        if pos == end:
            information = b""
        else:
            if pos + 2 > end:
                raise DecodeError("HDLC frame truncated in the HCS")
            hcs = data[pos] | (data[pos + 1] << 8)
            if crc16_x25(data[1:pos]) != hcs:
                raise FrameCheckError("HDLC HCS mismatch")
            information = data[pos + 2 : end]
        send_seq = recv_seq = 0
        if not control & 0x01:
            kind = FrameKind.I
            send_seq = (control >> 1) & 7
            recv_seq = control >> 5
        elif control & 0x03 == 0x01:
            supervisory = control & 0x0F
            if supervisory == 0x01:
                kind = FrameKind.RR
            elif supervisory == 0x05:
                kind = FrameKind.RNR
            else:
                raise DecodeError(f"unsupported HDLC supervisory frame {control:02x}")
            recv_seq = control >> 5
        else:
            u_kind = _U_KIND.get(control & ~_PF)
            if u_kind is None:
                raise DecodeError(f"unsupported HDLC control field {control:02x}")
            kind = u_kind
        return cls(
            kind,
            destination,
            source,
            bool(control & _PF),
            send_seq,
            recv_seq,
            bool(fmt & _SEGMENTED),
            information,
        )


class FrameDecoder:
    """Finds frames in a byte stream (serial line, TCP) split at arbitrary points.

    The 11-bit length field delimits frames (HDLC type 3 has no byte stuffing, so 0x7E may
    occur inside a frame). A candidate starts at a 0x7E followed by a type-3 format byte;
    its header is validated by the HCS as soon as it is complete, so garbage that looks
    like a frame start is rejected without waiting for its claimed length, and the buffer
    never holds more than one maximum-size frame. A frame's closing flag may be the next
    frame's opening flag. Rejected candidates are skipped one byte at a time, so a real
    frame hidden behind garbage is still found.
    """

    __slots__ = ("_after_frame", "_buffer", "discarded_bytes", "dropped_frames", "last_error")

    def __init__(self) -> None:
        self._buffer = bytearray()
        #: Candidates that looked like frames but failed a check (HCS, FCS, fields).
        self.dropped_frames = 0
        #: Bytes that belonged to no valid frame (line noise, a wrong baud rate or parity).
        self.discarded_bytes = 0
        self.last_error: DecodeError | None = None
        self._after_frame = False  # buffer[0] is the closing flag of the last frame

    @property
    def buffered(self) -> int:
        """Bytes held back waiting for the rest of a frame."""
        return len(self._buffer)

    def reset(self) -> None:
        """Forget any partial frame (e.g. after the link was re-established)."""
        self._buffer.clear()
        self._after_frame = False

    def feed(self, data: bytes | bytearray | memoryview) -> list[HdlcFrame]:
        """Add received bytes; return the complete valid frames found, in order."""
        frames: list[HdlcFrame] = []
        self._scan(data, frames, None)
        return frames

    def feed_raw(
        self, data: bytes | bytearray | memoryview
    ) -> list[tuple[HdlcFrame | None, bytes]]:
        """Like :meth:`feed`, each frame with its bytes as received, and every run of bytes
        that is part of no valid frame as ``(None, bytes)``: what a trace shows."""
        items: list[tuple[HdlcFrame | None, bytes]] = []
        self._scan(data, None, items)
        return items

    def _scan(
        self,
        data: bytes | bytearray | memoryview,
        frames: list[HdlcFrame] | None,
        items: list[tuple[HdlcFrame | None, bytes]] | None,
    ) -> None:
        """The one decoding loop: frames into ``frames``, or frames and noise into
        ``items``. Dropped bytes are counted; the last frame's closing flag, kept in case it
        opens the next frame, is not noise when it turns out not to."""
        buf = self._buffer
        buf += data
        noise = bytearray()
        while True:
            start = buf.find(FLAG)
            if start != 0:
                count = len(buf) if start < 0 else start
                if items is not None:
                    noise += buf[:count]
                self.discarded_bytes += count
                del buf[:count]
                self._after_frame = False
                if start < 0:
                    break
            verdict = self._candidate_length(buf)
            if verdict == 0:
                break
            if verdict > 0:
                raw = bytes(buf[:verdict])
                try:
                    frame = HdlcFrame.decode(raw)
                except DecodeError as exc:
                    self._drop(exc)
                    verdict = -1
            if verdict < 0:
                if self._after_frame:
                    self._after_frame = False
                else:
                    self.discarded_bytes += 1
                    if items is not None:
                        noise.append(FLAG)
                del buf[:1]
                continue
            if items is None:
                assert frames is not None
                frames.append(frame)
            else:
                if noise:
                    items.append((None, bytes(noise)))
                    noise.clear()
                items.append((frame, raw))
            del buf[: verdict - 1]  # keep the closing flag: it may open the next frame
            self._after_frame = True
        if noise and items is not None:
            items.append((None, bytes(noise)))

    def _drop(self, exc: DecodeError) -> None:
        self.dropped_frames += 1
        self.last_error = exc

    def _candidate_length(self, buf: bytearray) -> int:
        """Total length of the frame starting at ``buf[0]`` (a flag): >0 when complete,
        0 when more bytes are needed, -1 when it cannot be a frame."""
        available = len(buf)
        if available < 2:
            return 0
        if buf[1] & 0xF0 != 0xA0:
            return -1
        if available < 3:
            return 0
        length = ((buf[1] & 0x07) << 8) | buf[2]
        if length < _MIN_FRAME_LENGTH:
            return -1
        total = length + 2
        # Walk the two addresses to find the control field.
        fcs_pos = total - 3
        pos = 3
        for _ in range(2):
            first = pos
            while True:
                if pos >= fcs_pos or pos - first >= 4:
                    return -1
                if pos >= available:
                    return 0
                if buf[pos] & 1:
                    break
                pos += 1
            if pos - first == 2:  # a 3-byte address does not exist
                return -1
            pos += 1
        header_end = pos + 1  # after the control byte
        if header_end > fcs_pos:
            return -1
        if header_end < fcs_pos:  # information present: the HCS guards the header
            if header_end + 2 > fcs_pos:
                return -1
            if available < header_end + 2:
                return 0
            hcs = buf[header_end] | (buf[header_end + 1] << 8)
            if crc16_x25(buf[1:header_end]) != hcs:
                self._drop(FrameCheckError("HDLC HCS mismatch"))
                return -1
        if available < total:
            return 0
        if buf[total - 1] != FLAG:
            return -1
        return total
