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
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any

from collector.transport import Transport
from protocols import apdu as xdlms
from protocols import axdr
from protocols.cosem import (
    CosemDateTime,
    Obis,
    ProfileColumn,
    ProfileRow,
    ScalerUnit,
)
from protocols.errors import (
    AssociationRefused,
    AuthenticationFailed,
    DataAccessError,
    DecipheringRejected,
    DecodeError,
    DlmsError,
    InvocationCounterRejected,
    KeyRejected,
    ProtocolError,
    ServiceError,
    SystemTitleRejected,
    data_access_error,
)
from protocols.security import SecurityContext

CLOCK = Obis.parse("0.0.1.0.0.255")
CURRENT_ASSOCIATION = Obis.parse("0.0.40.0.0.255")
CLASS_ASSOCIATION_LN = 15
#: Association LN method 1, reply_to_HLS_authentication (Blue Book).
METHOD_REPLY_TO_HLS = 1
CLASS_REGISTER = 3
CLASS_EXTENDED_REGISTER = 4
CLASS_DEMAND_REGISTER = 5
CLASS_PROFILE_GENERIC = 7
#: Conformance block, as an integer: multiple-references (GET/SET-WITH-LIST), named bit 14,
#: is 1 << 9 (the same position dlms-cosem's ``Conformance`` uses).
CONFORMANCE_MULTIPLE_REFERENCES = 1 << 9
CLASS_CLOCK = 8

#: ACSE diagnostic "authentication-failure" (Green Book, AARE result-source-diagnostic).
DIAGNOSTIC_AUTHENTICATION_FAILURE = 13
#: ACSE diagnostic "calling-AP-title-not-recognized".
DIAGNOSTIC_CALLING_AP_TITLE_NOT_RECOGNIZED = 3
#: ExceptionResponse service-errors of the security layer (Green Book).
SERVICE_ERROR_DECIPHERING = 5
SERVICE_ERROR_INVOCATION_COUNTER = 6
#: ServiceError application-reference (CHOICE 0) deciphering-error (6).
_APPLICATION_REFERENCE = 0
_DECIPHERING_ERROR = 6
#: Upper bound on GetRequestNext rounds, so a meter that never sends its last block cannot
#: keep a session forever.
MAX_BLOCKS = 10_000


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
    """One DLMS/COSEM application association over a transport."""

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
    ) -> None:
        if authentication == "hls-gmac" and security is None:
            raise ValueError("hls-gmac authentication needs a security context (keys)")
        self.transport = transport
        self.security = security
        self._ciphered = False
        self.authentication = authentication
        self.password = password
        self.max_pdu_size = max_pdu_size
        self.request_timeout = request_timeout
        self.release_timeout = release_timeout
        self.association: xdlms.AareInfo | None = None
        self._invoke_id = 0

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
            await self._associate()
        except BaseException:
            await self.transport.close()
            raise

    async def close(self, release: bool = True) -> None:
        """Release the association (best effort, bounded) and close the link."""
        try:
            if release and self.association is not None:
                # The wall-clock cap matters on HDLC, where the link layer would otherwise
                # retransmit the RLRQ to a dead meter several times.
                with contextlib.suppress(DlmsError, TimeoutError):
                    async with asyncio.timeout(self.release_timeout):
                        await self.transport.request(xdlms.build_rlrq(), self.release_timeout)
        finally:
            self.association = None
            self._ciphered = False
            await self.transport.close()

    async def _associate(self) -> None:
        security = self.security
        if security is not None:
            await self._associate_ciphered(security)
            return
        aarq = xdlms.build_aarq(
            authentication=self.authentication,
            password=self.password,
            max_pdu_size=self.max_pdu_size,
        )
        response = xdlms.decode_response(await self._request(aarq))
        if not isinstance(response, xdlms.AareInfo):
            raise ProtocolError(f"expected an AARE, got {type(response).__name__}")
        if not response.accepted:
            self._refused(response)
        self.association = response

    def _refused(self, response: xdlms.AareInfo) -> None:
        text = (
            f"{self.transport.description}: association refused "
            f"(result {response.result}, diagnostic {response.diagnostic})"
        )
        exc = response.exception
        if exc is not None and exc.service_error == SERVICE_ERROR_INVOCATION_COUNTER:
            raise InvocationCounterRejected(
                f"{text}: invocation counter rejected, meter expects at least "
                f"{exc.invocation_counter}",
                exc.invocation_counter,
            )
        if (
            response.initiate_error_choice == _APPLICATION_REFERENCE
            and response.initiate_error == _DECIPHERING_ERROR
        ):
            raise KeyRejected(f"{text}: the meter could not decipher the InitiateRequest")
        if (
            self.security is not None
            and response.diagnostic == DIAGNOSTIC_CALLING_AP_TITLE_NOT_RECOGNIZED
        ):
            raise SystemTitleRejected(
                f"{text}: calling-AP-title {self.security.system_title.hex()} not recognized",
                response.diagnostic,
            )
        if response.diagnostic == DIAGNOSTIC_AUTHENTICATION_FAILURE:
            raise AuthenticationFailed(text, response.diagnostic)
        raise AssociationRefused(text, response.diagnostic)

    async def _associate_ciphered(self, security: SecurityContext) -> None:
        """AARQ in the LN-with-ciphering context, then HLS passes 3/4 for hls-gmac."""
        security.new_session()
        challenge = self.password
        if self.authentication == "hls-gmac":
            challenge = security.new_challenge()
        initiate = xdlms.build_initiate_request(max_pdu_size=self.max_pdu_size)
        aarq = xdlms.build_aarq(
            authentication=self.authentication,
            password=challenge,
            system_title=security.system_title,
            ciphered=True,
            user_information=security.wrap(initiate),
        )
        response = xdlms.decode_response(await self._request(aarq))
        if not isinstance(response, xdlms.AareInfo):
            raise ProtocolError(f"expected an AARE, got {type(response).__name__}")
        if not response.accepted:
            self._refused(response)
        if not response.ciphered or response.ciphered_initiate is None:
            raise ProtocolError("the meter accepted without a glo-InitiateResponse")
        security.learn_server_title(response.responding_system_title)
        initiate_response = security.unwrap(response.ciphered_initiate)
        info = xdlms.decode_initiate(initiate_response)
        self.association = dataclasses.replace(
            response,
            negotiated_conformance=info.conformance,
            server_max_pdu_size=info.max_pdu_size,
            dlms_version=info.dlms_version,
        )
        self._ciphered = True
        if self.authentication == "hls-gmac":
            if response.challenge is None:
                raise ProtocolError("HLS-GMAC: the AARE carries no server challenge")
            try:
                answer = await self.action(
                    CLASS_ASSOCIATION_LN,
                    CURRENT_ASSOCIATION,
                    METHOD_REPLY_TO_HLS,
                    axdr.octets(security.reply_to_challenge(response.challenge)),
                )
            except DataAccessError as exc:
                raise AuthenticationFailed(
                    f"{self.transport.description}: HLS-GMAC reply_to_HLS_authentication "
                    f"refused (action result {exc.result})"
                ) from None
            if not isinstance(answer, bytes):
                raise AuthenticationFailed("HLS-GMAC: the meter returned no f(CtoS)")
            security.check_server_reply(answer)

    async def _request(self, apdu: bytes) -> bytes:
        security = self.security
        if security is None or not self._ciphered:
            return await self.transport.request(apdu, self.request_timeout)
        answer = await self.transport.request(security.wrap(apdu), self.request_timeout)
        return security.unwrap(answer)

    def _next_invoke_id(self) -> int:
        self._invoke_id = (self._invoke_id + 1) & 0x0F
        return self._invoke_id

    def _check_service(self, response: object, what: str) -> None:
        if isinstance(response, xdlms.ExceptionResult):
            if response.service_error == SERVICE_ERROR_DECIPHERING:
                raise DecipheringRejected(f"{what}: the meter could not decipher the request")
            if response.service_error == SERVICE_ERROR_INVOCATION_COUNTER:
                raise InvocationCounterRejected(
                    f"{what}: invocation counter rejected, meter expects at least "
                    f"{response.invocation_counter}",
                    response.invocation_counter,
                )
        if isinstance(response, xdlms.ExceptionResult | xdlms.ServiceErrorResult):
            raise ServiceError(f"{what}: meter answered {response}")

    async def get_raw(
        self,
        class_id: int,
        obis: str | Obis,
        attribute: int,
        access: xdlms.RangeAccess | xdlms.EntryAccess | None = None,
    ) -> bytes:
        """GET one attribute, following block transfer; returns the A-XDR encoded value."""
        ln = _obis(obis)
        what = f"GET {class_id}/{ln}/{attribute}"
        invoke_id = self._next_invoke_id()
        response = xdlms.decode_response(
            await self._request(xdlms.build_get(invoke_id, class_id, bytes(ln), attribute, access))
        )
        if isinstance(response, xdlms.GetResult):
            return response.data
        if isinstance(response, xdlms.GetError):
            raise data_access_error(response.result, what)
        if not isinstance(response, xdlms.GetBlock):
            self._check_service(response, what)
            raise ProtocolError(f"{what}: unexpected {type(response).__name__}")
        blocks = [response.raw]
        expected = response.block_number
        while not response.last:
            if len(blocks) > MAX_BLOCKS:
                raise ProtocolError(f"{what}: more than {MAX_BLOCKS} blocks")
            response = xdlms.decode_response(
                await self._request(xdlms.build_get_next(invoke_id, expected))
            )
            if isinstance(response, xdlms.GetError):
                raise data_access_error(response.result, what)
            if not isinstance(response, xdlms.GetBlock):
                self._check_service(response, what)
                raise ProtocolError(f"{what}: unexpected {type(response).__name__} in blocks")
            if response.block_number != expected + 1:
                raise ProtocolError(f"{what}: block {response.block_number} after block {expected}")
            expected = response.block_number
            blocks.append(response.raw)
        return _join_blocks(blocks, what)

    async def get(
        self,
        class_id: int,
        obis: str | Obis,
        attribute: int,
        access: xdlms.RangeAccess | xdlms.EntryAccess | None = None,
    ) -> Any:
        """GET one attribute and decode its value."""
        return axdr.decode(await self.get_raw(class_id, obis, attribute, access))

    def _with_list(self) -> bool:
        """Whether the meter granted multiple-references (GET/SET-WITH-LIST)."""
        association = self.association
        return association is not None and bool(
            association.negotiated_conformance & CONFORMANCE_MULTIPLE_REFERENCES
        )

    async def get_many(self, items: Sequence[tuple[int, str | Obis, int]]) -> list[Any | DlmsError]:
        """GET several attributes with one GET-WITH-LIST round trip.

        Per-item failures come back in place as the typed error, not raised, so one missing
        object does not cost the whole read.
        """
        invoke_id = self._next_invoke_id()
        request = xdlms.build_get_with_list(
            invoke_id, [(cid, bytes(_obis(ln)), attr, None) for cid, ln, attr in items]
        )
        response = xdlms.decode_response(await self._request(request))
        if isinstance(response, xdlms.GetBlock):
            raw = await self._rest_of_blocks(invoke_id, response, "GET-WITH-LIST")
            response = xdlms.decode_response(raw)
        if isinstance(response, xdlms.GetError):
            raise data_access_error(response.result, "GET-WITH-LIST")
        if not isinstance(response, xdlms.GetListResult):
            self._check_service(response, "GET-WITH-LIST")
            raise ProtocolError(f"GET-WITH-LIST: unexpected {type(response).__name__}")
        if len(response.items) != len(items):
            raise ProtocolError(
                f"GET-WITH-LIST: asked for {len(items)} items, got {len(response.items)}"
            )
        out: list[Any | DlmsError] = []
        for (cid, ln, attr), item in zip(items, response.items, strict=True):
            if isinstance(item, int):
                out.append(data_access_error(item, f"GET {cid}/{_obis(ln)}/{attr}"))
            else:
                out.append(axdr.decode(item))
        return out

    async def _rest_of_blocks(self, invoke_id: int, first: xdlms.GetBlock, what: str) -> bytes:
        """Collect a with-list response sent in blocks and rebuild the plain response APDU."""
        blocks = [first.raw]
        response: object = first
        block = first.block_number
        while isinstance(response, xdlms.GetBlock) and not response.last:
            response = xdlms.decode_response(
                await self._request(xdlms.build_get_next(invoke_id, block))
            )
            if isinstance(response, xdlms.GetError):
                raise data_access_error(response.result, what)
            if not isinstance(response, xdlms.GetBlock):
                self._check_service(response, what)
                raise ProtocolError(f"{what}: unexpected {type(response).__name__} in blocks")
            block = response.block_number
            blocks.append(response.raw)
        # The blocks of a GET-WITH-LIST response carry its list of Get-Data-Results (Green
        # Book, GET service with block transfer): rebuild the plain with-list APDU to decode it.
        header = bytes((xdlms.TAG_GET_RESPONSE, 0x03, 0xC0 | invoke_id))
        return header + _join_blocks(blocks, what)

    async def set(self, class_id: int, obis: str | Obis, attribute: int, value: Any) -> None:
        """SET one attribute to an encoded value (``protocols.axdr`` typed helpers)."""
        ln = _obis(obis)
        what = f"SET {class_id}/{ln}/{attribute}"
        request = xdlms.build_set(
            self._next_invoke_id(), class_id, bytes(ln), attribute, axdr.encode(value)
        )
        response = xdlms.decode_response(await self._request(request))
        if not isinstance(response, xdlms.SetResult):
            self._check_service(response, what)
            raise ProtocolError(f"{what}: unexpected {type(response).__name__}")
        if response.result != 0:
            raise data_access_error(response.result, what)

    async def action(
        self, class_id: int, obis: str | Obis, method: int, parameter: Any = None
    ) -> Any:
        """Invoke a method; returns the decoded return parameters, if any."""
        ln = _obis(obis)
        what = f"ACTION {class_id}/{ln}/{method}"
        data = None if parameter is None else axdr.encode(parameter)
        request = xdlms.build_action(self._next_invoke_id(), class_id, bytes(ln), method, data)
        response = xdlms.decode_response(await self._request(request))
        if not isinstance(response, xdlms.ActionResult):
            self._check_service(response, what)
            raise ProtocolError(f"{what}: unexpected {type(response).__name__}")
        if response.result != 0:
            raise data_access_error(response.result, what)
        return None if response.data is None else axdr.decode(response.data)

    async def read_clock(self) -> CosemDateTime:
        value = await self.get(CLASS_CLOCK, CLOCK, 2)
        return _as_datetime(value, "clock")

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


def _join_blocks(blocks: list[bytes], what: str) -> bytes:
    if not blocks:
        raise ProtocolError(f"{what}: no data blocks")
    return b"".join(blocks)


def _as_datetime(value: Any, what: str) -> CosemDateTime:
    raw = bytes(value) if isinstance(value, bytes | bytearray | axdr.DateTimeValue) else None
    if raw is None or len(raw) != 12:
        raise DecodeError(f"{what}: expected a 12-byte date-time, got {value!r}")
    return CosemDateTime.from_bytes(raw)
