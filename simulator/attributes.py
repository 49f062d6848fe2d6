"""What a simulated meter answers for an attribute, a SET and an ACTION, by object.

Apart from :mod:`simulator.objects` (the object table, its OBIS codes and the encoded
profile buffers) because this is the per-request part: a :class:`Context` of one request
(meter, meter time, association) and the values computed from :mod:`simulator.model` in it.
Failures raise the typed :class:`~protocols.errors.DataAccessError` whose ``result`` the
meter answers with.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from protocols import axdr
from protocols.cosem import CosemDateTime
from protocols.enums import Conformance
from protocols.errors import DecodeError, data_access_error
from protocols.xdlms import AccessSelection
from simulator import image_transfer, model, push_setup
from simulator.areas import ORDINARY, Energy
from simulator.objects import (
    CLOCK,
    CONNECTED,
    CONTROL_MODE,
    DATA,
    DISCONNECT_CONTROL,
    DISCONNECTED,
    EVENT_LOG_DAYS,
    EXTENDED_REGISTER,
    IMAGE_TRANSFER,
    OBIS_A_MINUS,
    OBIS_A_PLUS,
    OBIS_A_PLUS_TARIFF,
    OBIS_FIRMWARE_ID,
    OBIS_FRAME_COUNTER,
    OBIS_LDN,
    OBIS_PHASE,
    OBIS_R_MINUS,
    OBIS_R_PLUS,
    OBIS_SERIAL,
    OBIS_STATUS,
    OBJECT_UNDEFINED,
    PROFILE_GENERIC,
    PROFILES,
    PUSH_SETUP,
    READ_WRITE_DENIED,
    REGISTER,
    SCOPE_OF_ACCESS_VIOLATED,
    SECURED_PUBLIC_READ,
    TYPE_UNMATCHED,
    UNIT_A,
    UNIT_V,
    UNIT_VARH,
    UNIT_W,
    UNIT_WH,
    CosemObject,
    MeterState,
    columns_value,
    datetime_bytes,
    datetime_unix,
    enc,
    entries_in_use,
    profile_buffer,
    scaler_unit,
)


@dataclass(slots=True)
class Context:
    """What a GET needs besides the object: meter, time, association facts."""

    spec: model.MeterSpec
    state: MeterState
    meter_time: float
    management: bool
    client_sap: int
    conformance: int
    client_max_pdu: int
    server_max_pdu: int
    mechanism: int
    objects: dict[bytes, CosemObject] = field(default_factory=dict)
    ciphered: bool = False
    #: How the meter registers energy (an ordinary, under-registering or transformer meter).
    energy: Energy = ORDINARY
    #: The energy registers at ``meter_time``, once computed (:meth:`registers`).
    computed_registers: model.Registers | None = None
    #: The power cut quirk: the meter loses power once it holds this many image blocks.
    power_cut_after_blocks: int | None = None
    #: The firmware rollback quirk: activation succeeds, the old firmware stays active.
    firmware_rollback: bool = False
    #: Push setups headed by their own object list (False: the push_without_object_list quirk).
    push_describes: bool = True
    #: Where an ACTION push goes (the fleet's pusher); None: nobody sends it.
    push_now: Callable[[bytes], None] | None = None

    def setup(self, name: bytes) -> push_setup.PushSetupState:
        """Push setup ``name`` as configured, or its factory setting."""
        return push_setup.current(self.state.push_setups, name, self.push_describes)

    #: An unciphered association of a secured meter: only SECURED_PUBLIC_READ is readable.
    restricted: bool = False

    def registers(self) -> model.Registers:
        """The energy registers at ``meter_time``: computed once per request, since a
        GET-list of the four energy registers would otherwise run the model four times."""
        if self.computed_registers is None:
            self.computed_registers = self.energy.registers(self.spec, self.meter_time)
        return self.computed_registers


def _object_list(ctx: Context) -> bytes:
    items = []
    for o in ctx.objects.values():
        attrs = []
        for a in range(1, o.attributes + 1):
            mode = 0
            if o.can_read(a, ctx.management):
                mode |= 1
            if o.can_write(a, ctx.management):
                mode |= 2
            selectors = axdr.array([axdr.i8(1), axdr.i8(2)]) if a in o.selective else None
            attrs.append(axdr.structure(axdr.i8(a), axdr.enum(mode), selectors))
        methods = [
            axdr.structure(axdr.i8(m), axdr.enum(1 if o.can_invoke(m, ctx.management) else 0))
            for m in range(1, o.methods + 1)
        ]
        items.append(
            axdr.structure(
                axdr.u16(o.class_id),
                axdr.u8(o.version),
                axdr.octets(o.obis),
                axdr.structure(axdr.array(attrs), axdr.array(methods)),
            )
        )
    return enc(items)


def _register_value(ctx: Context, name: bytes) -> tuple[bytes, bytes]:
    """(encoded value, encoded scaler_unit) of a class 3 register."""
    spec, t = ctx.spec, ctx.meter_time
    for p, (v, i, w) in enumerate(OBIS_PHASE):
        if name in (v, i, w):
            inst = ctx.energy.instantaneous(spec, t)
            if name == v:
                return enc(axdr.u16(inst.voltage_dv[p])), scaler_unit(-1, UNIT_V)
            if name == i:
                return enc(axdr.u32(inst.current_ca[p])), scaler_unit(-2, UNIT_A)
            return enc(axdr.u32(inst.power_w[p])), scaler_unit(0, UNIT_W)
    regs = ctx.registers()
    if name == OBIS_A_PLUS:
        value, unit = regs.active_import, UNIT_WH
    elif name == OBIS_A_MINUS:
        value, unit = regs.active_export, UNIT_WH
    elif name == OBIS_R_PLUS:
        value, unit = regs.reactive_import, UNIT_VARH
    elif name == OBIS_R_MINUS:
        value, unit = regs.reactive_export, UNIT_VARH
    else:
        value, unit = regs.active_import_tariff[OBIS_A_PLUS_TARIFF.index(name)], UNIT_WH
    return enc(axdr.u64(value)), scaler_unit(0, unit)


def get_attribute(
    ctx: Context, obj: CosemObject, attribute: int, access: AccessSelection | None
) -> bytes:
    """Encoded value of one attribute, or raise the DataAccessError to answer with."""
    if attribute < 1 or attribute > obj.attributes:
        raise data_access_error(OBJECT_UNDEFINED, f"attribute {attribute}")
    if not obj.can_read(attribute, ctx.management) or (
        ctx.restricted and obj.obis not in SECURED_PUBLIC_READ
    ):
        raise data_access_error(READ_WRITE_DENIED, f"attribute {attribute}")
    if access is not None and attribute not in obj.selective:
        raise data_access_error(SCOPE_OF_ACCESS_VIOLATED, "selective access")
    if attribute == 1:
        return enc(axdr.octets(obj.obis))
    spec, t, name = ctx.spec, ctx.meter_time, obj.obis
    cid = obj.class_id
    if cid == DATA:
        if name == OBIS_LDN:
            return enc(axdr.octets(spec.logical_device_name))
        if name == OBIS_SERIAL:
            return enc(axdr.visible(spec.serial_number))
        if name == OBIS_FIRMWARE_ID:
            return enc(axdr.octets(ctx.state.firmware.active))
        if name == OBIS_FRAME_COUNTER:
            return enc(axdr.u32(max(ctx.state.client_invocation_counter, 0)))
        if name == OBIS_STATUS:
            return enc(axdr.u8(0 if model.powered(spec, t) else model.STATUS_POWER_DOWN))
        last = model.events(spec, t - EVENT_LOG_DAYS * model.DAY, t + 1)
        return enc(axdr.u8(last[-1][1] if last else 0))
    if cid == REGISTER:
        value, su = _register_value(ctx, name)
        return value if attribute == 2 else su
    if cid == EXTENDED_REGISTER:
        md, md_t = ctx.energy.max_demand(spec, t)
        if attribute == 2:
            return enc(axdr.u32(md))
        if attribute == 3:
            return scaler_unit(0, UNIT_W)
        if attribute == 4:
            return enc(axdr.u8(0))
        return enc(axdr.octets(datetime_bytes(md_t)))
    if cid == CLOCK:
        return _clock_attribute(t, attribute)
    if cid == PROFILE_GENERIC:
        profile = PROFILES[name]
        if attribute == 2:
            return profile_buffer(spec, name, t, access, ctx.energy)
        if attribute == 3:
            return columns_value(profile.columns)
        if attribute == 4:
            return enc(axdr.u32(profile.period))
        if attribute == 5:
            return enc(axdr.enum(1))  # fifo
        if attribute == 6:
            return enc(axdr.structure(axdr.u16(0), axdr.octets(bytes(6)), axdr.i8(0), axdr.u16(0)))
        if attribute == 7:
            return enc(axdr.u32(entries_in_use(spec, name, t, ctx.energy)))
        return enc(axdr.u32(profile.capacity))
    if cid == DISCONNECT_CONTROL:
        if attribute == 2:
            return enc(axdr.boolean(ctx.state.output_state))
        if attribute == 3:
            return enc(axdr.enum(ctx.state.control_state))
        return enc(axdr.enum(CONTROL_MODE))
    if cid == IMAGE_TRANSFER:
        return image_transfer.get_attribute(ctx.state.firmware, attribute, _block_size(ctx))
    if cid == PUSH_SETUP:
        return push_setup.get_attribute(ctx.setup(name), attribute)
    return _association_attribute(ctx, attribute)


def _block_size(ctx: Context) -> int:
    gbt = bool(ctx.conformance & Conformance.GENERAL_BLOCK_TRANSFER)
    return image_transfer.block_size_for(ctx.client_max_pdu, ctx.server_max_pdu, gbt)


def _clock_attribute(t: float, attribute: int) -> bytes:
    if attribute == 2:
        return enc(axdr.octets(datetime_bytes(t)))
    if attribute == 3:
        return enc(axdr.i16(0))
    if attribute == 4:
        return enc(axdr.u8(0))
    if attribute in (5, 6):
        return enc(axdr.octets(CosemDateTime(None, None, None).to_bytes()))
    if attribute == 7:
        return enc(axdr.i8(0))
    if attribute == 8:
        return enc(axdr.boolean(False))
    return enc(axdr.enum(1))  # clock_base: internal crystal


def _oid_value(kind: int, last: int) -> bytes:
    """A DLMS UA object identifier 2.16.756.5.8.kind.last as the class 15 v1 structure."""
    return enc(
        axdr.structure(
            axdr.u8(2),
            axdr.u8(16),
            axdr.u16(756),
            axdr.u8(5),
            axdr.u8(8),
            axdr.u8(kind),
            axdr.u8(last),
        )
    )


def _association_attribute(ctx: Context, attribute: int) -> bytes:
    if attribute == 2:
        return _object_list(ctx)
    if attribute == 3:
        return enc(axdr.structure(axdr.i8(ctx.client_sap), axdr.u16(1)))
    if attribute == 4:
        # application-context-name 2.16.756.5.8.1.1 (LN, no ciphering) or .3 (LN, ciphering)
        return _oid_value(1, 3 if ctx.ciphered else 1)
    if attribute == 5:
        return enc(
            axdr.structure(
                axdr.Typed(axdr.BIT_STRING, axdr.BitString(ctx.conformance.to_bytes(3, "big"), 24)),
                axdr.u16(ctx.server_max_pdu),
                axdr.u16(ctx.client_max_pdu),
                axdr.u8(6),
                axdr.i8(0),
                axdr.octets(b""),
            )
        )
    if attribute == 6:
        # mechanism-name 2.16.756.5.8.2.x
        return _oid_value(2, ctx.mechanism)
    return enc(axdr.enum(2))  # associated


# ---------------------------------------------------------------------------------------------
# SET and ACTION


def set_attribute(
    ctx: Context, obj: CosemObject, attribute: int, data: bytes, true_now: float
) -> None:
    """Apply a SET (the clock time, push setups), or raise the DataAccessError."""
    if attribute < 1 or attribute > obj.attributes:
        raise data_access_error(OBJECT_UNDEFINED, f"attribute {attribute}")
    if not obj.can_write(attribute, ctx.management):
        raise data_access_error(READ_WRITE_DENIED, f"attribute {attribute}")
    if obj.class_id == PUSH_SETUP:

        def has(class_id: int, name: bytes, attr: int) -> bool:
            o = ctx.objects.get(name)
            return o is not None and o.class_id == class_id and 1 <= attr <= o.attributes

        changed = push_setup.set_attribute(ctx.setup(obj.obis), obj.obis, attribute, data, has)
        ctx.state.push_setups[obj.obis] = changed
        return
    try:
        value = axdr.decode(data)
        if not isinstance(value, bytes) or len(value) != 12:
            raise DecodeError("clock time must be a 12-byte date-time")
        new_time = datetime_unix(value)
    except DecodeError:
        raise data_access_error(TYPE_UNMATCHED, "clock time") from None
    ctx.state.clock_offset = new_time - model.meter_clock(ctx.spec, true_now)


def invoke(
    ctx: Context, obj: CosemObject, method: int, data: bytes | None, true_now: float
) -> None:
    """Run an ACTION, or raise the DataAccessError (Action-Result uses the same codes)."""
    if method < 1 or method > obj.methods:
        raise data_access_error(OBJECT_UNDEFINED, f"method {method}")
    if not obj.can_invoke(method, ctx.management):
        raise data_access_error(READ_WRITE_DENIED, f"method {method}")
    try:
        param = axdr.decode(data) if data is not None else None
    except DecodeError:
        raise data_access_error(TYPE_UNMATCHED, f"method {method} parameters") from None
    state = ctx.state
    if obj.class_id == DISCONNECT_CONTROL:
        state.control_state = DISCONNECTED if method == 1 else CONNECTED
        return
    if obj.class_id == PUSH_SETUP:
        push_setup.check_push_parameter(param)
        if ctx.push_now is not None:
            ctx.push_now(obj.obis)
        return
    if obj.class_id == IMAGE_TRANSFER:
        image_transfer.invoke(
            state.firmware,
            method,
            param,
            _block_size(ctx),
            ctx.power_cut_after_blocks,
            ctx.firmware_rollback,
        )
        return
    # Clock: 1 adjust_to_quarter, 3 adjust_to_minute, 6 shift_time(long seconds).
    t = ctx.meter_time
    if method == 6:
        if not isinstance(param, int) or isinstance(param, bool) or not -900 <= param <= 900:
            raise data_access_error(TYPE_UNMATCHED, "shift_time seconds")
        state.clock_offset += param
        return
    step = 900 if method == 1 else 60
    target = (t + step / 2) // step * step
    state.clock_offset += target - t
