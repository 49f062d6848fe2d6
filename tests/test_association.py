"""The xDLMS association in both roles, sans-IO: a ClientAssociation talks to a
ServerAssociation through nothing but bytes, with no socket, no event loop and no clock.

Block transfer, with-list, HLS-GMAC and ciphering are pinned by hypothesis properties; the
randomness (both challenges) is injected, so a whole exchange is byte-for-byte repeatable.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import axdr
from protocols.enums import (
    AcseDiagnostic,
    Conformance,
    DataAccessResult,
    InterfaceClass,
    ServiceErrorCode,
    StateError,
)
from protocols.errors import (
    AuthenticationFailed,
    DataAccessError,
    DlmsError,
    InvocationCounterRejected,
    KeyRejected,
    ProtocolError,
)
from protocols.security import MemoryCounterStore, SecurityContext, SecurityKeys
from protocols.xdlms.acse import Authentication
from protocols.xdlms.client import (
    Associated,
    ClientAssociation,
    ClientEvent,
    Done,
    Released,
    Send,
    Value,
    Values,
)
from protocols.xdlms.codec import decode_response
from protocols.xdlms.exception import ExceptionResult
from protocols.xdlms.get import GetListRequest, GetRequest, build_get, build_get_response_block
from protocols.xdlms.server import Reply, Serve, ServerAssociation, ServerSettings
from protocols.xdlms.set_action import ActionRequest, SetRequest

OBIS = bytes((1, 0, 99, 1, 0, 255))
KEYS = SecurityKeys(bytes(range(16)), bytes(range(16, 32)))
METER_TITLE = b"SIM\x00\x00\x00\x00\x07"
CLIENT_TITLE = b"HES\x00\x00\x00\x00\x01"
CONFORMANCE = (
    Conformance.BLOCK_TRANSFER_WITH_GET
    | Conformance.MULTIPLE_REFERENCES
    | Conformance.GET
    | Conformance.SET
    | Conformance.SELECTIVE_ACCESS
    | Conformance.ACTION
)


class OpenPolicy:
    """Every mechanism for every client; the LLS password is b"secret"."""

    def refuse(self, mechanism: int, ciphered: bool) -> int | None:
        return None

    def refuse_secret(self, mechanism: int, secret: bytes | None) -> int | None:
        return None if secret == b"secret" else AcseDiagnostic.AUTHENTICATION_FAILURE


@dataclass
class Counters:
    client_invocation_counter: int = 0
    server_invocation_counter: int = 0


class Meter:
    """A tiny application behind a ServerAssociation: attributes are a dict of values."""

    def __init__(self, keys: SecurityKeys = KEYS, max_pdu: int = 2048) -> None:
        self.values: dict[tuple[int, bytes, int], bytes] = {}
        self.counters = Counters()
        self.set_log: list[bytes] = []
        self.server = ServerAssociation(
            ServerSettings(
                conformance=CONFORMANCE,
                max_pdu_size=max_pdu,
                system_title=METER_TITLE,
                keys=keys,
                client_system_title=CLIENT_TITLE,
            ),
            OpenPolicy(),
            lambda: self.counters,
            lambda n: b"S" * n,
        )

    def answer(self, apdu: bytes) -> bytes:
        event = self.server.receive(apdu)
        if isinstance(event, Reply):
            assert event.apdu is not None
            return event.apdu
        assert isinstance(event, Serve)
        request = event.request
        if isinstance(request, GetRequest):
            key = (request.class_id, request.obis, request.attribute)
            return self.server.answer_get(
                request, self.values.get(key, DataAccessResult.OBJECT_UNDEFINED)
            )
        if isinstance(request, GetListRequest):
            items: list[bytes | int] = [
                self.values.get((c, o, a), DataAccessResult.OBJECT_UNDEFINED)
                for c, o, a, _ in request.items
            ]
            return self.server.answer_get_list(request, items)
        if isinstance(request, SetRequest):
            self.set_log.append(request.data)
            answer = self.server.answer_set(request, DataAccessResult.SUCCESS)
        else:
            assert isinstance(request, ActionRequest)
            answer = self.server.answer_action(request, DataAccessResult.SUCCESS, request.data)
        assert answer is not None
        return answer


def exchange(client: ClientAssociation, meter: Meter, apdu: bytes) -> tuple[ClientEvent, int]:
    """Drive one exchange to its end; the final event and the number of round trips."""
    trips = 0
    while True:
        trips += 1
        event = client.receive(meter.answer(apdu))
        if not isinstance(event, Send):
            return event, trips
        apdu = event.apdu


def security_context(store: MemoryCounterStore | None = None) -> SecurityContext:
    return SecurityContext(
        KEYS,
        counters=store or MemoryCounterStore(start=1),
        system_title=CLIENT_TITLE,
        challenge=lambda: b"C" * 16,
    )


def associate(
    meter: Meter,
    *,
    max_pdu: int = 0xFFFF,
    authentication: Authentication = "none",
    password: bytes | None = None,
    security: SecurityContext | None = None,
) -> ClientAssociation:
    client = ClientAssociation(
        authentication=authentication, password=password, max_pdu_size=max_pdu, security=security
    )
    event, _ = exchange(client, meter, client.associate())
    assert isinstance(event, Associated)
    return client


# ---------------------------------------------------------------- block transfer


@settings(max_examples=60, deadline=None)
@given(size=st.integers(0, 3000), max_pdu=st.integers(12, 1500), ciphered=st.booleans())
def test_get_of_any_size_round_trips_through_blocks(
    size: int, max_pdu: int, ciphered: bool
) -> None:
    meter = Meter()
    value = axdr.encode(axdr.octets(bytes(i % 251 for i in range(size))))
    meter.values[(InterfaceClass.PROFILE_GENERIC, OBIS, 2)] = value
    client = associate(meter, max_pdu=max_pdu, security=security_context() if ciphered else None)
    event, trips = exchange(client, meter, client.get(InterfaceClass.PROFILE_GENERIC, OBIS, 2))
    assert event == Value(value)
    if ciphered:
        return  # the ciphering overhead is outside the client's PDU budget here
    if 4 + len(value) <= max_pdu:
        assert trips == 1
    else:
        room = max_pdu - 9
        block = room - 1 if room - 1 < 0x80 else room - 2 if room - 2 < 0x100 else room - 3
        assert trips == -(-len(value) // max(1, block))


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 400), min_size=1, max_size=8),
    missing=st.integers(0, 8),
    max_pdu=st.integers(40, 600),
)
def test_get_with_list_in_blocks_keeps_every_item_and_error(
    sizes: list[int], missing: int, max_pdu: int
) -> None:
    meter = Meter()
    items = []
    expected: list[bytes | int] = []
    for i, size in enumerate(sizes):
        obis = bytes((1, 0, i, 8, 0, 255))
        items.append((InterfaceClass.REGISTER, obis, 2))
        if i == missing:
            expected.append(DataAccessResult.OBJECT_UNDEFINED)
            continue
        value = axdr.encode(axdr.octets(bytes([i]) * size))
        meter.values[(InterfaceClass.REGISTER, obis, 2)] = value
        expected.append(value)
    client = associate(meter, max_pdu=max_pdu)
    assert client.with_list
    event, _ = exchange(client, meter, client.get_many(items))
    assert event == Values(expected)


def test_a_block_out_of_order_is_a_protocol_error() -> None:
    meter = Meter()
    client = associate(meter)
    client.get(InterfaceClass.PROFILE_GENERIC, OBIS, 2)
    first = client.receive(build_get_response_block(1, 1, False, b"\x09\x10"))
    assert isinstance(first, Send)
    with pytest.raises(ProtocolError, match="block 3 after 1"):
        client.receive(build_get_response_block(1, 3, True, b"\x00" * 14))


def test_the_meter_refuses_a_get_next_for_the_wrong_block() -> None:
    meter = Meter()
    meter.values[(InterfaceClass.PROFILE_GENERIC, OBIS, 2)] = axdr.encode(axdr.octets(bytes(500)))
    client = associate(meter, max_pdu=100)
    first = client.receive(meter.answer(client.get(InterfaceClass.PROFILE_GENERIC, OBIS, 2)))
    assert isinstance(first, Send)
    wrong = first.apdu[:-4] + (7).to_bytes(4, "big")  # ask for the block after block 7
    with pytest.raises(DataAccessError) as failure:
        client.receive(meter.answer(wrong))
    assert failure.value.result == DataAccessResult.DATA_BLOCK_NUMBER_INVALID


# ---------------------------------------------------------------- SET, ACTION, release


def test_set_action_and_release() -> None:
    meter = Meter()
    client = associate(meter, authentication="lls", password=b"secret")
    assert meter.server.mechanism == 1
    value = axdr.encode(axdr.u32(7))
    event, _ = exchange(client, meter, client.set(InterfaceClass.DATA, OBIS, 2, value))
    assert event == Done() and meter.set_log == [value]
    event, _ = exchange(client, meter, client.action(InterfaceClass.DATA, OBIS, 1, value))
    assert event == Done(value)
    event, _ = exchange(client, meter, client.release())
    assert event == Released(0)
    assert meter.server.released and not meter.server.associated


def test_a_wrong_lls_password_is_refused_with_its_diagnostic() -> None:
    meter = Meter()
    client = ClientAssociation(authentication="lls", password=b"wrong")
    with pytest.raises(AuthenticationFailed) as failure:
        exchange(client, meter, client.associate())
    assert failure.value.diagnostic == AcseDiagnostic.AUTHENTICATION_FAILURE


def test_a_request_before_the_association_is_refused_on_the_client() -> None:
    with pytest.raises(ProtocolError, match="no association"):
        ClientAssociation().get(InterfaceClass.CLOCK, OBIS, 2)


# ---------------------------------------------------------------- HLS-GMAC and ciphering


def test_hls_gmac_runs_passes_3_and_4_with_the_injected_challenges() -> None:
    meter = Meter()
    security = security_context()
    client = ClientAssociation(authentication="hls-gmac", security=security)
    aarq = client.associate()
    assert b"C" * 16 in aarq  # the client challenge (CtoS) is the injected one
    aare = meter.answer(aarq)
    assert b"S" * 16 in aare and meter.server.hls_pending
    pass3 = client.receive(aare)
    assert isinstance(pass3, Send)
    event = client.receive(meter.answer(pass3.apdu))
    assert isinstance(event, Associated) and not meter.server.hls_pending
    meter.values[(InterfaceClass.CLOCK, OBIS, 2)] = axdr.encode(axdr.u16(5))
    got, _ = exchange(client, meter, client.get(InterfaceClass.CLOCK, OBIS, 2))
    assert got == Value(axdr.encode(axdr.u16(5)))


def test_the_same_randomness_gives_the_same_bytes_in_both_roles() -> None:
    def transcript() -> list[bytes]:
        meter = Meter()
        client = ClientAssociation(authentication="hls-gmac", security=security_context())
        out, apdu = [], client.associate()
        while True:
            answer = meter.answer(apdu)
            out += [apdu, answer]
            event = client.receive(answer)
            if not isinstance(event, Send):
                return out
            apdu = event.apdu

    assert transcript() == transcript()


def test_wrong_keys_are_refused_as_key_rejected() -> None:
    meter = Meter(keys=SecurityKeys(bytes(16), bytes(16)))
    client = ClientAssociation(security=security_context())
    with pytest.raises(KeyRejected):
        exchange(client, meter, client.associate())


def test_a_replayed_invocation_counter_is_refused_with_the_expected_one() -> None:
    meter = Meter()
    store = MemoryCounterStore(start=1)
    associate(meter, security=security_context(store))
    store.next = 1  # a client that lost its counters starts again from 0
    client = ClientAssociation(security=security_context(store))
    with pytest.raises(InvocationCounterRejected) as failure:
        exchange(client, meter, client.associate())
    assert failure.value.expected == meter.counters.client_invocation_counter + 1


def test_a_plain_request_on_a_ciphered_association_is_refused() -> None:
    meter = Meter()
    associate(meter, security=security_context())
    answer = meter.answer(build_get(1, InterfaceClass.CLOCK, OBIS, 2))
    assert decode_response(answer) == ExceptionResult(
        StateError.SERVICE_NOT_ALLOWED, ServiceErrorCode.OPERATION_NOT_POSSIBLE
    )


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=120), associated=st.booleans())
def test_the_server_answers_any_bytes_without_raising(data: bytes, associated: bool) -> None:
    meter = Meter()
    if associated:
        associate(meter)
    event = meter.server.receive(data)
    assert isinstance(event, Reply | Serve)
    if isinstance(event, Reply) and event.apdu is not None:
        decode_response(event.apdu)  # whatever it says, it is a well-formed APDU


@settings(max_examples=300, deadline=None)
@given(data=st.binary(min_size=1, max_size=120))
def test_the_client_raises_only_dlms_errors_on_any_answer(data: bytes) -> None:
    meter = Meter()
    client = associate(meter)
    client.get(InterfaceClass.CLOCK, OBIS, 2)
    try:
        client.receive(data)
    except DlmsError:
        pass
