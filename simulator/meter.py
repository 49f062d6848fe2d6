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
management SAP → authentication-required; HLS mechanisms → mechanism-name-not-recognised;
ciphered contexts → application-context-name-not-supported (security arrives later).

Services: GET normal / with-list / next (block transfer whenever the response would exceed the
client's max PDU size), SET normal, ACTION normal, RLRQ. Anything else, anything before an
association, and anything undecodable gets an ExceptionResponse; a meter in a simulated outage
does not answer at all (``None``).
"""

from __future__ import annotations

from dataclasses import dataclass

from protocols import apdu
from protocols.errors import DataAccessError, DecodeError, data_access_error
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

# Data-Access-Results of the block transfer.
LONG_GET_ABORTED = 15
NO_LONG_GET_IN_PROGRESS = 16
DATA_BLOCK_NUMBER_INVALID = 19

_MECH_NONE = 0
_MECH_LLS = 1


class SimulatedMeter:
    """One meter of the fleet: identity and the little state that SET/ACTION change."""

    __slots__ = ("_state", "meter_id", "seed")

    def __init__(self, meter_id: int, seed: int) -> None:
        self.meter_id = meter_id
        self.seed = seed
        self._state: objects.MeterState | None = None

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
        "client_max_pdu",
        "client_sap",
        "conformance",
        "management",
        "mechanism",
        "meter",
        "released",
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
            return apdu.build_exception_response(
                STATE_SERVICE_NOT_ALLOWED, SERVICE_NOT_SUPPORTED
            )
        confirmed = bool(apdu_bytes[2] & 0x40)
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

    def _reject(self, diagnostic: int, initiate_error: int | None = None) -> bytes:
        self._drop()
        return apdu.build_aare(
            accepted=False,
            diagnostic=diagnostic,
            conformance=SERVER_CONFORMANCE,
            max_pdu_size=SERVER_MAX_PDU,
            initiate_error=initiate_error,
        )

    def _aarq(self, data: bytes) -> bytes:
        try:
            request = apdu.decode_request(data)
        except DecodeError:
            return self._reject(apdu.ACSE_DIAGNOSTIC_NO_REASON)
        if not isinstance(request, apdu.AarqInfo):
            return self._reject(apdu.ACSE_DIAGNOSTIC_NO_REASON)
        if request.ciphered or request.ciphered_initiate is not None:
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
        if request.dlms_version < 6:
            return self._reject(apdu.ACSE_DIAGNOSTIC_NO_REASON, initiate_error=1)
        if request.client_max_pdu_size and request.client_max_pdu_size < MIN_CLIENT_PDU:
            return self._reject(apdu.ACSE_DIAGNOSTIC_NO_REASON, initiate_error=3)
        conformance = request.proposed_conformance & SERVER_CONFORMANCE
        if not conformance & (_BIT_GET | _BIT_SET | _BIT_ACTION):
            return self._reject(apdu.ACSE_DIAGNOSTIC_NO_REASON, initiate_error=2)
        self.associated = True
        self.released = False
        self.management = mech == _MECH_LLS
        self.mechanism = mech
        self.conformance = conformance
        # 0 means "no limit" in the InitiateRequest; cap at what the length fields allow.
        self.client_max_pdu = request.client_max_pdu_size or 0xFFFF
        self._long = None
        return apdu.build_aare(
            accepted=True,
            conformance=conformance,
            max_pdu_size=SERVER_MAX_PDU,
            authentication="lls" if mech == _MECH_LLS else "none",
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
            return bool(c & _BIT_GET) and bool(c & _BIT_MULTIPLE) and (
                all(item[3] is None for item in request.items) or bool(c & _BIT_SELECTIVE)
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


def _supported_variant(data: bytes) -> bool:
    """GET normal/next/with-list, SET normal, ACTION normal; other variants are unsupported."""
    if len(data) < 3:
        return True  # let the decoder call it malformed
    tag, kind = data[0], data[1]
    if tag == apdu.TAG_GET_REQUEST:
        return kind in (1, 2, 3)
    return kind == 1
