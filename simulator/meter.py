"""Sans-IO simulated meter: request APDU bytes in, response APDU bytes out.

No clock, no sockets: the IO layer passes the true unix time with every APDU. One
:class:`SimulatedMeter` per meter holds the tiny mutable state (clock correction, relay) and
hands out one :class:`MeterSession` per association (per TCP connection or HDLC link).
The association itself (AARQ checks, ciphering, HLS, block transfer, exception responses) is
``protocols.xdlms.server.ServerAssociation``, the same sans-IO code a real server would use;
this module adds the meter's client policy and answers its GET/SET/ACTION events from the
object model (``simulator.objects``).

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
``require_security`` refuses unciphered AARQs (application-context-name-not-supported) but the
public client's without authentication, which may read only the logical device name and the
frame counter 0.0.43.1.0.255 (the counter recovery of a head-end that lost its own).

Services: GET normal / with-list / next (block transfer whenever the response would exceed the
client's max PDU size), SET normal, ACTION normal, RLRQ. Anything else, anything before an
association, and anything undecodable gets an ExceptionResponse; a meter in a simulated outage
does not answer at all (``None``). A meter made with ``quirks`` (``simulator.quirks``) answers
some requests the way independent implementations were found to; with the
``short_names`` quirk it is an SN meter: only the short-name context is accepted and the
same objects are read and written by base name (``simulator.short_names``) through
ReadRequest/WriteRequest, several references at a time, profile ranges through
parameterized access, and a value bigger than the client's PDU in blocks.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from protocols import security
from protocols.cosem import CosemDateTime
from protocols.enums import AcseDiagnostic, ApduTag, Conformance, DataAccessResult, Mechanism
from protocols.errors import DataAccessError, DecodeError
from protocols.xdlms import (
    AccessSelection,
    ActionRequest,
    GetListRequest,
    GetRequest,
    RangeAccess,
    SetRequest,
)
from protocols.xdlms.server import Reply, ServerAssociation, ServerSettings
from protocols.xdlms.sn import ReadRequest, WriteRequest
from simulator import attributes, model, objects, short_names
from simulator.areas import ORDINARY, Energy
from simulator.image_transfer import PowerCut
from simulator.quirks import NO_QUIRKS, Quirks

PUBLIC_CLIENT = 16
MANAGEMENT_CLIENT = 1

#: What the meter supports: block-transfer-with-get, multiple-references, get, set,
#: selective-access, action.
SERVER_CONFORMANCE = (
    Conformance.BLOCK_TRANSFER_WITH_GET
    | Conformance.MULTIPLE_REFERENCES
    | Conformance.GET
    | Conformance.SET
    | Conformance.SELECTIVE_ACCESS
    | Conformance.ACTION
).value
#: What an SN meter supports: read, write, multiple-references, parameterized-access and
#: block-transfer-with-get-or-read (a value bigger than the client's PDU comes in blocks).
SN_SERVER_CONFORMANCE = (
    Conformance.READ
    | Conformance.WRITE
    | Conformance.MULTIPLE_REFERENCES
    | Conformance.PARAMETERIZED_ACCESS
    | Conformance.BLOCK_TRANSFER_WITH_GET
).value
#: The meter's own max receive PDU size, announced in the AARE.
SERVER_MAX_PDU = 1024

#: An A-XDR array of no elements: a profile buffer that matched no entry.
EMPTY_ARRAY = b"\x01\x00"


class SimulatedMeter:
    """One meter of the fleet: identity and the little state that SET/ACTION change.

    ``require_security``: refuse unciphered associations; ``client_system_title``: the
    head-end system title the meter knows (ciphered AARQs from any other are refused);
    ``energy``: how it registers energy (:mod:`simulator.areas`: ordinary, under-registering,
    or an area's transformer meter); ``quirks``: how it departs from the usual encodings
    (:mod:`simulator.quirks`).
    """

    __slots__ = (
        "_state",
        "client_system_title",
        "energy",
        "meter_id",
        "on_push",
        "quirks",
        "require_security",
        "seed",
    )

    def __init__(
        self,
        meter_id: int,
        seed: int,
        *,
        require_security: bool = False,
        client_system_title: bytes = security.DEFAULT_CLIENT_SYSTEM_TITLE,
        energy: Energy = ORDINARY,
        quirks: Quirks = NO_QUIRKS,
    ) -> None:
        self.meter_id = meter_id
        self.quirks = quirks
        self.energy = energy
        self.seed = seed
        self.require_security = require_security
        self.client_system_title = client_system_title
        self._state: objects.MeterState | None = None
        #: Hears an ACTION push: (meter, push setup logical name, true time); the fleet's
        #: pusher sends the notification (None: nobody does).
        self.on_push: Callable[[SimulatedMeter, bytes, float], None] | None = None

    @property
    def keys(self) -> model.MeterKeys:
        return model.keys(self.meter_id, self.seed)

    @property
    def security_keys(self) -> security.SecurityKeys:
        k = self.keys
        return security.SecurityKeys(k.encryption_key, k.authentication_key)

    @property
    def spec(self) -> model.MeterSpec:
        return self.energy.spec(self.meter_id, self.seed)

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

    def new_session(
        self, client_sap: int | None = None, random_bytes: Callable[[int], bytes] = os.urandom
    ) -> MeterSession:
        return MeterSession(self, client_sap, random_bytes)


class _Policy:
    """Which client SAP may use which mechanism, and the meter's LLS password.

    The public client (SAP 16) gets no authentication, the management client (SAP 1)
    needs LLS or HLS-GMAC; an unknown SAP is refused as calling-AP-title-not-recognised.
    When the IO layer does not know the SAP, the mechanism decides.
    """

    __slots__ = ("meter", "sap")

    def __init__(self, meter: SimulatedMeter, sap: int | None) -> None:
        self.meter = meter
        self.sap = sap

    def refuse(self, mechanism: int, ciphered: bool) -> int | None:
        sap = self.sap
        if sap is not None and sap not in (PUBLIC_CLIENT, MANAGEMENT_CLIENT):
            return AcseDiagnostic.CALLING_AP_TITLE_NOT_RECOGNIZED
        if mechanism != Mechanism.NONE and sap == PUBLIC_CLIENT:
            return AcseDiagnostic.AUTHENTICATION_MECHANISM_NAME_NOT_RECOGNISED
        if mechanism == Mechanism.NONE and sap == MANAGEMENT_CLIENT:
            return AcseDiagnostic.AUTHENTICATION_REQUIRED
        return None

    def refuse_secret(self, mechanism: int, secret: bytes | None) -> int | None:
        if secret != self.meter.spec.password:
            return AcseDiagnostic.AUTHENTICATION_FAILURE
        return None


class MeterSession:
    """One association: the sans-IO server association plus the meter's object model."""

    __slots__ = ("association", "client_sap", "meter", "power_cut")

    def __init__(
        self,
        meter: SimulatedMeter,
        client_sap: int | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.meter = meter
        self.client_sap = client_sap
        #: Set when the meter lost power mid-session (the IO layer then drops the link).
        self.power_cut = False
        keys = meter.keys
        sn = meter.quirks.short_names
        gbt = meter.quirks.gbt_window
        conformance = SN_SERVER_CONFORMANCE if sn else SERVER_CONFORMANCE
        if gbt:
            conformance |= Conformance.GENERAL_BLOCK_TRANSFER
        settings = ServerSettings(
            conformance=conformance,
            gbt_window=gbt or 1,
            short_names=sn,
            max_pdu_size=SERVER_MAX_PDU,
            system_title=keys.system_title,
            keys=meter.security_keys,
            client_system_title=meter.client_system_title,
            require_security=meter.require_security,
            announce_system_title=not meter.quirks.omit_system_title,
        )
        self.association = ServerAssociation(
            settings, _Policy(meter, client_sap), lambda: meter.state, random_bytes
        )

    @property
    def associated(self) -> bool:
        return self.association.associated

    @property
    def released(self) -> bool:
        return self.association.released

    @property
    def management(self) -> bool:
        return self.association.mechanism in (Mechanism.LLS, Mechanism.HLS_GMAC)

    @property
    def ciphered(self) -> bool:
        return self.association.ciphered

    @property
    def hls_pending(self) -> bool:
        return self.association.hls_pending

    def take_queued(self) -> list[bytes]:
        """The GBT APDUs that follow the one :meth:`handle` returned (the rest of a window)."""
        return self.association.take_queued()

    def handle(self, apdu_bytes: bytes, now: float) -> bytes | None:
        """Answer one APDU at true time ``now``; None when the meter stays silent."""
        association = self.association
        if not self.meter.online(now):
            association.drop()
            return None
        quirky = self._quirk(apdu_bytes)
        if quirky is not None:
            return quirky
        event = association.receive(apdu_bytes)
        if isinstance(event, Reply):
            return event.apdu
        request = event.request
        if isinstance(request, ReadRequest):
            ctx = self._context(now)
            return association.answer_read(
                [self._read_name(ctx, name, access) for name, access in request.references]
            )
        if isinstance(request, WriteRequest):
            written = [self._write_name(name, data, now) for name, data in request.items]
            if any(result is None for result in written):
                self._cut_power()
                return None
            return association.answer_write([r for r in written if r is not None])
        if isinstance(request, GetRequest):
            value = self._read(
                self._context(now),
                request.class_id,
                request.obis,
                request.attribute,
                request.access,
            )
            if isinstance(value, bytes):
                value += self.meter.quirks.trailing_bytes
            return association.answer_get(request, value)
        if isinstance(request, GetListRequest):
            ctx = self._context(now)
            items = [
                self._read(ctx, cid, obis, attr, acc) for cid, obis, attr, acc in request.items
            ]
            return association.answer_get_list(request, items)
        if isinstance(request, SetRequest):
            result = self._set(request.class_id, request.obis, request.attribute, request.data, now)
            return association.answer_set(request, result, event.confirmed)
        action_result = self._action(request, now)
        if action_result is None:
            self._cut_power()
            return None
        return association.answer_action(request, action_result, None, event.confirmed)

    def _cut_power(self) -> None:
        """The meter lost power running a method: no answer, and the link is gone."""
        self.power_cut = True
        self.association.drop()

    def _quirk(self, apdu: bytes) -> bytes | None:
        """The answer a quirk puts in place of the association's own, if one applies."""
        quirks = self.meter.quirks
        if quirks.association_exception is not None and apdu[:1] == bytes((ApduTag.AARQ,)):
            self.association.drop()
            return quirks.association_exception
        failure = quirks.block_failure
        if (
            failure is not None
            and len(apdu) == 7
            and apdu[:2] == bytes((ApduTag.GET_REQUEST, 0x02))
            and self.association.associated
        ):
            block = int.from_bytes(apdu[3:7], "big")
            # DataBlock-G with its data-access-result length-prefixed like raw-data would be.
            return (
                bytes((ApduTag.GET_RESPONSE, 0x02, apdu[2], 0x01))
                + (block + 1).to_bytes(4, "big")
                + bytes((0x01, 0x01, failure))
            )
        return None

    def _context(self, now: float, mutable: bool = False) -> attributes.Context:
        meter = self.meter
        spec = meter.spec
        association = self.association
        management = self.management
        return attributes.Context(
            spec=spec,
            state=meter.state if mutable else meter.current_state(),
            meter_time=meter.meter_time(now),
            management=management,
            client_sap=self.client_sap
            if self.client_sap is not None
            else (MANAGEMENT_CLIENT if management else PUBLIC_CLIENT),
            conformance=association.conformance,
            client_max_pdu=association.client_max_pdu,
            server_max_pdu=SERVER_MAX_PDU,
            mechanism=association.mechanism,
            objects=objects.object_table(spec.phases),
            ciphered=association.ciphered,
            energy=meter.energy,
            power_cut_after_blocks=meter.quirks.power_cut_after_blocks,
            firmware_rollback=meter.quirks.firmware_rollback,
            push_describes=not meter.quirks.push_without_object_list,
            push_now=self._push_now(now),
            restricted=meter.require_security and not association.ciphered,
        )

    def _push_now(self, now: float) -> Callable[[bytes], None] | None:
        meter = self.meter
        hears = meter.on_push
        if hears is None:
            return None
        return lambda name: hears(meter, name, now)

    def _read(
        self,
        ctx: attributes.Context,
        class_id: int,
        obis: bytes,
        attribute: int,
        access: AccessSelection | None,
    ) -> bytes | int:
        """Encoded value, or the Data-Access-Result to answer with."""
        obj = ctx.objects.get(bytes(obis))
        if obj is None or obj.class_id != class_id:
            return DataAccessResult.OBJECT_UNDEFINED
        if self.meter.quirks.range_without_deviation and _bounds_carry_deviation(access):
            return EMPTY_ARRAY
        try:
            return attributes.get_attribute(ctx, obj, attribute, access)
        except DataAccessError as exc:
            return exc.result
        except ValueError:
            # meter time outside the model's range: nothing stored for it
            return DataAccessResult.OBJECT_UNAVAILABLE

    def _read_name(
        self, ctx: attributes.Context, name: int, access: AccessSelection | None
    ) -> bytes | int:
        """A short name read: the attribute it names, read as a GET would be."""
        table = short_names.name_table(self.meter.spec.phases)
        target = table.resolve(name)
        if target is None:
            return DataAccessResult.OBJECT_UNDEFINED
        if target.obj is None:
            try:
                return short_names.association_attribute(table, target.attribute)
            except DataAccessError as exc:
                return exc.result
        return self._read(ctx, target.obj.class_id, target.obj.obis, target.attribute, access)

    def _write_name(self, name: int, data: bytes, now: float) -> int | None:
        target = short_names.name_table(self.meter.spec.phases).resolve(name)
        if target is None:
            return DataAccessResult.OBJECT_UNDEFINED
        if target.obj is None:
            return DataAccessResult.READ_WRITE_DENIED
        obj = target.obj
        if target.method:
            return self._invoke(obj, target.method, None if data == b"\x00" else data, now)
        return self._set(obj.class_id, obj.obis, target.attribute, data, now)

    def _target(self, class_id: int, obis: bytes) -> objects.CosemObject | int:
        obj = objects.object_table(self.meter.spec.phases).get(bytes(obis))
        if obj is None or obj.class_id != class_id:
            return DataAccessResult.OBJECT_UNDEFINED
        return obj

    def _set(self, class_id: int, obis: bytes, attribute: int, data: bytes, now: float) -> int:
        obj = self._target(class_id, obis)
        if isinstance(obj, int):
            return obj
        try:
            ctx = self._context(now, mutable=self.management)
            attributes.set_attribute(ctx, obj, attribute, data, now)
        except DataAccessError as exc:
            return exc.result
        return DataAccessResult.SUCCESS

    def _action(self, request: ActionRequest, now: float) -> int | None:
        """The Action-Result, or None when the meter lost power running it (no answer)."""
        obj = self._target(request.class_id, request.obis)
        if isinstance(obj, int):
            return obj
        return self._invoke(obj, request.method, request.data, now)

    def _invoke(
        self, obj: objects.CosemObject, method: int, data: bytes | None, now: float
    ) -> int | None:
        """The Action-Result, or None when the meter lost power running it."""
        try:
            ctx = self._context(now, mutable=self.management)
            attributes.invoke(ctx, obj, method, data, now)
        except DataAccessError as exc:
            return exc.result
        except PowerCut:
            return None
        return DataAccessResult.SUCCESS


def _bounds_carry_deviation(access: AccessSelection | None) -> bool:
    """Whether a range read names its bounds with a clock deviation (the range-without-
    deviation quirk matches nothing then); bounds that are no date-time are left to the
    object, which refuses them."""
    if not isinstance(access, RangeAccess):
        return False
    try:
        bounds = [CosemDateTime.from_bytes(bytes(v)) for v in (access.from_value, access.to_value)]
    except DecodeError:
        return False
    return any(b.deviation is not None for b in bounds)
