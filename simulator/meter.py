"""Sans-IO simulated meter: request APDU bytes in, response APDU bytes out.

No clock, no sockets: the IO layer passes the true unix time with every APDU. One
:class:`SimulatedMeter` per meter holds the tiny mutable state (clock correction, relay) and
hands out one :class:`MeterSession` per association (per TCP connection or HDLC link).

Associations (LN referencing only):

* public client (SAP 16): authentication "none"; may read most objects, write nothing, invoke
  nothing;
* management client (SAP 1): LLS with the meter's password; may also SET the clock and run the
  clock and disconnect-control methods.

When the IO layer does not know the client SAP the mechanism decides (none → public, LLS →
management). Wrong password → AARE rejected with authentication-failure; LLS missing for the
management SAP → authentication-required; HLS mechanisms other than 5 (GMAC) →
mechanism-name-not-recognised.

Security (suite 0, keys from :func:`simulator.model.keys`): the LN-with-ciphering context
carries a glo-InitiateRequest; every GET/SET/ACTION is then a glo- APDU (or
general-glo-ciphering) answered in kind with the meter's system title and counter. HLS-GMAC
(mechanism 5) leaves the association pending until reply_to_HLS_authentication (ACTION
0.0.40.0.0.255 method 1) proves the client's keys, and answers with f(CtoS). Rejections, as
in the Green Book: client system title not the one the meter knows → AARE
calling-AP-title-not-recognized; glo-InitiateRequest that does not decipher (wrong keys) →
AARE with ConfirmedServiceError initiateError/application-reference deciphering-error;
replayed or lower client counter → ExceptionResponse invocation-counter-error with the
counter expected (in the AARE's user-information during association); a ciphered request
whose tag does not verify → ExceptionResponse deciphering-error; an unciphered request on a
ciphered association → ExceptionResponse service-not-allowed. A meter made with
``require_security`` refuses unciphered AARQs (application-context-name-not-supported).

Services: GET normal / with-list / next (block transfer whenever the response would exceed the
client's max PDU size), SET normal, ACTION normal, RLRQ. Anything else, anything before an
association, and anything undecodable gets an ExceptionResponse; a meter in a simulated outage
does not answer at all (``None``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from protocols import apdu, axdr, security
from protocols.errors import DataAccessError, DecodeError, SecurityError, data_access_error
from simulator import model, objects

PUBLIC_CLIENT = 16
MANAGEMENT_CLIENT = 1

#: What the meter supports (dlms-cosem bit numbering, LSB = action): block-transfer-with-get,
#: multiple-references, get, set, selective-access, action.
SERVER_CONFORMANCE = (1 << 12) | (1 << 9) | (1 << 4) | (1 << 3) | (1 << 2) | (1 << 0)
_BIT_BLOCK_GET = 1 << 12
_BIT_MULTIPLE = 1 << 9
_BIT_GET = 1 << 4
_BIT_SET = 1 << 3
_BIT_SELECTIVE = 1 << 2
_BIT_ACTION = 1 << 0
#: The meter's own max receive PDU size, announced in the AARE.
SERVER_MAX_PDU = 1024
#: The smallest client max PDU size accepted (Green Book minimum useful size).
MIN_CLIENT_PDU = 12

# ExceptionResponse codes (Green Book): state-error, service-error.
STATE_SERVICE_NOT_ALLOWED = 1
STATE_SERVICE_UNKNOWN = 2
SERVICE_OPERATION_NOT_POSSIBLE = 1
SERVICE_NOT_SUPPORTED = 2
SERVICE_OTHER_REASON = 3
SERVICE_PDU_TOO_LONG = 4
SERVICE_DECIPHERING_ERROR = 5
SERVICE_INVOCATION_COUNTER_ERROR = 6
#: ServiceError application-reference (CHOICE 0) deciphering-error (6), in initiateError.
_CHOICE_APPLICATION_REFERENCE = 0
_APPLICATION_REFERENCE_DECIPHERING_ERROR = 6

# Data-Access-Results of the block transfer.
LONG_GET_ABORTED = 15
NO_LONG_GET_IN_PROGRESS = 16
DATA_BLOCK_NUMBER_INVALID = 19

_MECH_NONE = 0
_MECH_LLS = 1
_MECH_GMAC = 5
_REPLY_TO_HLS = 1


class SimulatedMeter:
    """One meter of the fleet: identity and the little state that SET/ACTION change.

    ``require_security``: refuse unciphered associations; ``client_system_title``: the
    head-end system title the meter knows (ciphered AARQs from any other are refused).
    """

    __slots__ = ("_state", "client_system_title", "meter_id", "require_security", "seed")

    def __init__(
        self,
        meter_id: int,
        seed: int,
        *,
        require_security: bool = False,
        client_system_title: bytes = security.DEFAULT_CLIENT_SYSTEM_TITLE,
    ) -> None:
        self.meter_id = meter_id
        self.seed = seed
        self.require_security = require_security
        self.client_system_title = client_system_title
        self._state: objects.MeterState | None = None

    @property
    def keys(self) -> model.MeterKeys:
        return model.keys(self.meter_id, self.seed)

    @property
    def security_keys(self) -> security.SecurityKeys:
        k = self.keys
        return security.SecurityKeys(k.encryption_key, k.authentication_key)

    @property
    def spec(self) -> model.MeterSpec:
        return model.meter_spec(self.meter_id, self.seed)

    @property
    def state(self) -> objects.MeterState:
        """Created on first change so an idle fleet of 200,000 meters stays small."""
        if self._state is None:
            self._state = objects.MeterState()
        return self._state

    def current_state(self) -> objects.MeterState:
        """The state if it was ever changed, else a fresh default (not stored)."""
        return self._state if self._state is not None else objects.MeterState()

    @property
    def clock_offset(self) -> float:
        return 0.0 if self._state is None else self._state.clock_offset

    def meter_time(self, now: float) -> float:
        """The meter's clock at true time ``now``: model drift plus any SET/ACTION correction."""
        return model.meter_clock(self.spec, now) + self.clock_offset

    def online(self, now: float) -> bool:
        """False while the meter is in a simulated outage (it answers nothing then)."""
        return model.powered(self.spec, self.meter_time(now))

    def new_session(self, client_sap: int | None = None) -> MeterSession:
        return MeterSession(self, client_sap)


@dataclass(slots=True)
class _LongGet:
    invoke_id: int
    raw: bytes
    offset: int
    block_number: int


class MeterSession:
    """One association's state machine. ``handle`` answers one request APDU."""

    __slots__ = (
        "_long",
        "associated",
        "ciphered",
        "client_challenge",
        "client_max_pdu",
        "client_sap",
        "conformance",
        "hls_pending",
        "management",
        "mechanism",
        "meter",
        "released",
        "server_challenge",
    )

    def __init__(self, meter: SimulatedMeter, client_sap: int | None = None) -> None:
        self.meter = meter
        self.client_sap = client_sap
        self.associated = False
        self.released = False
        self.management = False
        self.mechanism = _MECH_NONE
        self.conformance = 0
        self.client_max_pdu = SERVER_MAX_PDU
        self._long: _LongGet | None = None
        self.ciphered = False
        self.hls_pending = False
        self.client_challenge: bytes | None = None
        self.server_challenge: bytes | None = None

    # ------------------------------------------------------------------ entry point

    def handle(self, apdu_bytes: bytes, now: float) -> bytes | None:
        """Answer one APDU at true time ``now``; None when the meter stays silent."""
        meter = self.meter
        if not meter.online(now):
            self._drop()
            return None
        if not apdu_bytes:
            return apdu.build_exception_response(STATE_SERVICE_UNKNOWN, SERVICE_OTHER_REASON)
        tag = apdu_bytes[0]
        if tag == apdu.TAG_AARQ:
            return self._aarq(apdu_bytes)
        if tag == apdu.TAG_RLRQ:
            return self._rlrq(apdu_bytes)
        if security.is_ciphered(apdu_bytes):
            return self._ciphered_request(apdu_bytes, now)
        if self.ciphered and tag in (
            apdu.TAG_GET_REQUEST,
            apdu.TAG_SET_REQUEST,
            apdu.TAG_ACTION_REQUEST,
        ):
            return apdu.build_exception_response(
                STATE_SERVICE_NOT_ALLOWED, SERVICE_OPERATION_NOT_POSSIBLE
            )
        return self._service(apdu_bytes, now)

    def _service(self, apdu_bytes: bytes, now: float) -> bytes | None:
        """Answer one plain GET/SET/ACTION (deciphered already on a ciphered association)."""
        tag = apdu_bytes[0]
        if tag not in (apdu.TAG_GET_REQUEST, apdu.TAG_SET_REQUEST, apdu.TAG_ACTION_REQUEST):
            return apdu.build_exception_response(STATE_SERVICE_UNKNOWN, SERVICE_NOT_SUPPORTED)
        if not self.associated:
            return apdu.build_exception_response(
                STATE_SERVICE_NOT_ALLOWED, SERVICE_OPERATION_NOT_POSSIBLE
            )
        if len(apdu_bytes) > SERVER_MAX_PDU:
            return apdu.build_exception_response(STATE_SERVICE_NOT_ALLOWED, SERVICE_PDU_TOO_LONG)
        if not _supported_variant(apdu_bytes):
            return apdu.build_exception_response(STATE_SERVICE_UNKNOWN, SERVICE_NOT_SUPPORTED)
        try:
            request = apdu.decode_request(apdu_bytes)
        except DecodeError:
            return apdu.build_exception_response(STATE_SERVICE_UNKNOWN, SERVICE_OTHER_REASON)
        if not self._negotiated(request):
            return apdu.build_exception_response(STATE_SERVICE_NOT_ALLOWED, SERVICE_NOT_SUPPORTED)
        confirmed = bool(apdu_bytes[2] & 0x40)
        if self.hls_pending:
            if isinstance(request, apdu.ActionRequest) and _is_reply_to_hls(request):
                return self._reply_to_hls(request)
            return apdu.build_exception_response(
                STATE_SERVICE_NOT_ALLOWED, SERVICE_OPERATION_NOT_POSSIBLE
            )
        if isinstance(request, apdu.GetRequest):
            return self._get(request, now)
        if isinstance(request, apdu.GetNextRequest):
            return self._get_next(request)
        if isinstance(request, apdu.GetListRequest):
            return self._get_list(request, now)
        if isinstance(request, apdu.SetRequest):
            result = self._set(request, now)
            return apdu.build_set_response(request.invoke_id, result) if confirmed else None
        if isinstance(request, apdu.ActionRequest):
            result = self._action(request, now)
            return apdu.build_action_response(request.invoke_id, result) if confirmed else None
        return apdu.build_exception_response(STATE_SERVICE_UNKNOWN, SERVICE_NOT_SUPPORTED)

    # ------------------------------------------------------------------ association

    def _drop(self) -> None:
        self.associated = False
        self.management = False
        self._long = None
        self.ciphered = False
        self.hls_pending = False
        self.client_challenge = self.server_challenge = None

    def _reject(
        self, diagnostic: int, initiate_error: int | None = None, initiate_error_choice: int = 6
    ) -> bytes:
        self._drop()
        return apdu.build_aare(
            accepted=False,
            diagnostic=diagnostic,
            conformance=SERVER_CONFORMANCE,
            max_pdu_size=SERVER_MAX_PDU,
            initiate_error=initiate_error,
            initiate_error_choice=initiate_error_choice,
        )

    def _aarq(self, data: bytes) -> bytes:
        try:
            request = apdu.decode_request(data)
        except DecodeError:
            return self._reject(apdu.ACSE_DIAGNOSTIC_NO_REASON)
        if not isinstance(request, apdu.AarqInfo):
            return self._reject(apdu.ACSE_DIAGNOSTIC_NO_REASON)
        if request.ciphered or request.ciphered_initiate is not None:
            return self._ciphered_aarq(request)
        if self.meter.require_security:
            return self._reject(apdu.ACSE_DIAGNOSTIC_APPLICATION_CONTEXT_NOT_SUPPORTED)
        mech = request.mechanism
        sap = self.client_sap
        if mech not in (_MECH_NONE, _MECH_LLS):
            return self._reject(_DIAG_MECHANISM_NOT_RECOGNISED)
        if sap is not None and sap not in (PUBLIC_CLIENT, MANAGEMENT_CLIENT):
            return self._reject(_DIAG_CALLING_AP_TITLE_NOT_RECOGNISED)
        if mech == _MECH_NONE and sap == MANAGEMENT_CLIENT:
            return self._reject(apdu.ACSE_DIAGNOSTIC_AUTHENTICATION_REQUIRED)
        if mech == _MECH_LLS:
            if sap == PUBLIC_CLIENT:
                return self._reject(_DIAG_MECHANISM_NOT_RECOGNISED)
            if request.calling_auth_value != self.meter.spec.password:
                return self._reject(apdu.ACSE_DIAGNOSTIC_AUTHENTICATION_FAILURE)
        refused = self._initiate_refusal(
            request.dlms_version, request.client_max_pdu_size, request.proposed_conformance
        )
        if refused is not None:
            return refused
        self._accept(mech, request.proposed_conformance, request.client_max_pdu_size)
        return apdu.build_aare(
            accepted=True,
            conformance=self.conformance,
            max_pdu_size=SERVER_MAX_PDU,
            authentication="lls" if mech == _MECH_LLS else "none",
        )

    def _ciphered_aarq(self, request: apdu.AarqInfo) -> bytes:
        """AARQ in the LN-with-ciphering context (glo-InitiateRequest), HLS-GMAC or not."""
        meter = self.meter
        if not request.ciphered or request.ciphered_initiate is None:
            return self._reject(apdu.ACSE_DIAGNOSTIC_APPLICATION_CONTEXT_NOT_SUPPORTED)
        mech, sap = request.mechanism, self.client_sap
        if mech not in (_MECH_NONE, _MECH_LLS, _MECH_GMAC):
            return self._reject(_DIAG_MECHANISM_NOT_RECOGNISED)
        if sap is not None and sap not in (PUBLIC_CLIENT, MANAGEMENT_CLIENT):
            return self._reject(_DIAG_CALLING_AP_TITLE_NOT_RECOGNISED)
        if mech != _MECH_NONE and sap == PUBLIC_CLIENT:
            return self._reject(_DIAG_MECHANISM_NOT_RECOGNISED)
        if mech == _MECH_NONE and sap == MANAGEMENT_CLIENT:
            return self._reject(apdu.ACSE_DIAGNOSTIC_AUTHENTICATION_REQUIRED)
        title = request.system_title
        if title is None or title != meter.client_system_title:
            return self._reject(_DIAG_CALLING_AP_TITLE_NOT_RECOGNISED)
        try:
            header = security.decipher_apdu(request.ciphered_initiate)
        except DecodeError:
            return self._reject(apdu.ACSE_DIAGNOSTIC_NO_REASON)
        state = meter.state
        if header.invocation_counter <= state.client_invocation_counter:
            self._drop()
            return apdu.build_aare(
                accepted=False,
                diagnostic=apdu.ACSE_DIAGNOSTIC_NO_REASON,
                conformance=SERVER_CONFORMANCE,
                max_pdu_size=SERVER_MAX_PDU,
                ciphered=True,
                user_information=apdu.build_exception_response(
                    STATE_SERVICE_NOT_ALLOWED,
                    SERVICE_INVOCATION_COUNTER_ERROR,
                    state.client_invocation_counter + 1,
                ),
            )
        try:
            plain = header.open(title, meter.security_keys)
            initiate = apdu.decode_initiate(plain)
        except (SecurityError, DecodeError):
            return self._reject(
                apdu.ACSE_DIAGNOSTIC_NO_REASON,
                initiate_error=_APPLICATION_REFERENCE_DECIPHERING_ERROR,
                initiate_error_choice=_CHOICE_APPLICATION_REFERENCE,
            )
        state.client_invocation_counter = header.invocation_counter
        if plain[0] != 0x01:
            return self._reject(apdu.ACSE_DIAGNOSTIC_NO_REASON)
        if mech == _MECH_LLS and request.calling_auth_value != meter.spec.password:
            return self._reject(apdu.ACSE_DIAGNOSTIC_AUTHENTICATION_FAILURE)
        challenge = request.calling_auth_value
        if mech == _MECH_GMAC and (challenge is None or not 8 <= len(challenge) <= 64):
            return self._reject(apdu.ACSE_DIAGNOSTIC_AUTHENTICATION_REQUIRED)
        refused = self._initiate_refusal(
            initiate.dlms_version, initiate.max_pdu_size, initiate.conformance
        )
        if refused is not None:
            return refused
        self._accept(mech, initiate.conformance, initiate.max_pdu_size)
        self.ciphered = True
        keys = meter.keys
        if mech == _MECH_GMAC:
            self.hls_pending = True
            self.client_challenge = challenge
            self.server_challenge = os.urandom(16)
        response = security.cipher_apdu(
            apdu.build_initiate_response(conformance=self.conformance, max_pdu_size=SERVER_MAX_PDU),
            sc=header.sc,
            system_title=keys.system_title,
            invocation_counter=self._server_counter(),
            keys=meter.security_keys,
        )
        authentication: apdu.Authentication = (
            "hls-gmac" if mech == _MECH_GMAC else "lls" if mech == _MECH_LLS else "none"
        )
        return apdu.build_aare(
            accepted=True,
            conformance=self.conformance,
            max_pdu_size=SERVER_MAX_PDU,
            authentication=authentication,
            system_title=keys.system_title,
            challenge=self.server_challenge,
            ciphered=True,
            user_information=response,
        )

    def _initiate_refusal(self, version: int, max_pdu: int, proposed: int) -> bytes | None:
        """The AARE refusing an InitiateRequest, or None when it is acceptable."""
        if version < 6:
            return self._reject(apdu.ACSE_DIAGNOSTIC_NO_REASON, initiate_error=1)
        if max_pdu and max_pdu < MIN_CLIENT_PDU:
            return self._reject(apdu.ACSE_DIAGNOSTIC_NO_REASON, initiate_error=3)
        if not proposed & SERVER_CONFORMANCE & (_BIT_GET | _BIT_SET | _BIT_ACTION):
            return self._reject(apdu.ACSE_DIAGNOSTIC_NO_REASON, initiate_error=2)
        return None

    def _accept(self, mech: int, proposed: int, max_pdu: int) -> None:
        self.associated = True
        self.released = False
        self.management = mech in (_MECH_LLS, _MECH_GMAC)
        self.mechanism = mech
        self.conformance = proposed & SERVER_CONFORMANCE
        # 0 means "no limit" in the InitiateRequest; cap at what the length fields allow.
        self.client_max_pdu = max_pdu or 0xFFFF
        self._long = None

    def _server_counter(self) -> int:
        state = self.meter.state
        value = state.server_invocation_counter
        state.server_invocation_counter = value + 1
        return value

    def _ciphered_request(self, data: bytes, now: float) -> bytes | None:
        """Decipher a glo-/general-glo request, answer it, cipher the answer in kind."""
        if not self.associated or not self.ciphered:
            return apdu.build_exception_response(
                STATE_SERVICE_NOT_ALLOWED, SERVICE_OPERATION_NOT_POSSIBLE
            )
        meter = self.meter
        try:
            header = security.decipher_apdu(data)
        except DecodeError:
            return apdu.build_exception_response(STATE_SERVICE_UNKNOWN, SERVICE_OTHER_REASON)
        if header.dedicated or header.expected_tag not in (
            None,
            apdu.TAG_GET_REQUEST,
            apdu.TAG_SET_REQUEST,
            apdu.TAG_ACTION_REQUEST,
        ):
            return apdu.build_exception_response(STATE_SERVICE_UNKNOWN, SERVICE_NOT_SUPPORTED)
        title = header.system_title or meter.client_system_title
        if title != meter.client_system_title:
            return apdu.build_exception_response(
                STATE_SERVICE_NOT_ALLOWED, SERVICE_DECIPHERING_ERROR
            )
        state = meter.state
        if header.invocation_counter <= state.client_invocation_counter:
            return apdu.build_exception_response(
                STATE_SERVICE_NOT_ALLOWED,
                SERVICE_INVOCATION_COUNTER_ERROR,
                state.client_invocation_counter + 1,
            )
        try:
            plain = header.open(title, meter.security_keys)
        except (SecurityError, DecodeError):
            return apdu.build_exception_response(
                STATE_SERVICE_NOT_ALLOWED, SERVICE_DECIPHERING_ERROR
            )
        state.client_invocation_counter = header.invocation_counter
        response = self._service(plain, now)
        if response is None or response[0] == apdu.TAG_EXCEPTION_RESPONSE:
            return response
        return security.cipher_apdu(
            response,
            sc=header.sc,
            system_title=meter.keys.system_title,
            invocation_counter=self._server_counter(),
            keys=meter.security_keys,
            general=header.system_title is not None,
        )

    def _reply_to_hls(self, request: apdu.ActionRequest) -> bytes:
        """HLS pass 3 checked, pass 4 answered: f(StoC) in, f(CtoS) out."""
        meter = self.meter
        try:
            reply = axdr.decode(request.data) if request.data is not None else None
        except DecodeError:
            reply = None
        assert self.server_challenge is not None and self.client_challenge is not None
        ok = (
            isinstance(reply, bytes)
            and security.verify_hls_gmac(
                reply, meter.client_system_title, meter.security_keys, self.server_challenge
            )
            is not None
        )
        if not ok:
            return apdu.build_action_response(request.invoke_id, objects.READ_WRITE_DENIED)
        self.hls_pending = False
        answer = security.hls_gmac(
            meter.keys.system_title,
            self._server_counter(),
            meter.security_keys,
            self.client_challenge,
        )
        return apdu.build_action_response(
            request.invoke_id, objects.SUCCESS, axdr.encode(axdr.octets(answer))
        )

    def _rlrq(self, data: bytes) -> bytes:
        try:
            apdu.decode_request(data)
        except DecodeError:
            return apdu.build_exception_response(STATE_SERVICE_UNKNOWN, SERVICE_OTHER_REASON)
        self._drop()
        self.released = True
        return apdu.build_rlre(0)

    def _negotiated(self, request: apdu.Request) -> bool:
        c = self.conformance
        if isinstance(request, apdu.GetRequest):
            return bool(c & _BIT_GET) and (request.access is None or bool(c & _BIT_SELECTIVE))
        if isinstance(request, apdu.GetNextRequest):
            return bool(c & _BIT_GET)
        if isinstance(request, apdu.GetListRequest):
            return (
                bool(c & _BIT_GET)
                and bool(c & _BIT_MULTIPLE)
                and (all(item[3] is None for item in request.items) or bool(c & _BIT_SELECTIVE))
            )
        if isinstance(request, apdu.SetRequest):
            return bool(c & _BIT_SET) and request.access is None
        if isinstance(request, apdu.ActionRequest):
            return bool(c & _BIT_ACTION)
        return False

    # ------------------------------------------------------------------ GET

    def _context(self, now: float, mutable: bool = False) -> objects.Context:
        meter = self.meter
        spec = meter.spec
        return objects.Context(
            spec=spec,
            state=meter.state if mutable else meter.current_state(),
            meter_time=meter.meter_time(now),
            management=self.management,
            client_sap=self.client_sap
            if self.client_sap is not None
            else (MANAGEMENT_CLIENT if self.management else PUBLIC_CLIENT),
            conformance=self.conformance,
            client_max_pdu=self.client_max_pdu,
            server_max_pdu=SERVER_MAX_PDU,
            mechanism=self.mechanism,
            objects=objects.object_table(spec.phases),
            ciphered=self.ciphered,
        )

    def _read(
        self,
        ctx: objects.Context,
        class_id: int,
        obis: bytes,
        attribute: int,
        access: apdu.AccessSelection | None,
    ) -> bytes | int:
        """Encoded value, or the Data-Access-Result to answer with."""
        obj = ctx.objects.get(bytes(obis))
        if obj is None or obj.class_id != class_id:
            return objects.OBJECT_UNDEFINED
        try:
            return objects.get_attribute(ctx, obj, attribute, access)
        except DataAccessError as exc:
            return exc.result
        except ValueError:
            # meter time outside the model's range: nothing stored for it
            return objects.OBJECT_UNAVAILABLE

    def _get(self, request: apdu.GetRequest, now: float) -> bytes:
        self._long = None
        value = self._read(
            self._context(now), request.class_id, request.obis, request.attribute, request.access
        )
        if isinstance(value, int):
            return apdu.build_get_response_error(request.invoke_id, value)
        if 4 + len(value) <= self.client_max_pdu:
            return apdu.build_get_response(request.invoke_id, value)
        return self._start_long(request.invoke_id, value)

    def _get_list(self, request: apdu.GetListRequest, now: float) -> bytes:
        self._long = None
        ctx = self._context(now)
        items = [self._read(ctx, cid, obis, attr, acc) for cid, obis, attr, acc in request.items]
        response = apdu.build_get_list_response(request.invoke_id, items)
        if len(response) <= self.client_max_pdu:
            return response
        # Raw data of a with-list block transfer: the SEQUENCE OF Get-Data-Result.
        return self._start_long(request.invoke_id, response[3:])

    def _start_long(self, invoke_id: int, raw: bytes) -> bytes:
        if not self.conformance & _BIT_BLOCK_GET:
            return apdu.build_get_response_error(invoke_id, objects.OTHER_REASON)
        self._long = _LongGet(invoke_id, raw, 0, 0)
        return self._next_block()

    def _block_size(self) -> int:
        """Raw bytes per block so the whole GetResponseWithDatablock fits the client's PDU."""
        # tag, type, invoke id, last, block number (4), raw-data choice = 9; then the length
        room = self.client_max_pdu - 9
        if room - 1 < 0x80:
            return room - 1
        if room - 2 < 0x100:
            return room - 2
        return room - 3

    def _next_block(self) -> bytes:
        long = self._long
        assert long is not None
        size = max(1, self._block_size())
        chunk = long.raw[long.offset : long.offset + size]
        long.offset += len(chunk)
        long.block_number += 1
        last = long.offset >= len(long.raw)
        reply = apdu.build_get_response_block(long.invoke_id, long.block_number, last, chunk)
        if last:
            self._long = None
        return reply

    def _get_next(self, request: apdu.GetNextRequest) -> bytes:
        long = self._long
        if long is None:
            return apdu.build_get_response_block_error(
                request.invoke_id, request.block_number, NO_LONG_GET_IN_PROGRESS
            )
        if request.block_number != long.block_number:
            self._long = None
            return apdu.build_get_response_block_error(
                request.invoke_id, request.block_number, DATA_BLOCK_NUMBER_INVALID
            )
        return self._next_block()

    # ------------------------------------------------------------------ SET / ACTION

    def _target(self, class_id: int, obis: bytes) -> objects.CosemObject:
        obj = objects.object_table(self.meter.spec.phases).get(bytes(obis))
        if obj is None or obj.class_id != class_id:
            raise data_access_error(objects.OBJECT_UNDEFINED, "object")
        return obj

    def _set(self, request: apdu.SetRequest, now: float) -> int:
        self._long = None
        try:
            obj = self._target(request.class_id, request.obis)
            ctx = self._context(now, mutable=self.management)
            objects.set_attribute(ctx, obj, request.attribute, request.data, now)
        except DataAccessError as exc:
            return exc.result
        return objects.SUCCESS

    def _action(self, request: apdu.ActionRequest, now: float) -> int:
        self._long = None
        try:
            obj = self._target(request.class_id, request.obis)
            ctx = self._context(now, mutable=self.management)
            objects.invoke(ctx, obj, request.method, request.data, now)
        except DataAccessError as exc:
            return exc.result
        return objects.SUCCESS


_DIAG_CALLING_AP_TITLE_NOT_RECOGNISED = 3
_DIAG_MECHANISM_NOT_RECOGNISED = 11


def _is_reply_to_hls(request: apdu.ActionRequest) -> bool:
    return (
        request.class_id == objects.ASSOCIATION_LN
        and request.obis == objects.OBIS_ASSOCIATION
        and request.method == _REPLY_TO_HLS
    )


def _supported_variant(data: bytes) -> bool:
    """GET normal/next/with-list, SET normal, ACTION normal; other variants are unsupported."""
    if len(data) < 3:
        return True  # let the decoder call it malformed
    tag, kind = data[0], data[1]
    if tag == apdu.TAG_GET_REQUEST:
        return kind in (1, 2, 3)
    return kind == 1
