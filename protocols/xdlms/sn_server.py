"""The short-name half of the meter's association: Read answers, in blocks when too big.

:class:`ShortNameServing` is mixed into ``protocols.xdlms.server.ServerAssociation``: it
answers the application's ReadRequest results (``answer_read``, ``answer_write``) and the
client's block-number-access for the next block. :class:`LongValue` is the value being sent
in blocks, shared with the GET block transfer of LN.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocols.enums import Conformance, DataAccessResult
from protocols.xdlms.sn import (
    ReadNextRequest,
    build_read_response,
    build_read_response_block,
    build_write_response,
)


@dataclass(slots=True)
class LongValue:
    """A value sent in blocks; ``header`` is what a block APDU holds before the raw-data."""

    invoke_id: int
    raw: bytes
    header: int
    offset: int = 0
    block_number: int = 0

    def take(self, pdu: int) -> tuple[bytes, bool]:
        """The next slice, so the whole block APDU fits ``pdu``; True with the last one."""
        room = pdu - self.header
        size = max(1, room - (1 if room - 1 < 0x80 else 2 if room - 2 < 0x100 else 3))
        chunk = self.raw[self.offset : self.offset + size]
        self.offset += len(chunk)
        self.block_number += 1
        return chunk, self.offset >= len(self.raw)


class ShortNameServing:
    """Read/Write answers of an SN association; the association holds the fields below."""

    conformance: int
    client_max_pdu: int
    _long: LongValue | None

    def answer_read(self, items: list[bytes | int]) -> bytes:
        """The ReadResponse, in blocks when too big for the client's PDU (if negotiated):
        the raw-data is the one value, or the whole SEQUENCE OF Read-Data-Result."""
        response = build_read_response(items)
        if len(response) <= self.client_max_pdu:
            return response
        if not self.conformance & Conformance.BLOCK_TRANSFER_WITH_GET:
            return build_read_response([DataAccessResult.OTHER_REASON] * len(items))
        raw = response[3:] if len(items) == 1 else response[1:]
        # tag, count, choice, last-block, block number (2): 6 bytes before the raw-data
        self._long = LongValue(0, raw, 6)
        return self._next_read_block()

    def _next_read_block(self) -> bytes:
        long = self._long
        assert long is not None
        chunk, last = long.take(self.client_max_pdu)
        if last:
            self._long = None
        return build_read_response_block(last, long.block_number, chunk)

    def _read_next(self, request: ReadNextRequest) -> bytes:
        long = self._long
        if long is None:
            return build_read_response([DataAccessResult.NO_LONG_GET_IN_PROGRESS])
        if request.block_number != long.block_number:
            self._long = None
            return build_read_response([DataAccessResult.DATA_BLOCK_NUMBER_INVALID])
        return self._next_read_block()

    def answer_write(self, results: list[int]) -> bytes:
        return build_write_response(results)
