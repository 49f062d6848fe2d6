"""Hypothesis properties of protocols.apdu: encode/decode round trips and robustness."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import axdr
from protocols import xdlms as A
from protocols.errors import DecodeError

invoke_ids = st.integers(0, 15)
class_ids = st.integers(0, 0xFFFF)
obis_codes = st.binary(min_size=6, max_size=6)
members = st.integers(0, 255)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
stamps = st.binary(min_size=12, max_size=12)
columns = st.builds(A.ColumnRef, class_ids, obis_codes, members, u16)
entry_access = st.builds(A.EntryAccess, u32, u32, u16, u16)
range_access = st.builds(A.RangeAccess, columns, stamps, stamps, st.lists(columns, max_size=3))
accesses = st.none() | entry_access | range_access
values = st.one_of(
    st.integers(0, 0xFFFFFFFF).map(axdr.u32),
    st.integers(-(2**15), 2**15 - 1).map(axdr.i16),
    st.binary(max_size=300).map(axdr.octets),
    st.lists(st.integers(0, 255).map(axdr.u8), max_size=5).map(axdr.array),
).map(axdr.encode)
results = st.integers(0, 255)

LN_CONFORMANCE_MASK = 0x62FEDF  # every bit dlms-cosem's Conformance models
conformances = st.integers(0, 0xFFFFFF).map(lambda c: c & LN_CONFORMANCE_MASK)
mechanisms = st.sampled_from(sorted(A.AUTHENTICATION_MECHANISMS))


@settings(max_examples=200, deadline=None)
@given(invoke_ids, class_ids, obis_codes, members, accesses)
def test_get_request_round_trip(
    invoke_id: int, class_id: int, obis: bytes, attribute: int, access: A.AccessSelection | None
) -> None:
    built = A.build_get(invoke_id, class_id, obis, attribute, access)
    assert A.decode_request(built) == A.GetRequest(invoke_id, class_id, obis, attribute, access)


@settings(max_examples=100, deadline=None)
@given(
    invoke_ids,
    st.lists(st.tuples(class_ids, obis_codes, members, accesses), min_size=1, max_size=6),
)
def test_get_with_list_round_trip(
    invoke_id: int, items: list[tuple[int, bytes, int, A.AccessSelection | None]]
) -> None:
    built = A.build_get_with_list(invoke_id, items)
    assert A.decode_request(built) == A.GetListRequest(invoke_id, items)


@settings(max_examples=100, deadline=None)
@given(invoke_ids, u32)
def test_get_next_round_trip(invoke_id: int, block: int) -> None:
    assert A.decode_request(A.build_get_next(invoke_id, block)) == A.GetNextRequest(
        invoke_id, block
    )


@settings(max_examples=150, deadline=None)
@given(invoke_ids, class_ids, obis_codes, members, values, st.none() | entry_access)
def test_set_request_round_trip(
    invoke_id: int,
    class_id: int,
    obis: bytes,
    attribute: int,
    value: bytes,
    access: A.EntryAccess | None,
) -> None:
    built = A.build_set(invoke_id, class_id, obis, attribute, value, access)
    expected = A.SetRequest(invoke_id, class_id, obis, attribute, value, access)
    assert A.decode_request(built) == expected


@settings(max_examples=150, deadline=None)
@given(invoke_ids, class_ids, obis_codes, members, st.none() | values)
def test_action_request_round_trip(
    invoke_id: int, class_id: int, obis: bytes, method: int, value: bytes | None
) -> None:
    built = A.build_action(invoke_id, class_id, obis, method, value)
    assert A.decode_request(built) == A.ActionRequest(invoke_id, class_id, obis, method, value)


@settings(max_examples=200, deadline=None)
@given(invoke_ids, values, results, u32, st.booleans(), st.binary(max_size=600))
def test_get_responses_round_trip(
    invoke_id: int, value: bytes, result: int, block: int, last: bool, raw: bytes
) -> None:
    assert A.decode_response(A.build_get_response(invoke_id, value)) == A.GetResult(
        invoke_id, value
    )
    assert A.decode_response(A.build_get_response_error(invoke_id, result)) == A.GetError(
        invoke_id, result
    )
    assert A.decode_response(A.build_get_response_block(invoke_id, block, last, raw)) == (
        A.GetBlock(invoke_id, block, last, raw)
    )
    assert A.decode_response(A.build_get_response_block_error(invoke_id, block, result)) == (
        A.GetError(invoke_id, result)
    )


@settings(max_examples=150, deadline=None)
@given(invoke_ids, st.lists(values | results, max_size=8))
def test_get_list_response_round_trip(invoke_id: int, items: list[bytes | int]) -> None:
    built = A.build_get_list_response(invoke_id, items)
    assert A.decode_response(built) == A.GetListResult(invoke_id, items)


@settings(max_examples=150, deadline=None)
@given(invoke_ids, results, st.none() | values)
def test_set_and_action_responses_round_trip(
    invoke_id: int, result: int, value: bytes | None
) -> None:
    assert A.decode_response(A.build_set_response(invoke_id, result)) == A.SetResult(
        invoke_id, result
    )
    assert A.decode_response(A.build_action_response(invoke_id, result, value)) == (
        A.ActionResult(invoke_id, result, value)
    )


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 0xFFFFFF), st.none() | stamps, values)
def test_data_notification_round_trip(long_id: int, stamp: bytes | None, body: bytes) -> None:
    built = A.build_data_notification(long_id, body, stamp)
    assert A.decode_response(built) == A.DataNotification(long_id, stamp, body)


@settings(max_examples=100, deadline=None)
@given(
    mechanisms,
    st.binary(min_size=1, max_size=64),
    u16,
    conformances,
    st.none() | st.binary(min_size=8, max_size=8),
)
def test_aarq_round_trip(
    authentication: A.Authentication,
    secret: bytes,
    max_pdu: int,
    conformance: int,
    system_title: bytes | None,
) -> None:
    password = None if authentication == "none" else secret
    built = A.build_aarq(
        authentication=authentication,
        password=password,
        max_pdu_size=max_pdu,
        conformance=conformance,
        system_title=system_title,
    )
    assert A.decode_request(built) == A.AarqInfo(
        mechanism=A.AUTHENTICATION_MECHANISMS[authentication],
        calling_auth_value=password,
        system_title=system_title,
        proposed_conformance=conformance,
        client_max_pdu_size=max_pdu,
        dlms_version=6,
    )


@settings(max_examples=100, deadline=None)
@given(
    st.booleans(),
    st.sampled_from([0, 1, 2, 11, 13, 14]),
    conformances,
    u16,
    st.none() | st.binary(min_size=8, max_size=8),
    st.none() | st.binary(min_size=8, max_size=64),
)
def test_aare_round_trip(
    accepted: bool,
    diagnostic: int,
    conformance: int,
    max_pdu: int,
    system_title: bytes | None,
    challenge: bytes | None,
) -> None:
    built = A.build_aare(
        accepted=accepted,
        diagnostic=diagnostic,
        conformance=conformance,
        max_pdu_size=max_pdu,
        authentication="none" if challenge is None else "hls-gmac",
        system_title=system_title,
        challenge=challenge,
    )
    assert A.parse_aare(built) == A.AareInfo(
        accepted=accepted,
        result=0 if accepted else 1,
        diagnostic=diagnostic,
        negotiated_conformance=conformance,
        server_max_pdu_size=max_pdu,
        dlms_version=6,
        responding_system_title=system_title,
        challenge=challenge,
        mechanism=None if challenge is None else 5,
    )


# ---------------------------------------------------------------- robustness

TAGS = [0x60, 0x61, 0x62, 0x63, 0xC0, 0xC1, 0xC3, 0xC4, 0xC5, 0xC7, 0xD8, 0x0E, 0x0F]

SAMPLES = [
    A.build_aarq(authentication="lls", password=b"12345678", system_title=b"ABCDEFGH"),
    A.build_aare(accepted=True, conformance=0x501F, max_pdu_size=500, system_title=b"MTR00001"),
    A.build_aare(accepted=False, diagnostic=1, conformance=0, max_pdu_size=0, initiate_error=1),
    A.build_rlrq(),
    A.build_rlre(),
    A.build_get(1, 8, bytes(6), 2),
    A.build_get(
        2,
        7,
        bytes(6),
        2,
        A.RangeAccess(
            A.ColumnRef(8, bytes(6), 2, 0), bytes(12), bytes(12), [A.ColumnRef(3, bytes(6), 2, 0)]
        ),
    ),
    A.build_get(3, 7, bytes(6), 2, A.EntryAccess(1, 5)),
    A.build_get_next(1, 2),
    A.build_get_with_list(1, [(8, bytes(6), 2, None), (7, bytes(6), 2, A.EntryAccess(1))]),
    A.build_set(1, 8, bytes(6), 2, b"\x09\x02\x00\x00"),
    A.build_action(1, 70, bytes(6), 1, b"\x0f\x00"),
    A.build_get_response(1, b"\x02\x02\x12\x00\x01\x09\x01\x00"),
    A.build_get_response_block(1, 1, False, bytes(300)),
    A.build_get_list_response(1, [b"\x12\x00\x01", 4, b"\x01\x01\x11\x00"]),
    A.build_action_response(1, 0, b"\x12\x00\x01"),
    A.build_exception_response(1, 2),
    A.build_data_notification(5, b"\x12\x00\x01", bytes(12)),
]


def _decode_or_error(data: bytes) -> None:
    for decoder in (A.decode_response, A.decode_request, A.parse_aare):
        try:
            result = decoder(data)
        except DecodeError:
            continue
        assert result is not None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_arbitrary_bytes_decode_or_decode_error(data: bytes) -> None:
    _decode_or_error(data)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(TAGS), st.binary(max_size=80))
def test_tagged_garbage_decode_or_decode_error(tag: int, tail: bytes) -> None:
    _decode_or_error(bytes((tag,)) + tail)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif kind == "delete" and data:
            del data[pos]
        else:
            del data[pos:]
    return bytes(data)


@settings(max_examples=300, deadline=None)
@given(mutated())
def test_mutated_encodings_decode_or_decode_error(data: bytes) -> None:
    _decode_or_error(data)
