"""General block transfer (GBT), sans-IO: one long APDU carried in numbered blocks, both ways.

The general-block-transfer APDU (tag 0xE0, Green Book / IEC 62056-5-3, GBT service) is
``E0``, block-control (bit 7 last-block, bit 6 streaming, bits 0-5 the window: how many
blocks its sender is ready to receive), block-number and block-number-ack (unsigned16
each), block-data (A-XDR octet string). It carries any xDLMS APDU, plain or ciphered,
split into blocks no longer than the receiver's max PDU size; a party that is answered in
GBT answers in GBT until the exchange ends.

:class:`GbtExchange` is one party's side of one exchange (request and response). Each party
numbers the GBT APDUs it sends 1, 2, 3... and acknowledges, in block-number-ack, the last
block it received in order from the other. The sender streams up to the peer's window of
blocks (streaming set on all but the window's last); the receiver answers the block that
ends a window (streaming clear) with an empty GBT APDU acknowledging what it holds in
order, so a block lost on the way is sent again from the one after the acknowledged one.
No clock: a receiver whose window never ended asks for the rest with :meth:`~GbtExchange.ack`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from protocols.axdr import encode_length, read_length
from protocols.enums import ApduTag
from protocols.errors import DecodeError, ProtocolError

GBT_TAG = ApduTag.GENERAL_BLOCK_TRANSFER.value
#: The window field has 6 bits.
MAX_GBT_WINDOW = 63
_LAST = 0x80
_STREAMING = 0x40
#: Tag, block-control, block-number, block-number-ack.
_HEADER = 6
#: Upper bound on the blocks of one APDU, so a peer that never ends cannot grow us forever.
MAX_GBT_BLOCKS = 0xFFFF


@dataclass(slots=True, frozen=True)
class GbtBlock:
    """One general-block-transfer APDU, its fields as the Green Book names them."""

    last: bool
    streaming: bool
    window: int
    block_number: int
    block_number_ack: int
    data: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.window <= MAX_GBT_WINDOW:
            raise ValueError(f"GBT window {self.window} outside 0..{MAX_GBT_WINDOW}")
        for name in ("block_number", "block_number_ack"):
            if not 0 <= getattr(self, name) <= 0xFFFF:
                raise ValueError(f"GBT {name} {getattr(self, name)} outside 0..65535")

    def encode(self) -> bytes:
        control = (_LAST if self.last else 0) | (_STREAMING if self.streaming else 0) | self.window
        return (
            bytes((GBT_TAG, control))
            + self.block_number.to_bytes(2, "big")
            + self.block_number_ack.to_bytes(2, "big")
            + encode_length(len(self.data))
            + self.data
        )


def decode_gbt(data: bytes | bytearray | memoryview) -> GbtBlock:
    """A general-block-transfer APDU; DecodeError for anything else or anything left over."""
    raw = bytes(data)
    if len(raw) < _HEADER + 1:
        raise DecodeError(f"general-block-transfer: {len(raw)} bytes, at least 7 needed")
    if raw[0] != GBT_TAG:
        raise DecodeError(f"general-block-transfer: tag 0x{raw[0]:02X}, expected 0xE0")
    control = raw[1]
    size, pos = read_length(raw, _HEADER, "general-block-transfer block-data")
    if pos + size != len(raw):
        raise DecodeError(
            f"general-block-transfer: block-data of {size} bytes, {len(raw) - pos} present"
        )
    return GbtBlock(
        last=bool(control & _LAST),
        streaming=bool(control & _STREAMING),
        window=control & 0x3F,
        block_number=int.from_bytes(raw[2:4], "big"),
        block_number_ack=int.from_bytes(raw[4:6], "big"),
        data=raw[pos:],
    )


def block_room(max_pdu: int) -> int:
    """The most block-data bytes a GBT APDU of at most ``max_pdu`` bytes can carry."""
    room = max_pdu - _HEADER
    room -= len(encode_length(max(room, 0)))
    if room < 1:
        raise ValueError(f"max PDU size {max_pdu} leaves no room for a GBT block")
    return room


@dataclass(slots=True, frozen=True)
class Wait:
    """More blocks of the peer's window are on their way: send nothing, receive again."""


@dataclass(slots=True, frozen=True)
class Out:
    """GBT APDUs to send now, in order (the next window, or an acknowledgement)."""

    apdus: tuple[bytes, ...]


@dataclass(slots=True, frozen=True)
class Complete:
    """The peer's APDU, all blocks joined."""

    apdu: bytes


GbtStep: TypeAlias = Wait | Out | Complete


class GbtExchange:
    """One party's side of one GBT exchange; ``window`` is how many blocks it receives at once.

    ``send`` starts sending an APDU; ``receive`` takes each GBT APDU of the peer. A new
    exchange (the next request) needs a new instance or :meth:`reset`.
    """

    def __init__(self, window: int = 1) -> None:
        if not 1 <= window <= MAX_GBT_WINDOW:
            raise ValueError(f"GBT window {window} outside 1..{MAX_GBT_WINDOW}")
        self.window = window
        #: The window the peer last stated (1 until it stated one).
        self.peer_window = 1
        #: Blocks sent again because the peer acknowledged less than was sent.
        self.resent = 0
        self.reset()

    def reset(self) -> None:
        self._number = 0  # block number of the last GBT APDU we sent
        self._chunks: list[bytes] = []
        self._first = 0  # block number of our first data block
        self._next = 0  # index into _chunks of the next block to send
        self._received = 0  # the peer's last block number received in order
        self._parts: list[bytes] = []
        self._gap = False

    @property
    def sending(self) -> bool:
        """Whether blocks of our APDU are still to be sent or acknowledged."""
        return bool(self._chunks)

    @property
    def receiving(self) -> bool:
        """Whether part of the peer's APDU arrived and the rest has not."""
        return bool(self._parts) or self._gap

    def send(self, apdu: bytes, max_pdu: int) -> list[bytes]:
        """Split ``apdu`` for a peer that takes ``max_pdu`` bytes; the first window of blocks."""
        if not apdu:
            raise ValueError("GBT: nothing to send")
        room = block_room(max_pdu)
        chunks = [apdu[i : i + room] for i in range(0, len(apdu), room)]
        if len(chunks) > MAX_GBT_BLOCKS:
            raise ValueError(f"GBT: {len(chunks)} blocks exceed {MAX_GBT_BLOCKS}")
        self._chunks = chunks
        self._first = self._number + 1
        self._next = 0
        self._parts.clear()
        self._gap = False
        return self._window()

    def ack(self) -> bytes:
        """The acknowledgement of what arrived in order (sent at a window's end, or when the
        rest of a window stays away)."""
        self._number = (self._number + 1) & 0xFFFF
        return GbtBlock(False, False, self.window, self._number, self._received).encode()

    def receive(self, block: GbtBlock) -> GbtStep:
        """Take one GBT APDU from the peer."""
        if block.window:
            self.peer_window = block.window
        in_order = block.block_number == (self._received + 1) & 0xFFFF
        if not block.data and (self._chunks or not block.last):
            # An acknowledgement; Gurux sets last-block in its own (it has nothing to send).
            if in_order:
                self._received = block.block_number
            return self._acknowledged(block.block_number_ack)
        self._chunks = []  # the peer answers: what we sent arrived
        if in_order:
            self._received = block.block_number
            self._parts.append(block.data)
            if len(self._parts) > MAX_GBT_BLOCKS:
                raise ProtocolError(f"GBT: more than {MAX_GBT_BLOCKS} blocks")
            if block.last:
                apdu = b"".join(self._parts)
                self._parts = []  # the numbers go on: the answer acknowledges this block
                return Complete(apdu)
        elif _after(block.block_number, self._received):
            self._gap = True  # a block before this one was lost: it comes again
        if block.streaming and not block.last:
            return Wait()
        self._gap = False
        return Out((self.ack(),))

    def _acknowledged(self, acked: int) -> GbtStep:
        """The peer acknowledged our blocks up to ``acked``: the next window (again)."""
        if not self._chunks:
            raise ProtocolError("GBT: an acknowledgement with nothing being sent")
        index = (acked - self._first + 1) & 0xFFFF
        if index > len(self._chunks):
            raise ProtocolError(f"GBT: block {acked} acknowledged, not sent")
        if index >= len(self._chunks):
            raise ProtocolError(f"GBT: all {len(self._chunks)} blocks acknowledged, no answer")
        if index < self._next:
            self.resent += self._next - index
        self._next = index
        return Out(tuple(self._window()))

    def _window(self) -> list[bytes]:
        chunks = self._chunks
        count = min(self.peer_window, len(chunks) - self._next)
        out: list[bytes] = []
        for k in range(count):
            index = self._next + k
            last = index == len(chunks) - 1
            block = GbtBlock(
                last=last,
                streaming=not last and k < count - 1,
                window=self.window,
                block_number=(self._first + index) & 0xFFFF,
                block_number_ack=self._received,
                data=chunks[index],
            )
            out.append(block.encode())
        self._next += count
        self._number = (self._first + self._next - 1) & 0xFFFF
        return out


def _after(number: int, received: int) -> bool:
    """Whether block ``number`` lies ahead of ``received`` (modulo 2**16)."""
    return 0 < (number - received) & 0xFFFF < 0x8000
