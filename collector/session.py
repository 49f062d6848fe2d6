"""The asyncio DLMS/COSEM client session: one association with one meter.

``async with Session(transport) as s: await s.get(...)`` opens the link, associates (AARQ/AARE),
and on exit releases (RLRQ/RLRE) and closes the link, never hanging on a dead meter. Values come
back decoded (``protocols.axdr``); failures come back as the typed errors of
``protocols.errors``, which the collector classifies for retries.

With a ``security`` context (``protocols.security.SecurityContext``) the association uses the
LN-with-ciphering context and suite 0: the AARQ carries the client system title and a
glo-InitiateRequest, every GET/SET/ACTION goes out as a glo- APDU and every answer is
deciphered and checked (tag, meter system title, increasing meter counter). With
``authentication="hls-gmac"`` the session then runs HLS passes 3 and 4 (ACTION
reply_to_HLS_authentication on the current association, checking the meter's f(CtoS)) before
any other request. Client invocation counters come from the context's counter store, which
persists them before they are used. Every security rejection raises its own non-transient
error class (``protocols.errors.SecurityError`` subclasses).

With ``referencing="sn"`` the association uses short-name referencing: once associated, the
session reads the meter's object_list (Association SN, attribute 2) and from then on maps
every (class id, OBIS, attribute) to its short name, so ``get`` / ``get_many`` / ``set`` go
out as ReadRequest / WriteRequest (selective access as parameterized access) and callers
(profile reader, clock, registers) stay as they are. An object missing from the list is an
``ObjectUndefined`` naming it. ``action`` writes the parameter to the method's short name
(``protocols.xdlms.sn.METHOD_OFFSETS``); a class without a known method offset is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, TypeAlias

from collector.meter_profiles import blue_book_clock
from collector.transport import Transport
from protocols import axdr, xdlms
from protocols.axdr_columns import decode_columns
from protocols.cosem import (
    CosemDateTime,
    Obis,
    ProfileColumn,
    ProfileRow,
    ScalerUnit,
)
from protocols.enums import InterfaceClass
from protocols.errors import (
    DecodeError,
    DlmsError,
    DlmsTimeout,
    ObjectUndefined,
    ProtocolError,
    data_access_error,
)
from protocols.security import SecurityContext
from protocols.xdlms.client import (
    ClientAssociation,
    ClientEvent,
    Done,
    Released,
    Send,
    Value,
    Values,
    Wait,
    Written,
)
from protocols.xdlms.sn import OBJECT_LIST_NAME, ObjectList

CLOCK = Obis.parse("0.0.1.0.0.255")
CLASS_REGISTER = InterfaceClass.REGISTER
CLASS_EXTENDED_REGISTER = InterfaceClass.EXTENDED_REGISTER
CLASS_DEMAND_REGISTER = InterfaceClass.DEMAND_REGISTER
CLASS_PROFILE_GENERIC = InterfaceClass.PROFILE_GENERIC
CLASS_CLOCK = InterfaceClass.CLOCK
Referencing: TypeAlias = Literal["ln", "sn"]


@dataclass(slots=True, frozen=True)
class RegisterValue:
    """A register read: the raw integer, its scaler_unit and the scaled value."""

    obis: str
    raw: Any
    scaler: int
    unit: int
    value: Any
    unit_name: str
    capture_time: datetime | None = None


@dataclass(slots=True, frozen=True)
class ProfileData:
    """A profile-generic buffer read with its capture objects."""

    obis: str
    columns: list[ProfileColumn]
    capture_period: int
    rows: list[ProfileRow]


def _obis(value: str | Obis) -> Obis:
    return value if isinstance(value, Obis) else Obis.parse(value)


class Session:
    """One DLMS/COSEM application association over a transport.

    The protocol lives in :class:`protocols.xdlms.client.ClientAssociation`; this class
    only moves its APDUs over the transport, with a timeout per round trip.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        authentication: xdlms.Authentication = "none",
        password: bytes | None = None,
        max_pdu_size: int = 0xFFFF,
        request_timeout: float = 10.0,
        release_timeout: float = 3.0,
        security: SecurityContext | None = None,
        accept_trailing: bool = True,
        inverted_deviation: bool = False,
        referencing: Referencing = "ln",
        range_deviation: bool = True,
        gbt_window: int = 0,
    ) -> None:
        if referencing not in ("ln", "sn"):
            raise ValueError(f"referencing {referencing!r}: use 'ln' or 'sn'")
        self.transport = transport
        #: Whether bytes after a GET value are a warning (True) or a DecodeError: a meter
        #: profile that knows its model sends none makes them an error.
        self.accept_trailing = accept_trailing
        #: Whether the meter sends its clock deviation with the sign opposite to the Blue
        #: Book's (its meter profile says so): :meth:`read_clock` turns it round.
        self.inverted_deviation = inverted_deviation
        #: Whether profile range reads name their bounds with a deviation (UTC, 0) or, for a
        #: meter that matches nothing then, as local wall times without one.
        self.range_deviation = range_deviation
        self.referencing: Referencing = referencing
        #: The SN meter's object list, read once after the association.
        self.object_list: ObjectList | None = None
        self.security = security
        self.authentication = authentication
        self.password = password
        self.max_pdu_size = max_pdu_size
        self.request_timeout = request_timeout
        self.release_timeout = release_timeout
        #: Whether the meter answered the RLRQ with an RLRE (the release did not time out).
        self.released = False
        #: What the meter sent that was odd but did not stop the read (bytes after a value).
        self.warnings: list[str] = []
        self._client = ClientAssociation(
            authentication=authentication,
            password=password,
            max_pdu_size=max_pdu_size,
            security=security,
            peer=transport.description,
            short_names=referencing == "sn",
            gbt_window=gbt_window,
        )

    @property
    def association(self) -> xdlms.AareInfo | None:
        return self._client.association

    async def __aenter__(self) -> Session:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close(release=exc is None or isinstance(exc, DlmsError))

    async def open(self) -> None:
        await self.transport.open()
        try:
            await self._exchange(self._client.associate())
            if self.referencing == "sn":
                await self._read_object_list()
        except BaseException:
            await self.transport.close()
            raise

    async def close(self, release: bool = True) -> None:
        """Release the association (best effort, bounded) and close the link."""
        try:
            if release and self._client.association is not None:
                rlrq = self._client.release()
                # The wall-clock cap matters on HDLC, where the link layer would otherwise
                # retransmit the RLRQ to a dead meter several times.
                with contextlib.suppress(DlmsError, TimeoutError):
                    async with asyncio.timeout(self.release_timeout):
                        answer = await self.transport.request(rlrq, self.release_timeout)
                    self.released = isinstance(self._client.receive(answer), Released)
        finally:
            self._client.drop()
            await self.transport.close()

    async def _exchange(self, apdu: bytes) -> ClientEvent:
        """Send, and keep going while the association asks for another round trip (or, in
        general block transfer, waits for the rest of the meter's window)."""
        client = self._client
        while True:
            event = client.receive(await self._send_window(apdu))
            while isinstance(event, Wait):
                event = client.receive(await self._next_block())
            if not isinstance(event, Send):
                return event
            apdu = event.apdu

    async def _send_window(self, apdu: bytes) -> bytes:
        """Send ``apdu`` and the GBT blocks queued after it; the meter's answer to the last."""
        transport, timeout = self.transport, self.request_timeout
        queued = self._client.take_queued()
        if not queued:
            return await transport.request(apdu, timeout)
        await transport.send(apdu, timeout)
        for block in queued[:-1]:
            await transport.send(block, timeout)
        return await transport.request(queued[-1], timeout)

    async def _next_block(self) -> bytes:
        """The next GBT block of the meter's window; once, after a silence, ask for it."""
        try:
            return await self.transport.receive(self.request_timeout)
        except DlmsTimeout:
            ack = self._client.gbt_timeout()
            if ack is None:
                raise
            return await self.transport.request(ack, self.request_timeout)

    async def _read_object_list(self) -> None:
        event = await self._exchange(self._client.read([(OBJECT_LIST_NAME, None)]))
        assert isinstance(event, Values)
        (item,) = event.items
        if isinstance(item, int):
            raise data_access_error(item, "Read of the SN object_list (0xFA08)")
        self.object_list = ObjectList.from_value(axdr.decode(item))

    def _short_name(self, class_id: int, obis: Obis, attribute: int) -> int:
        names = self.object_list
        assert names is not None
        name = names.short_name(class_id, bytes(obis), attribute)
        if name is None:
            raise ObjectUndefined(
                f"class {class_id} {obis} is not in the meter's SN object list "
                f"({len(names)} objects)",
                4,
            )
        return name

    async def _sn_action(self, class_id: int, ln: Obis, method: int, data: bytes | None) -> None:
        """A method invoked by writing its parameter (null-data if none) to its short name."""
        what = f"ACTION {class_id}/{ln}/{method}"
        names = self.object_list
        assert names is not None
        try:
            name = names.method_name(class_id, bytes(ln), method)
        except ValueError as exc:
            raise ProtocolError(f"{what}: {exc}") from None
        if name is None:
            raise ObjectUndefined(f"{what}: not in the meter's SN object list", 4)
        event = await self._exchange(self._client.write([(name, data or axdr.encode(axdr.null()))]))
        assert isinstance(event, Written)
        if event.results != [0]:
            raise data_access_error(event.results[0], what)

    async def _read(
        self, refs: Sequence[tuple[int, Obis, int, xdlms.AccessSelection | None]]
    ) -> list[bytes | DlmsError]:
        """SN: one ReadRequest for several references, failures in place."""
        out: list[bytes | DlmsError | None] = []
        wanted: list[tuple[int, xdlms.AccessSelection | None]] = []
        for cid, ln, attr, access in refs:
            try:
                wanted.append((self._short_name(cid, ln, attr), access))
                out.append(None)
            except ObjectUndefined as exc:
                out.append(exc)
        if wanted:
            event = await self._exchange(self._client.read(wanted))
            assert isinstance(event, Values)
            if len(event.items) != len(wanted):
                raise ProtocolError(
                    f"ReadRequest: asked for {len(wanted)} items, got {len(event.items)}"
                )
            answers = iter(event.items)
            for index, (cid, ln, attr, _) in enumerate(refs):
                if out[index] is None:
                    item = next(answers)
                    out[index] = (
                        data_access_error(item, f"Read {cid}/{ln}/{attr}")
                        if isinstance(item, int)
                        else item
                    )
        return [item for item in out if item is not None]

    async def get_raw(
        self,
        class_id: int,
        obis: str | Obis,
        attribute: int,
        access: xdlms.RangeAccess | xdlms.EntryAccess | None = None,
    ) -> bytes:
        """GET one attribute, following block transfer; returns the A-XDR encoded value."""
        if self.referencing == "sn":
            (item,) = await self._read([(class_id, _obis(obis), attribute, access)])
            if isinstance(item, DlmsError):
                raise item
            return item
        event = await self._exchange(
            self._client.get(class_id, bytes(_obis(obis)), attribute, access)
        )
        assert isinstance(event, Value)
        return event.raw

    async def get(
        self,
        class_id: int,
        obis: str | Obis,
        attribute: int,
        access: xdlms.RangeAccess | xdlms.EntryAccess | None = None,
    ) -> Any:
        """GET one attribute and decode its value.

        Bytes after the value do not cost the read: the value is taken and the bytes are
        kept in :attr:`warnings` (a DecodeError instead when not :attr:`accept_trailing`).
        """
        value, trailing = axdr.decode_leading(await self.get_raw(class_id, obis, attribute, access))
        self._trailing(trailing, class_id, obis, attribute)
        return value

    async def get_columns(
        self,
        class_id: int,
        obis: str | Obis,
        attribute: int,
        access: xdlms.RangeAccess | xdlms.EntryAccess | None = None,
    ) -> tuple[list[tuple[Any, ...]] | None, Any]:
        """GET an attribute that is usually an array of flat structures (a profile buffer):
        ``(columns, None)`` when it is one (:func:`protocols.axdr_columns.decode_columns`),
        else ``(None, value)`` as :meth:`get` decodes it; trailing bytes as :meth:`get`."""
        raw = await self.get_raw(class_id, obis, attribute, access)
        if type(raw) is not bytes:
            raw = bytes(raw)
        got = decode_columns(raw)
        if got is None:
            value, trailing = axdr.decode_leading(raw)
            self._trailing(trailing, class_id, obis, attribute)
            return None, value
        columns, stop = got
        self._trailing(raw[stop:], class_id, obis, attribute)
        return columns, None

    def _trailing(self, trailing: bytes, class_id: int, obis: str | Obis, attribute: int) -> None:
        """Bytes after a GET value: a warning, or a DecodeError without accept_trailing."""
        if trailing and not self.accept_trailing:
            raise DecodeError(
                f"GET {class_id}/{_obis(obis)}/{attribute}: {len(trailing)} bytes after the "
                f"value: {trailing.hex()} (the meter profile does not accept trailing bytes)"
            )
        if trailing:
            self.warnings.append(
                f"GET {class_id}/{_obis(obis)}/{attribute}: {len(trailing)} bytes after the "
                f"value ignored: {trailing.hex()}"
            )

    @property
    def gbt(self) -> bool:
        """Whether the meter granted general-block-transfer."""
        return self._client.gbt

    def with_list(self) -> bool:
        """Whether the meter granted multiple-references (GET/SET-WITH-LIST)."""
        return self._client.with_list

    async def get_many(self, items: Sequence[tuple[int, str | Obis, int]]) -> list[Any | DlmsError]:
        """GET several attributes with one GET-WITH-LIST round trip.

        Per-item failures come back in place as the typed error, not raised, so one missing
        object does not cost the whole read.
        """
        keyed = [(cid, _obis(ln), attr) for cid, ln, attr in items]
        if self.referencing == "sn":
            results = await self._read([(cid, ln, attr, None) for cid, ln, attr in keyed])
            return [r if isinstance(r, DlmsError) else axdr.decode(r) for r in results]
        event = await self._exchange(
            self._client.get_many([(cid, bytes(ln), attr) for cid, ln, attr in keyed])
        )
        assert isinstance(event, Values)
        if len(event.items) != len(items):
            raise ProtocolError(
                f"GET-WITH-LIST: asked for {len(items)} items, got {len(event.items)}"
            )
        out: list[Any | DlmsError] = []
        for (cid, ln, attr), item in zip(keyed, event.items, strict=True):
            if isinstance(item, int):
                out.append(data_access_error(item, f"GET {cid}/{ln}/{attr}"))
            else:
                out.append(axdr.decode(item))
        return out

    async def set(self, class_id: int, obis: str | Obis, attribute: int, value: Any) -> None:
        """SET one attribute to an encoded value (``protocols.axdr`` typed helpers)."""
        if self.referencing == "sn":
            ln = _obis(obis)
            name = self._short_name(class_id, ln, attribute)
            event = await self._exchange(self._client.write([(name, axdr.encode(value))]))
            assert isinstance(event, Written)
            if event.results != [0]:
                raise data_access_error(event.results[0], f"Write {class_id}/{ln}/{attribute}")
            return
        await self._exchange(
            self._client.set(class_id, bytes(_obis(obis)), attribute, axdr.encode(value))
        )

    async def action(
        self, class_id: int, obis: str | Obis, method: int, parameter: Any = None
    ) -> Any:
        """Invoke a method; returns the decoded return parameters, if any."""
        data = None if parameter is None else axdr.encode(parameter)
        if self.referencing == "sn":
            await self._sn_action(class_id, _obis(obis), method, data)
            return None
        event = await self._exchange(
            self._client.action(class_id, bytes(_obis(obis)), method, data)
        )
        assert isinstance(event, Done)
        return None if event.data is None else axdr.decode(event.data)

    async def read_clock(self) -> CosemDateTime:
        """The meter clock, its deviation in the Blue Book's sign whatever the meter's."""
        clock = _as_datetime(await self.get(CLASS_CLOCK, CLOCK, 2), "clock")
        return blue_book_clock(clock, self.inverted_deviation)

    async def read_register(
        self, obis: str | Obis, class_id: int = CLASS_REGISTER
    ) -> RegisterValue:
        """Read value and scaler_unit of a register (class 3), extended or demand register."""
        ln = _obis(obis)
        results = await self.get_many(
            [(class_id, ln, 2), (class_id, ln, 3)]
            + ([(class_id, ln, 5)] if class_id == CLASS_EXTENDED_REGISTER else [])
        )
        for result in results:
            if isinstance(result, DlmsError):
                raise result
        raw, scaler_unit = results[0], results[1]
        su = ScalerUnit.from_value(scaler_unit)
        capture = None
        if class_id == CLASS_EXTENDED_REGISTER:
            capture = _as_datetime(results[2], "capture_time").to_datetime()
        return RegisterValue(
            obis=str(ln),
            raw=raw,
            scaler=su.scaler,
            unit=su.unit,
            value=su.apply(raw) if isinstance(raw, int) else raw,
            unit_name=su.unit_name,
            capture_time=capture,
        )


def _as_datetime(value: Any, what: str) -> CosemDateTime:
    raw = bytes(value) if isinstance(value, bytes | bytearray | axdr.DateTimeValue) else None
    if raw is None or len(raw) != 12:
        raise DecodeError(f"{what}: expected a 12-byte date-time, got {value!r}")
    return CosemDateTime.from_bytes(raw)
