"""The general-block-transfer half of the meter's association (mixed into ServerAssociation).

:class:`GbtServing` takes the client's GBT APDUs (a request coming in blocks, or its
acknowledgement of the meter's blocks) and puts the meter's answers in GBT when the request
came in GBT (the Green Book has the other party follow) or the answer exceeds the client's
max PDU size; the blocks of a window after the first wait in :attr:`queued` for the IO loop.
"""

from __future__ import annotations

from protocols.enums import Conformance
from protocols.errors import DecodeError, ProtocolError
from protocols.xdlms.gbt import Complete, GbtExchange, GbtStep, decode_gbt


class GbtServing:
    """GBT state of one association; the association holds ``conformance`` and the PDU."""

    conformance: int
    client_max_pdu: int

    def _init_gbt(self, window: int) -> None:
        self._gbt = GbtExchange(window)
        #: The request in service came in GBT: its answer goes in GBT too.
        self._gbt_reply = False
        #: The request in service was joined from GBT blocks (it may exceed our PDU).
        self._assembled = False
        #: GBT APDUs of a window that follow the one an answer method returned.
        self.queued: list[bytes] = []

    def _reset_gbt(self) -> None:
        self._gbt.reset()
        self._gbt_reply = False
        self.queued.clear()

    def take_queued(self) -> list[bytes]:
        """The further GBT APDUs of the window just answered (sent after it, in order)."""
        out, self.queued = self.queued, []
        return out

    @property
    def gbt(self) -> bool:
        """Whether general-block-transfer was negotiated."""
        return bool(self.conformance & Conformance.GENERAL_BLOCK_TRANSFER)

    def _gbt_step(self, data: bytes) -> GbtStep | None:
        """What one GBT APDU of the client does; None when it is garbled or out of place."""
        try:
            block = decode_gbt(data)
        except DecodeError:
            return None
        if block.data and block.block_number == 1:
            self._gbt.reset()  # the first block of a new request
        try:
            step = self._gbt.receive(block)
        except ProtocolError:
            self._gbt.reset()
            return None
        if isinstance(step, Complete):
            self._gbt_reply = True
        return step

    def _gbt_out(self, apdu: bytes | None) -> bytes | None:
        """``apdu`` as it goes to the client: the first GBT block (the rest of its window
        queued) when the request came in GBT or the answer exceeds the client's PDU."""
        if apdu is None:
            return None
        if not (self._gbt_reply or (self.gbt and len(apdu) > self.client_max_pdu)):
            return apdu
        self._gbt_reply = True
        blocks = self._gbt.send(apdu, self.client_max_pdu)
        self.queued.extend(blocks[1:])
        return blocks[0]
