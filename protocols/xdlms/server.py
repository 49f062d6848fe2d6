"""The server (meter) role of an xDLMS association, sans-IO: request bytes in, events out.

:meth:`ServerAssociation.receive` takes one APDU from the client. What the association
can answer by itself comes back as :class:`Reply` (the AARE, the RLRE, the next GET block,
HLS pass 4, and every ExceptionResponse of the Green Book); a GET, GET-WITH-LIST, SET or
ACTION for the application comes back as :class:`Serve`, and the application hands its
result to ``answer_get`` / ``answer_get_list`` / ``answer_set`` / ``answer_action``, which
split it into blocks and cipher it as the request was. A meter configured for short names
(``ServerSettings.short_names``) accepts only the SN context and serves ReadRequest and
WriteRequest instead (``answer_read`` / ``answer_write``). The meter's own decisions (which
client may use which mechanism, its password) come from a :class:`ClientPolicy`; its
invocation counters live in whatever object the application keeps between associations.
With general-block-transfer negotiated (``ServerSettings.gbt_window``, ``gbt_server``) a
request may come in GBT blocks and long answers go out in them, a window at a time: the
blocks after the first of a window wait in ``queued`` (``take_queued``).
No clock, no sockets; the HLS challenge comes from an injected ``random_bytes``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeAlias

from protocols import axdr, security
from protocols.enums import (
    AcseDiagnostic,
    ApduTag,
    ApplicationReferenceError,
    Conformance,
    DataAccessResult,
    InitiateError,
    InterfaceClass,
    Mechanism,
    ServiceErrorChoice,
    ServiceErrorCode,
    StateError,
)
from protocols.errors import DecodeError, SecurityError
from protocols.xdlms.acse import (
    AUTHENTICATION_MECHANISMS,
    AarqInfo,
    Authentication,
    build_aare,
    build_rlre,
)
from protocols.xdlms.client import CURRENT_ASSOCIATION, METHOD_REPLY_TO_HLS
from protocols.xdlms.codec import decode_request
from protocols.xdlms.conformance import allowed, supported_variant
from protocols.xdlms.exception import build_exception_response
from protocols.xdlms.gbt import GBT_TAG, Complete, Wait
from protocols.xdlms.gbt_server import GbtServing
from protocols.xdlms.get import (
    GetListRequest,
    GetNextRequest,
    GetRequest,
    build_get_list_response,
    build_get_response,
    build_get_response_block,
    build_get_response_block_error,
    build_get_response_error,
)
from protocols.xdlms.initiate import build_initiate_response, decode_initiate
from protocols.xdlms.set_action import (
    ActionRequest,
    SetRequest,
    build_action_response,
    build_set_response,
)
from protocols.xdlms.sn import ReadNextRequest, ReadRequest, WriteRequest
from protocols.xdlms.sn_server import LongValue, ShortNameServing

#: The smallest client max PDU size accepted (Green Book minimum useful size).
MIN_CLIENT_PDU = 12
_SERVICE_TAGS = (ApduTag.GET_REQUEST, ApduTag.SET_REQUEST, ApduTag.ACTION_REQUEST)
_SN_TAGS = (ApduTag.READ_REQUEST, ApduTag.WRITE_REQUEST)
_MECHANISM_NAMES: dict[int, Authentication] = {
    number: name for name, number in AUTHENTICATION_MECHANISMS.items()
}


class ClientPolicy(Protocol):
    """The meter's say in an association: who may use which mechanism, and its secrets."""

    def refuse(self, mechanism: int, ciphered: bool) -> int | None:
        """An ACSE diagnostic refusing ``mechanism`` for this client, or None to go on."""

    def refuse_secret(self, mechanism: int, secret: bytes | None) -> int | None:
        """An ACSE diagnostic when an LLS password is wrong, or None."""


class InvocationCounters(Protocol):
    """The meter's counters, kept across associations by the application."""

    client_invocation_counter: int
    server_invocation_counter: int


@dataclass(slots=True, frozen=True)
class ServerSettings:
    """What the meter offers: conformance, PDU size, and its security material."""

    conformance: int
    max_pdu_size: int
    system_title: bytes | None = None
    keys: security.SecurityKeys | None = None
    client_system_title: bytes = security.DEFAULT_CLIENT_SYSTEM_TITLE
    #: Refuse unciphered associations, except the public client's without authentication.
    require_security: bool = False
    short_names: bool = False
    #: False: the AARE leaves out the responding-AP-title, as some meters do; the client must
    #: know the meter's system title from elsewhere (its key store).
    announce_system_title: bool = True
    #: GBT blocks the meter receives at once (its window in every GBT APDU it sends).
    gbt_window: int = 1


@dataclass(slots=True, frozen=True)
class Reply:
    """The association answered by itself; None means the meter stays silent."""

    apdu: bytes | None


@dataclass(slots=True, frozen=True)
class Serve:
    """A request for the application; ``confirmed`` is false for an unconfirmed SET/ACTION."""

    request: GetRequest | GetListRequest | SetRequest | ActionRequest | ReadRequest | WriteRequest
    confirmed: bool


ServerEvent: TypeAlias = Reply | Serve


@dataclass(slots=True, frozen=True)
class _Cipher:
    """How the request in service arrived ciphered, so the answer goes back the same way."""

    sc: int
    general: bool


def _exception(state: StateError, service: ServiceErrorCode, counter: int | None = None) -> Reply:
    return Reply(build_exception_response(state, service, counter))


class ServerAssociation(ShortNameServing, GbtServing):
    """One association's state machine on the meter side."""

    def __init__(
        self,
        settings: ServerSettings,
        policy: ClientPolicy,
        counters: Callable[[], InvocationCounters],
        random_bytes: Callable[[int], bytes],
    ) -> None:
        self.settings = settings
        self.policy = policy
        self._counters = counters
        self._random = random_bytes
        self.associated = False
        self.released = False
        self.mechanism = Mechanism.NONE.value
        self.conformance = 0
        self.client_max_pdu = settings.max_pdu_size
        self.ciphered = False
        self.hls_pending = False
        self.client_challenge: bytes | None = None
        self.server_challenge: bytes | None = None
        self._long: LongValue | None = None
        self._cipher: _Cipher | None = None
        self._init_gbt(settings.gbt_window)

    # ------------------------------------------------------------------ entry point

    def receive(self, data: bytes) -> ServerEvent:
        """Take one APDU from the client (a GBT block, or any request on its own)."""
        self.queued.clear()
        if data[:1] == bytes((GBT_TAG,)):
            return self._gbt_block(data)
        self._reset_gbt()
        return self._receive_apdu(data)

    def _gbt_block(self, data: bytes) -> ServerEvent:
        """One GBT APDU: the client's request coming in blocks, or its acknowledgement of ours."""
        if not self.associated or not self.gbt:
            return _exception(
                StateError.SERVICE_NOT_ALLOWED, ServiceErrorCode.SERVICE_NOT_SUPPORTED
            )
        step = self._gbt_step(data)
        if step is None:
            return _exception(StateError.SERVICE_UNKNOWN, ServiceErrorCode.OTHER_REASON)
        if isinstance(step, Wait):
            return Reply(None)
        if not isinstance(step, Complete):
            self.queued.extend(step.apdus[1:])
            return Reply(step.apdus[0])
        self._assembled = True
        try:
            event = self._receive_apdu(step.apdu)
        finally:
            self._assembled = False
        return Reply(self._gbt_out(event.apdu)) if isinstance(event, Reply) else event

    def _receive_apdu(self, data: bytes) -> ServerEvent:
        if not data:
            return _exception(StateError.SERVICE_UNKNOWN, ServiceErrorCode.OTHER_REASON)
        tag = data[0]
        if tag == ApduTag.AARQ:
            return Reply(self._aarq(data))
        if tag == ApduTag.RLRQ:
            return self._rlrq(data)
        if security.is_ciphered(data):
            return self._ciphered_request(data)
        if self.ciphered and tag in _SERVICE_TAGS:
            return _exception(
                StateError.SERVICE_NOT_ALLOWED, ServiceErrorCode.OPERATION_NOT_POSSIBLE
            )
        self._cipher = None
        return self._service(data)

    def drop(self) -> None:
        """Forget the association (the meter lost power or the link went down)."""
        self.associated = False
        self._long = None
        self.ciphered = False
        self.hls_pending = False
        self.client_challenge = self.server_challenge = None
        self._cipher = None
        self._reset_gbt()

    @property
    def authentication(self) -> Authentication:
        return _MECHANISM_NAMES.get(self.mechanism, "none")

    # ------------------------------------------------------------------ services

    def _service(self, data: bytes) -> ServerEvent:
        """One plain GET/SET/ACTION, or Read/Write on an SN association (deciphered already)."""
        if data[0] not in (_SN_TAGS if self.settings.short_names else _SERVICE_TAGS):
            return _exception(StateError.SERVICE_UNKNOWN, ServiceErrorCode.SERVICE_NOT_SUPPORTED)
        if not self.associated:
            return _exception(
                StateError.SERVICE_NOT_ALLOWED, ServiceErrorCode.OPERATION_NOT_POSSIBLE
            )
        if len(data) > self.settings.max_pdu_size and not self._assembled:
            return _exception(StateError.SERVICE_NOT_ALLOWED, ServiceErrorCode.PDU_TOO_LONG)
        if not supported_variant(data):
            return _exception(StateError.SERVICE_UNKNOWN, ServiceErrorCode.SERVICE_NOT_SUPPORTED)
        try:
            request = decode_request(data)
        except DecodeError:
            return _exception(StateError.SERVICE_UNKNOWN, ServiceErrorCode.OTHER_REASON)
        if not allowed(request, self.conformance):
            return _exception(
                StateError.SERVICE_NOT_ALLOWED, ServiceErrorCode.SERVICE_NOT_SUPPORTED
            )
        if self.hls_pending:
            if isinstance(request, ActionRequest) and _is_reply_to_hls(request):
                return Reply(self._seal(self._reply_to_hls(request)))
            return _exception(
                StateError.SERVICE_NOT_ALLOWED, ServiceErrorCode.OPERATION_NOT_POSSIBLE
            )
        if isinstance(request, GetNextRequest):
            return Reply(self._seal(self._get_next(request)))
        if isinstance(request, ReadNextRequest):
            return Reply(self._read_next(request))
        assert not isinstance(request, AarqInfo)
        self._long = None
        if isinstance(request, ReadRequest | WriteRequest):
            return Serve(request, True)  # SN services carry no invoke id, all confirmed
        if isinstance(request, GetRequest | GetListRequest | SetRequest | ActionRequest):
            return Serve(request, bool(data[2] & 0x40))
        return _exception(StateError.SERVICE_UNKNOWN, ServiceErrorCode.SERVICE_NOT_SUPPORTED)

    def answer_get(self, request: GetRequest, value: bytes | int) -> bytes:
        """The GET response for an encoded value or a Data-Access-Result (blocks if big)."""
        if isinstance(value, int):
            return self._out(build_get_response_error(request.invoke_id, value))
        if 4 + len(value) <= self.client_max_pdu or self.gbt:
            return self._out(build_get_response(request.invoke_id, value))
        return self._seal(self._start_long(request.invoke_id, value))

    def answer_get_list(self, request: GetListRequest, items: list[bytes | int]) -> bytes:
        response = build_get_list_response(request.invoke_id, items)
        if len(response) <= self.client_max_pdu or self.gbt:
            return self._out(response)
        # Raw data of a with-list block transfer: the SEQUENCE OF Get-Data-Result.
        return self._seal(self._start_long(request.invoke_id, response[3:]))

    def answer_set(self, request: SetRequest, result: int, confirmed: bool = True) -> bytes | None:
        return self._out(build_set_response(request.invoke_id, result)) if confirmed else None

    def answer_action(
        self, request: ActionRequest, result: int, data: bytes | None = None, confirmed: bool = True
    ) -> bytes | None:
        if not confirmed:
            return None
        return self._out(build_action_response(request.invoke_id, result, data))

    def _out(self, response: bytes) -> bytes:
        """An application's answer, ciphered as its request was, in GBT when that applies."""
        out = self._gbt_out(self._seal(response))
        assert out is not None
        return out

    # ------------------------------------------------------------------ GET blocks

    def _start_long(self, invoke_id: int, raw: bytes) -> bytes:
        if not self.conformance & Conformance.BLOCK_TRANSFER_WITH_GET:
            return build_get_response_error(invoke_id, DataAccessResult.OTHER_REASON)
        # tag, type, invoke id, last, block number (4), raw-data choice: 9 bytes
        self._long = LongValue(invoke_id, raw, 9)
        return self._next_block()

    def _next_block(self) -> bytes:
        long = self._long
        assert long is not None
        chunk, last = long.take(self.client_max_pdu)
        if last:
            self._long = None
        return build_get_response_block(long.invoke_id, long.block_number, last, chunk)

    def _get_next(self, request: GetNextRequest) -> bytes:
        long = self._long
        if long is None:
            return build_get_response_block_error(
                request.invoke_id, request.block_number, DataAccessResult.NO_LONG_GET_IN_PROGRESS
            )
        if request.block_number != long.block_number:
            self._long = None
            return build_get_response_block_error(
                request.invoke_id, request.block_number, DataAccessResult.DATA_BLOCK_NUMBER_INVALID
            )
        return self._next_block()

    # ------------------------------------------------------------------ association

    def _reject(
        self,
        diagnostic: int,
        initiate_error: int | None = None,
        initiate_error_choice: int = ServiceErrorChoice.INITIATE,
    ) -> bytes:
        self.drop()
        return build_aare(
            accepted=False,
            diagnostic=diagnostic,
            conformance=self.settings.conformance,
            max_pdu_size=self.settings.max_pdu_size,
            initiate_error=initiate_error,
            initiate_error_choice=initiate_error_choice,
            short_names=self.settings.short_names,
        )

    def _aarq(self, data: bytes) -> bytes:
        try:
            request = decode_request(data)
        except DecodeError:
            return self._reject(AcseDiagnostic.NO_REASON_GIVEN)
        if not isinstance(request, AarqInfo):
            return self._reject(AcseDiagnostic.NO_REASON_GIVEN)
        if request.short_names != self.settings.short_names:
            return self._reject(AcseDiagnostic.APPLICATION_CONTEXT_NAME_NOT_SUPPORTED)
        if request.ciphered or request.ciphered_initiate is not None:
            return self._ciphered_aarq(request)
        mech = request.mechanism
        if self.settings.require_security and (
            mech != Mechanism.NONE or self.policy.refuse(mech, False) is not None
        ):
            # Only the public client (no authentication) may associate unciphered with a
            # secured meter: it reads the frame counter a head-end recovers its counter from.
            return self._reject(AcseDiagnostic.APPLICATION_CONTEXT_NAME_NOT_SUPPORTED)
        if mech not in (Mechanism.NONE, Mechanism.LLS):
            return self._reject(AcseDiagnostic.AUTHENTICATION_MECHANISM_NAME_NOT_RECOGNISED)
        refused = self.policy.refuse(mech, False)
        if refused is None and mech == Mechanism.LLS:
            refused = self.policy.refuse_secret(mech, request.calling_auth_value)
        if refused is not None:
            return self._reject(refused)
        refusal = self._initiate_refusal(
            request.dlms_version, request.client_max_pdu_size, request.proposed_conformance
        )
        if refusal is not None:
            return refusal
        self._accept(mech, request.proposed_conformance, request.client_max_pdu_size)
        return build_aare(
            accepted=True,
            conformance=self.conformance,
            max_pdu_size=self.settings.max_pdu_size,
            authentication=self.authentication,
            short_names=self.settings.short_names,
        )

    def _ciphered_aarq(self, request: AarqInfo) -> bytes:
        """AARQ in the LN-with-ciphering context (glo-InitiateRequest), HLS-GMAC or not."""
        settings = self.settings
        keys = settings.keys
        if not request.ciphered or request.ciphered_initiate is None or keys is None:
            return self._reject(AcseDiagnostic.APPLICATION_CONTEXT_NAME_NOT_SUPPORTED)
        mech = request.mechanism
        if mech not in (Mechanism.NONE, Mechanism.LLS, Mechanism.HLS_GMAC):
            return self._reject(AcseDiagnostic.AUTHENTICATION_MECHANISM_NAME_NOT_RECOGNISED)
        refused = self.policy.refuse(mech, True)
        if refused is not None:
            return self._reject(refused)
        title = request.system_title
        if title is None or title != settings.client_system_title:
            return self._reject(AcseDiagnostic.CALLING_AP_TITLE_NOT_RECOGNIZED)
        try:
            header = security.decipher_apdu(request.ciphered_initiate)
        except DecodeError:
            return self._reject(AcseDiagnostic.NO_REASON_GIVEN)
        counters = self._counters()
        if header.invocation_counter <= counters.client_invocation_counter:
            self.drop()
            return build_aare(
                accepted=False,
                diagnostic=AcseDiagnostic.NO_REASON_GIVEN,
                conformance=settings.conformance,
                max_pdu_size=settings.max_pdu_size,
                ciphered=True,
                user_information=build_exception_response(
                    StateError.SERVICE_NOT_ALLOWED,
                    ServiceErrorCode.INVOCATION_COUNTER_ERROR,
                    counters.client_invocation_counter + 1,
                ),
            )
        try:
            plain = header.open(title, keys)
            initiate = decode_initiate(plain)
        except (SecurityError, DecodeError):
            return self._reject(
                AcseDiagnostic.NO_REASON_GIVEN,
                initiate_error=ApplicationReferenceError.DECIPHERING_ERROR,
                initiate_error_choice=ServiceErrorChoice.APPLICATION_REFERENCE,
            )
        counters.client_invocation_counter = header.invocation_counter
        if plain[0] != ApduTag.INITIATE_REQUEST:
            return self._reject(AcseDiagnostic.NO_REASON_GIVEN)
        if mech == Mechanism.LLS:
            refused = self.policy.refuse_secret(mech, request.calling_auth_value)
            if refused is not None:
                return self._reject(refused)
        challenge = request.calling_auth_value
        if mech == Mechanism.HLS_GMAC and (challenge is None or not 8 <= len(challenge) <= 64):
            return self._reject(AcseDiagnostic.AUTHENTICATION_REQUIRED)
        refusal = self._initiate_refusal(
            initiate.dlms_version, initiate.max_pdu_size, initiate.conformance
        )
        if refusal is not None:
            return refusal
        self._accept(mech, initiate.conformance, initiate.max_pdu_size)
        self.ciphered = True
        if mech == Mechanism.HLS_GMAC:
            self.hls_pending = True
            self.client_challenge = challenge
            self.server_challenge = self._random(16)
        response = security.cipher_apdu(
            build_initiate_response(
                conformance=self.conformance, max_pdu_size=settings.max_pdu_size
            ),
            sc=header.sc,
            system_title=self._system_title(),
            invocation_counter=self._server_counter(),
            keys=keys,
        )
        return build_aare(
            accepted=True,
            conformance=self.conformance,
            max_pdu_size=settings.max_pdu_size,
            authentication=self.authentication,
            system_title=self._system_title() if settings.announce_system_title else None,
            challenge=self.server_challenge,
            ciphered=True,
            user_information=response,
        )

    def _initiate_refusal(self, version: int, max_pdu: int, proposed: int) -> bytes | None:
        """The AARE refusing an InitiateRequest, or None when it is acceptable."""
        if version < 6:
            return self._reject(AcseDiagnostic.NO_REASON_GIVEN, InitiateError.DLMS_VERSION_TOO_LOW)
        if max_pdu and max_pdu < MIN_CLIENT_PDU:
            return self._reject(AcseDiagnostic.NO_REASON_GIVEN, InitiateError.PDU_SIZE_TOO_SHORT)
        services = Conformance.GET | Conformance.SET | Conformance.ACTION
        if self.settings.short_names:
            services = Conformance.READ | Conformance.WRITE
        if not proposed & self.settings.conformance & services:
            return self._reject(
                AcseDiagnostic.NO_REASON_GIVEN, InitiateError.INCOMPATIBLE_CONFORMANCE
            )
        return None

    def _accept(self, mech: int, proposed: int, max_pdu: int) -> None:
        self.associated = True
        self.released = False
        self.mechanism = mech
        self.conformance = proposed & self.settings.conformance
        # 0 means "no limit" in the InitiateRequest; cap at what the length fields allow.
        self.client_max_pdu = max_pdu or 0xFFFF
        self._long = None

    def _system_title(self) -> bytes:
        title = self.settings.system_title
        if title is None:
            raise ValueError("a ciphered association needs the meter's system title")
        return title

    def _server_counter(self) -> int:
        counters = self._counters()
        value = counters.server_invocation_counter
        counters.server_invocation_counter = value + 1
        return value

    def _ciphered_request(self, data: bytes) -> ServerEvent:
        """Decipher a glo-/general-glo request; its answer is ciphered in kind by ``_seal``."""
        settings = self.settings
        keys = settings.keys
        if not self.associated or not self.ciphered or keys is None:
            return _exception(
                StateError.SERVICE_NOT_ALLOWED, ServiceErrorCode.OPERATION_NOT_POSSIBLE
            )
        try:
            header = security.decipher_apdu(data)
        except DecodeError:
            return _exception(StateError.SERVICE_UNKNOWN, ServiceErrorCode.OTHER_REASON)
        if header.dedicated or header.expected_tag not in (None, *_SERVICE_TAGS):
            return _exception(StateError.SERVICE_UNKNOWN, ServiceErrorCode.SERVICE_NOT_SUPPORTED)
        title = header.system_title or settings.client_system_title
        if title != settings.client_system_title:
            return _exception(StateError.SERVICE_NOT_ALLOWED, ServiceErrorCode.DECIPHERING_ERROR)
        counters = self._counters()
        if header.invocation_counter <= counters.client_invocation_counter:
            return _exception(
                StateError.SERVICE_NOT_ALLOWED,
                ServiceErrorCode.INVOCATION_COUNTER_ERROR,
                counters.client_invocation_counter + 1,
            )
        try:
            plain = header.open(title, keys)
        except (SecurityError, DecodeError):
            return _exception(StateError.SERVICE_NOT_ALLOWED, ServiceErrorCode.DECIPHERING_ERROR)
        counters.client_invocation_counter = header.invocation_counter
        self._cipher = _Cipher(header.sc, header.system_title is not None)
        return self._service(plain)

    def _seal(self, response: bytes) -> bytes:
        """Cipher an answer as its request was (ExceptionResponses always go plain)."""
        cipher, keys = self._cipher, self.settings.keys
        if cipher is None or keys is None or response[0] == ApduTag.EXCEPTION_RESPONSE:
            return response
        return security.cipher_apdu(
            response,
            sc=cipher.sc,
            system_title=self._system_title(),
            invocation_counter=self._server_counter(),
            keys=keys,
            general=cipher.general,
        )

    def _reply_to_hls(self, request: ActionRequest) -> bytes:
        """HLS pass 3 checked, pass 4 answered: f(StoC) in, f(CtoS) out."""
        keys = self.settings.keys
        assert keys is not None
        assert self.server_challenge is not None and self.client_challenge is not None
        try:
            reply = axdr.decode(request.data) if request.data is not None else None
        except DecodeError:
            reply = None
        ok = (
            isinstance(reply, bytes)
            and security.verify_hls_gmac(
                reply, self.settings.client_system_title, keys, self.server_challenge
            )
            is not None
        )
        if not ok:
            return build_action_response(request.invoke_id, DataAccessResult.READ_WRITE_DENIED)
        self.hls_pending = False
        answer = security.hls_gmac(
            self._system_title(), self._server_counter(), keys, self.client_challenge
        )
        return build_action_response(
            request.invoke_id, DataAccessResult.SUCCESS, axdr.encode(axdr.octets(answer))
        )

    def _rlrq(self, data: bytes) -> Reply:
        try:
            decode_request(data)
        except DecodeError:
            return _exception(StateError.SERVICE_UNKNOWN, ServiceErrorCode.OTHER_REASON)
        self.drop()
        self.released = True
        return Reply(build_rlre(0))


def _is_reply_to_hls(request: ActionRequest) -> bool:
    return (
        request.class_id == InterfaceClass.ASSOCIATION_LN
        and request.obis == CURRENT_ASSOCIATION
        and request.method == METHOD_REPLY_TO_HLS
    )
