"""The client role of an xDLMS association, sans-IO: requests out as bytes, answers in as events.

In the manner of h11: :class:`ClientAssociation` never touches a socket or a clock. A
request method returns the APDU to send; :meth:`ClientAssociation.receive` takes the
meter's answer and returns either :class:`Send` (the exchange goes on: the next GET block,
or HLS pass 3 after the AARE) or the final event. Failures are raised as the typed errors
of ``protocols.errors``. The same state machine serves every IO loop (asyncio over HDLC or
the IP wrapper, a bench script, the tests).

It keeps invoke ids (0..15, one request at a time), follows GET block transfer (in order,
capped at :data:`MAX_BLOCKS`), rebuilds with-list responses sent in blocks, classifies an
AARE refusal, and with a :class:`~protocols.security.SecurityContext` ciphers every request,
deciphers every answer and runs HLS-GMAC passes 3 and 4. Randomness (the HLS challenge)
comes from the context, so a test can fix it. With ``short_names`` it proposes the SN
context and conformance, and serves ``read`` / ``write`` (ReadRequest / WriteRequest by short
name) instead of GET/SET/ACTION. With ``gbt_window`` it proposes general-block-transfer
(``protocols.xdlms.gbt``): the meter's long answers come in GBT blocks (``Wait`` while the
rest of a window is on its way), a request longer than the meter's max PDU size goes out in
them (``take_queued`` holds the rest of a window), and without GBT such a request is refused
here with a ProtocolError rather than sent to a meter that would drop it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

from protocols import axdr
from protocols.cosem import Obis
from protocols.enums import (
    AcseDiagnostic,
    ApduTag,
    ApplicationReferenceError,
    Conformance,
    InterfaceClass,
    ServiceErrorChoice,
    ServiceErrorCode,
)
from protocols.errors import (
    AssociationRefused,
    AuthenticationFailed,
    DecipheringRejected,
    DlmsError,
    InvocationCounterRejected,
    KeyRejected,
    ProtocolError,
    ServiceError,
    SystemTitleRejected,
    data_access_error,
)
from protocols.security import SecurityContext
from protocols.xdlms.acse import AareInfo, Authentication, ReleaseResponse, build_aarq, build_rlrq
from protocols.xdlms.codec import decode_response
from protocols.xdlms.descriptors import AccessSelection
from protocols.xdlms.exception import ExceptionResult, ServiceErrorResult
from protocols.xdlms.gbt import GBT_TAG, MAX_GBT_WINDOW, Complete, GbtExchange, decode_gbt
from protocols.xdlms.gbt import Wait as GbtWait
from protocols.xdlms.get import (
    GetBlock,
    GetError,
    GetListResult,
    GetResult,
    build_get,
    build_get_next,
    build_get_with_list,
)
from protocols.xdlms.initiate import DEFAULT_CONFORMANCE, build_initiate_request, decode_initiate
from protocols.xdlms.set_action import ActionResult, SetResult, build_action, build_set
from protocols.xdlms.sn import (
    ReadBlock,
    ReadResponse,
    Reference,
    WriteResponse,
    build_read_next,
    build_read_request,
    build_write_request,
)

#: Upper bound on GetRequestNext rounds, so a meter that never sends its last block cannot
#: keep a session forever.
MAX_BLOCKS = 10_000
#: The current association object and its reply_to_HLS_authentication method (Blue Book).
CURRENT_ASSOCIATION = bytes((0, 0, 40, 0, 0, 255))
METHOD_REPLY_TO_HLS = 1


@dataclass(slots=True, frozen=True)
class Send:
    """The exchange is not over: send ``apdu`` and feed the answer to ``receive``."""

    apdu: bytes


@dataclass(slots=True, frozen=True)
class Wait:
    """More GBT blocks of the meter's window are on their way: receive again, send nothing."""


@dataclass(slots=True, frozen=True)
class Associated:
    """The association is open; ``info`` is the AARE (negotiated values filled in)."""

    info: AareInfo


@dataclass(slots=True, frozen=True)
class Value:
    """A GET answered: the attribute's A-XDR encoding, blocks already joined."""

    raw: bytes


@dataclass(slots=True, frozen=True)
class Values:
    """A GET-WITH-LIST answered: per item the A-XDR bytes or a Data-Access-Result."""

    items: list[bytes | int]


@dataclass(slots=True, frozen=True)
class Done:
    """A SET or ACTION succeeded; ``data`` holds an ACTION's return parameters."""

    data: bytes | None = None


@dataclass(slots=True, frozen=True)
class Written:
    """A WriteRequest answered: a Data-Access-Result per item (0 = success)."""

    results: list[int]


@dataclass(slots=True, frozen=True)
class Released:
    reason: int | None


ClientEvent: TypeAlias = Send | Wait | Associated | Value | Values | Done | Written | Released


@dataclass(slots=True)
class _Pending:
    kind: str
    what: str
    invoke_id: int = 0
    blocks: list[bytes] = dataclasses.field(default_factory=list)
    block_number: int = 0
    aare: AareInfo | None = None
    count: int = 1


class ClientAssociation:
    """One application association seen from the client. ``peer`` names it in errors."""

    def __init__(
        self,
        *,
        authentication: Authentication = "none",
        password: bytes | None = None,
        max_pdu_size: int = 0xFFFF,
        security: SecurityContext | None = None,
        peer: str = "meter",
        short_names: bool = False,
        gbt_window: int = 0,
    ) -> None:
        if authentication == "hls-gmac" and security is None:
            raise ValueError("hls-gmac authentication needs a security context (keys)")
        if short_names and security is not None:
            raise ValueError("short-name referencing with ciphering is not supported")
        self.short_names = short_names
        self.authentication: Authentication = authentication
        self.password = password
        self.max_pdu_size = max_pdu_size
        self.security = security
        self.peer = peer
        self.association: AareInfo | None = None
        self.ciphered = False
        self._invoke_id = 0
        self._pending: _Pending | None = None
        if not 0 <= gbt_window <= MAX_GBT_WINDOW:
            raise ValueError(f"GBT window {gbt_window} outside 0..{MAX_GBT_WINDOW} (0: no GBT)")
        if gbt_window and short_names:
            raise ValueError("general-block-transfer is proposed for LN associations only")
        #: GBT blocks received at once; 0 = general-block-transfer not proposed.
        self.gbt_window = gbt_window
        self._gbt = GbtExchange(gbt_window or 1)
        self._queued: list[bytes] = []

    @property
    def conformance(self) -> int | None:
        """The conformance block proposed (None: the builders' default)."""
        if not self.gbt_window:
            return None
        return DEFAULT_CONFORMANCE | Conformance.GENERAL_BLOCK_TRANSFER

    @property
    def gbt(self) -> bool:
        """Whether the meter granted general-block-transfer (and the client proposed it)."""
        association = self.association
        return association is not None and bool(
            association.negotiated_conformance & Conformance.GENERAL_BLOCK_TRANSFER
        )

    @property
    def gbt_resent(self) -> int:
        """GBT blocks sent again because the meter acknowledged fewer than were sent."""
        return self._gbt.resent

    def gbt_timeout(self) -> bytes | None:
        """When the meter went quiet in the middle of a GBT window: the acknowledgement that
        asks for the rest again (None when no GBT transfer to us is under way)."""
        if self._pending is None or not self._gbt.receiving:
            return None
        return self._gbt.ack()

    def take_queued(self) -> list[bytes]:
        """The further GBT APDUs of the window just returned, to send after it in order."""
        out, self._queued = self._queued, []
        return out

    # ------------------------------------------------------------------ requests

    def associate(self) -> bytes:
        """The AARQ (ciphered context with a glo-InitiateRequest when keys are given)."""
        security = self.security
        self.drop()
        if security is None:
            self._pending = _Pending("aarq", "AARQ")
            return build_aarq(
                authentication=self.authentication,
                password=self.password,
                max_pdu_size=self.max_pdu_size,
                conformance=self.conformance,
                short_names=self.short_names,
            )
        security.new_session()
        challenge = self.password
        if self.authentication == "hls-gmac":
            challenge = security.new_challenge()
        initiate = build_initiate_request(
            max_pdu_size=self.max_pdu_size, conformance=self.conformance
        )
        self._pending = _Pending("aarq", "AARQ")
        return build_aarq(
            authentication=self.authentication,
            password=challenge,
            system_title=security.system_title,
            ciphered=True,
            user_information=security.wrap(initiate),
        )

    def get(
        self, class_id: int, obis: bytes, attribute: int, access: AccessSelection | None = None
    ) -> bytes:
        """GET-Request-Normal of one attribute (block transfer is followed by ``receive``)."""
        invoke_id = self._start("get", f"GET {class_id}/{Obis.from_bytes(obis)}/{attribute}")
        return self._out(build_get(invoke_id, class_id, obis, attribute, access))

    def get_many(self, items: Sequence[tuple[int, bytes, int]]) -> bytes:
        """GET-Request-With-List of ``(class_id, obis, attribute)`` items."""
        invoke_id = self._start("list", "GET-WITH-LIST")
        request = build_get_with_list(invoke_id, [(c, o, a, None) for c, o, a in items])
        return self._out(request)

    def set(self, class_id: int, obis: bytes, attribute: int, data: bytes) -> bytes:
        invoke_id = self._start("set", f"SET {class_id}/{Obis.from_bytes(obis)}/{attribute}")
        return self._out(build_set(invoke_id, class_id, obis, attribute, data))

    def action(self, class_id: int, obis: bytes, method: int, data: bytes | None = None) -> bytes:
        invoke_id = self._start("action", f"ACTION {class_id}/{Obis.from_bytes(obis)}/{method}")
        return self._out(build_action(invoke_id, class_id, obis, method, data))

    def read(self, references: Sequence[Reference]) -> bytes:
        """ReadRequest of short names (each plain or with a parameterized access)."""
        names = ", ".join(f"0x{name:04X}" for name, _ in references)
        self._start("read", f"Read {names}")
        assert self._pending is not None
        self._pending.count = len(references)
        return build_read_request(references)

    def write(self, items: Sequence[tuple[int, bytes]]) -> bytes:
        """WriteRequest of ``(short name, encoded value)`` pairs."""
        names = ", ".join(f"0x{name:04X}" for name, _ in items)
        self._start("write", f"Write {names}")
        return build_write_request(items)

    def release(self) -> bytes:
        """The RLRQ; the association is considered closed whatever comes back."""
        self.drop()
        self._pending = _Pending("release", "RLRQ")
        return build_rlrq()

    def drop(self) -> None:
        """Forget the association without releasing it (the link is gone or being closed)."""
        self._pending = None
        self.association = None
        self.ciphered = False

    @property
    def with_list(self) -> bool:
        """Whether the meter granted multiple-references (GET/SET-WITH-LIST)."""
        association = self.association
        return association is not None and bool(
            association.negotiated_conformance & Conformance.MULTIPLE_REFERENCES
        )

    def _start(self, kind: str, what: str) -> int:
        if self.association is None:
            raise ProtocolError(f"{what}: no association with {self.peer}")
        self._invoke_id = (self._invoke_id + 1) & 0x0F
        self._pending = _Pending(kind, what, self._invoke_id)
        self._gbt.reset()
        self._queued = []
        return self._invoke_id

    def _out(self, apdu: bytes) -> bytes:
        """The request as it goes out: ciphered when the association is, and in GBT blocks
        (the rest of the first window queued) when longer than the meter's max PDU size."""
        security = self.security
        out = security.wrap(apdu) if security is not None and self.ciphered else apdu
        association = self.association
        limit = association.server_max_pdu_size if association is not None else 0
        if not limit or len(out) <= limit:
            return out
        if not self.gbt:
            what = self._pending.what if self._pending is not None else "request"
            self._pending = None
            granted = "not negotiated" if self.gbt_window else "not proposed (no GBT window)"
            raise ProtocolError(
                f"{what}: the request is {len(out)} bytes, more than the {self.peer}'s max "
                f"PDU size {limit}, and general-block-transfer was {granted}"
            )
        blocks = self._gbt.send(out, limit)
        self._queued = blocks[1:]
        return blocks[0]

    # ------------------------------------------------------------------ answers

    def receive(self, data: bytes) -> ClientEvent:
        """Take the meter's answer to the request in flight."""
        pending = self._pending
        if pending is None:
            raise ProtocolError(f"{self.peer}: an APDU arrived with no request in flight")
        try:
            event = self._handle(pending, data)
        except BaseException:
            self._pending = None
            raise
        if not isinstance(event, Send | Wait):
            self._pending = None
        return event

    def _handle(self, pending: _Pending, data: bytes) -> ClientEvent:
        security = self.security
        if pending.kind == "release":
            response = decode_response(data)
            if not isinstance(response, ReleaseResponse):
                raise ProtocolError(f"RLRQ: expected an RLRE, got {type(response).__name__}")
            return Released(response.reason)
        if data[:1] == bytes((GBT_TAG,)) and self.gbt:
            step = self._gbt.receive(decode_gbt(data))
            if isinstance(step, GbtWait):
                return Wait()
            if not isinstance(step, Complete):
                self._queued = list(step.apdus[1:])
                return Send(step.apdus[0])
            data = step.apdu
        if security is not None and self.ciphered:
            data = security.unwrap(data)
        response = decode_response(data)
        if pending.kind == "aarq":
            return self._aare(pending, response)
        if pending.kind == "hls":
            return self._hls_reply(pending, response)
        if pending.kind == "get":
            return self._get(pending, response)
        if pending.kind == "list":
            return self._list(pending, response)
        if pending.kind == "read":
            if isinstance(response, ReadBlock):
                return self._read_block(pending, response)
            if not isinstance(response, ReadResponse):
                raise self._unexpected(response, pending.what)
            if pending.blocks:
                (result,) = response.items  # a block transfer ended by an error
                if isinstance(result, int):
                    return Values([result])
                raise ProtocolError(f"{pending.what}: data instead of the next block")
            return Values(response.items)
        if pending.kind == "write":
            if not isinstance(response, WriteResponse):
                raise self._unexpected(response, pending.what)
            return Written(response.results)
        if pending.kind == "set":
            if not isinstance(response, SetResult):
                raise self._unexpected(response, pending.what)
            if response.result != 0:
                raise data_access_error(response.result, pending.what)
            return Done()
        if not isinstance(response, ActionResult):
            raise self._unexpected(response, pending.what)
        if response.result != 0:
            raise data_access_error(response.result, pending.what)
        return Done(response.data)

    def _aare(self, pending: _Pending, response: object) -> ClientEvent:
        if isinstance(response, ExceptionResult):
            # Some meters refuse an AARQ with a bare ExceptionResponse instead of an AARE
            # carrying it in its user-information: classify it the same way.
            raise self._refused_by_exception(response)
        if not isinstance(response, AareInfo):
            raise ProtocolError(f"expected an AARE, got {type(response).__name__}")
        if not response.accepted:
            raise self._refused(response)
        if response.short_names != self.short_names:
            wanted = "short-name" if self.short_names else "logical-name"
            raise ProtocolError(f"{self.peer}: asked for {wanted} referencing, the AARE differs")
        security = self.security
        if security is None:
            self.association = response
            return Associated(response)
        if not response.ciphered or response.ciphered_initiate is None:
            raise ProtocolError("the meter accepted without a glo-InitiateResponse")
        security.learn_server_title(response.responding_system_title)
        info = decode_initiate(security.unwrap(response.ciphered_initiate))
        association = dataclasses.replace(
            response,
            negotiated_conformance=info.conformance,
            server_max_pdu_size=info.max_pdu_size,
            dlms_version=info.dlms_version,
        )
        self.association = association
        self.ciphered = True
        if self.authentication != "hls-gmac":
            return Associated(association)
        if response.challenge is None:
            raise ProtocolError("HLS-GMAC: the AARE carries no server challenge")
        reply = axdr.encode(axdr.octets(security.reply_to_challenge(response.challenge)))
        self._invoke_id = (self._invoke_id + 1) & 0x0F
        pending.kind, pending.what, pending.invoke_id = "hls", "HLS-GMAC", self._invoke_id
        pending.aare = association
        request = build_action(
            self._invoke_id,
            InterfaceClass.ASSOCIATION_LN,
            CURRENT_ASSOCIATION,
            METHOD_REPLY_TO_HLS,
            reply,
        )
        return Send(self._out(request))

    def _hls_reply(self, pending: _Pending, response: object) -> ClientEvent:
        security = self.security
        assert security is not None and pending.aare is not None
        if not isinstance(response, ActionResult):
            raise self._unexpected(response, "HLS-GMAC reply_to_HLS_authentication")
        if response.result != 0:
            raise AuthenticationFailed(
                f"{self.peer}: HLS-GMAC reply_to_HLS_authentication refused "
                f"(action result {response.result})"
            )
        answer = axdr.decode(response.data) if response.data is not None else None
        if not isinstance(answer, bytes):
            raise AuthenticationFailed("HLS-GMAC: the meter returned no f(CtoS)")
        security.check_server_reply(answer)
        return Associated(pending.aare)

    def _refused_by_exception(self, exc: ExceptionResult) -> DlmsError:
        """An AARQ answered by an ExceptionResponse alone (no AARE around it)."""
        text = (
            f"{self.peer}: association refused by an ExceptionResponse "
            f"(state-error {exc.state_error}, service-error {exc.service_error})"
        )
        if exc.service_error == ServiceErrorCode.INVOCATION_COUNTER_ERROR:
            return _counter_rejected(text, exc.invocation_counter)
        if exc.service_error == ServiceErrorCode.DECIPHERING_ERROR:
            return KeyRejected(f"{text}: the meter could not decipher the AARQ")
        return AssociationRefused(text)

    def _refused(self, response: AareInfo) -> DlmsError:
        text = (
            f"{self.peer}: association refused "
            f"(result {response.result}, diagnostic {response.diagnostic})"
        )
        exc = response.exception
        if exc is not None and exc.service_error == ServiceErrorCode.INVOCATION_COUNTER_ERROR:
            return _counter_rejected(text, exc.invocation_counter)
        if (
            response.initiate_error_choice == ServiceErrorChoice.APPLICATION_REFERENCE
            and response.initiate_error == ApplicationReferenceError.DECIPHERING_ERROR
        ):
            return KeyRejected(f"{text}: the meter could not decipher the InitiateRequest")
        if (
            self.security is not None
            and response.diagnostic == AcseDiagnostic.CALLING_AP_TITLE_NOT_RECOGNIZED
        ):
            return SystemTitleRejected(
                f"{text}: calling-AP-title {self.security.system_title.hex()} not recognized",
                response.diagnostic,
            )
        if response.diagnostic == AcseDiagnostic.AUTHENTICATION_FAILURE:
            return AuthenticationFailed(text, response.diagnostic)
        return AssociationRefused(text, response.diagnostic)

    def _get(self, pending: _Pending, response: object) -> ClientEvent:
        what = pending.what
        if isinstance(response, GetResult) and not pending.blocks:
            return Value(response.data)
        if isinstance(response, GetError):
            raise data_access_error(response.result, what)
        if not isinstance(response, GetBlock):
            raise self._unexpected(response, what, " in blocks" if pending.blocks else "")
        joined = self._block(pending, response)
        return Send(self._out(joined)) if isinstance(joined, bytes) else Value(joined.raw)

    def _list(self, pending: _Pending, response: object) -> ClientEvent:
        what = pending.what
        if isinstance(response, GetBlock):
            joined = self._block(pending, response)
            if isinstance(joined, bytes):
                return Send(self._out(joined))
            # The blocks of a GET-WITH-LIST response carry its list of Get-Data-Results
            # (Green Book): rebuild the plain with-list APDU to decode it.
            header = bytes((ApduTag.GET_RESPONSE, 0x03, 0xC0 | pending.invoke_id))
            response = decode_response(header + joined.raw)
        if isinstance(response, GetError):
            raise data_access_error(response.result, what)
        if not isinstance(response, GetListResult):
            raise self._unexpected(response, what)
        return Values(response.items)

    def _block(self, pending: _Pending, block: GetBlock) -> bytes | Value:
        """The GET-next to send, or the joined value after the last block."""
        what = pending.what
        if pending.blocks and block.block_number != pending.block_number + 1:
            raise ProtocolError(f"{what}: block {block.block_number} after {pending.block_number}")
        pending.blocks.append(block.raw)
        pending.block_number = block.block_number
        if block.last:
            return Value(b"".join(pending.blocks))
        if len(pending.blocks) > MAX_BLOCKS:
            raise ProtocolError(f"{what}: more than {MAX_BLOCKS} blocks")
        return build_get_next(pending.invoke_id, block.block_number)

    def _read_block(self, pending: _Pending, block: ReadBlock) -> ClientEvent:
        """SN block transfer: ask for the next block, or the joined value after the last."""
        what = pending.what
        if pending.blocks and block.block_number != pending.block_number + 1:
            raise ProtocolError(f"{what}: block {block.block_number} after {pending.block_number}")
        pending.blocks.append(block.raw)
        pending.block_number = block.block_number
        if block.last:
            joined = b"".join(pending.blocks)
            if pending.count == 1:
                return Values([joined])
            # several references: the blocks carry the whole SEQUENCE OF Read-Data-Result
            response = decode_response(bytes((ApduTag.READ_RESPONSE,)) + joined)
            if not isinstance(response, ReadResponse) or len(response.items) != pending.count:
                raise ProtocolError(f"{what}: the joined blocks are not {pending.count} results")
            return Values(response.items)
        if len(pending.blocks) > MAX_BLOCKS:
            raise ProtocolError(f"{what}: more than {MAX_BLOCKS} blocks")
        return Send(build_read_next(block.block_number))

    def _unexpected(self, response: object, what: str, where: str = "") -> DlmsError:
        if isinstance(response, ExceptionResult):
            if response.service_error == ServiceErrorCode.DECIPHERING_ERROR:
                return DecipheringRejected(f"{what}: the meter could not decipher the request")
            if response.service_error == ServiceErrorCode.INVOCATION_COUNTER_ERROR:
                return _counter_rejected(what, response.invocation_counter)
        if isinstance(response, ExceptionResult | ServiceErrorResult):
            return ServiceError(f"{what}: meter answered {response}")
        return ProtocolError(f"{what}: unexpected {type(response).__name__}{where}")


def _counter_rejected(text: str, expected: int | None) -> InvocationCounterRejected:
    if expected is None:
        return InvocationCounterRejected(f"{text}: invocation counter rejected", None)
    return InvocationCounterRejected(
        f"{text}: invocation counter rejected, meter expects at least {expected}", expected
    )
