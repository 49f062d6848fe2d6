"""Byte-exact vectors and full-circle round trips for protocols.xdlms.

Sources of the vectors (cited next to each):
- GB: DLMS UA 1000-2 Green Book encoding examples, as carried in dlms-cosem's test-suite
  (u9n/dlms-cosem tests/test_asce/test_aarq.py says "Example encodings from DLMS Green
  Book v10: page 444"; tests/test_asce/test_aare.py likewise).
- DC: u9n/dlms-cosem test-suite (tests/test_xdlms/*.py, tests/test_asce/*.py).
- GX: bytes produced by Gurux's client (gurux-dlms for Python, GXDLMSClient.aarqRequest /
  readRowsByEntry / readRowsByRange / read, wrapper header stripped).
"""

from __future__ import annotations

import pytest
from dlms_cosem.protocol import xdlms as dc_xdlms

from protocols import xdlms as A
from protocols.enums import AcseDiagnostic
from protocols.errors import DecodeError

CLOCK = bytes.fromhex("0000010000FF")
LOAD_PROFILE = bytes.fromhex("0100630100FF")

# GB: AARQ, LN no ciphering, LLS password "12345678", conformance 007E1F, max PDU 1200.
AARQ_LLS = bytes.fromhex(
    "6036A1090607608574050801018A0207808B0760857405080201AC0A80083132333435363738"
    "BE10040E01000000065F1F0400007E1F04B0"
)
# GB: the same AARQ without security.
AARQ_NONE = bytes.fromhex("601DA109060760857405080101BE10040E01000000065F1F0400007E1F04B0")
# DC (test_aarq.py, test_encode_no_ciphering_high_security): HLS-GMAC with CtoS "K56iVagY".
AARQ_HLS = bytes.fromhex(
    "6036A1090607608574050801018A0207808B0760857405080205AC0A80084B35366956616759"
    "BE10040E01000000065F1F0400007E1F04B0"
)
# GX: GXDLMSClient(True, 16, 1, Authentication.LOW, "12345678", WRAPPER).aarqRequest().
AARQ_GURUX = bytes.fromhex(
    "6036A1090607608574050801018A0207808B0760857405080201AC0A80083132333435363738"
    "BE10040E01000000065F1F0400401E5DFFFF"
)
# DC (test_aarq.py, test_parse_ciphered_low_security2): ciphered context, system title.
AARQ_CIPHERED = bytes.fromhex(
    "6066a109060760857405080103a60a04084D4D4D0000BC614E8a0207808b0760857405080201"
    "ac0a80083132333435363738be34043221303001234567801302FF8A7874133D414CED25B425"
    "34D28DB0047720606B175BD52211BE6841DB204D39EE6FDB8E356855"
)

# GB: AARE accepted, conformance 00501F, server max PDU 500.
AARE_OK = bytes.fromhex(
    "6129A109060760857405080101A203020100A305A103020100BE10040E0800065F1F040000501F01F40007"
)
# GB: AARE rejected-permanent, application-context-name-not-supported (2).
AARE_CONTEXT = bytes.fromhex(
    "6129A109060760857405080101A203020101A305A103020102BE10040E0800065F1F040000501F01F40007"
)
# GB: AARE rejected, no-reason-given, ConfirmedServiceError initiateError dlms-version-too-low.
AARE_VERSION = bytes.fromhex("611FA109060760857405080101A203020101A305A103020101BE0604040E010601")
# DC (test_aare.py, test_no_ciher_hls_ok): HLS-GMAC, authentication-required, StoC "P6wRJ21F".
AARE_HLS = bytes.fromhex(
    "6142A109060760857405080101A203020100A305A10302010E88020780890760857405080205"
    "AA0A8008503677524A323146BE10040E0800065F1F040000501F01F40007"
)


# ---------------------------------------------------------------- ACSE


def test_aarq_lls_green_book_vector() -> None:
    built = A.build_aarq(
        authentication="lls", password=b"12345678", max_pdu_size=1200, conformance=0x007E1F
    )
    assert built == AARQ_LLS
    info = A.decode_request(AARQ_LLS)
    assert info == A.AarqInfo(
        mechanism=1,
        calling_auth_value=b"12345678",
        system_title=None,
        proposed_conformance=0x007E1F,
        client_max_pdu_size=1200,
        dlms_version=6,
    )


def test_aarq_no_security_green_book_vector() -> None:
    assert A.build_aarq(max_pdu_size=1200, conformance=0x007E1F) == AARQ_NONE
    info = A.decode_request(AARQ_NONE)
    assert isinstance(info, A.AarqInfo)
    assert (info.mechanism, info.calling_auth_value) == (0, None)


def test_aarq_hls_vector_carries_mechanism_and_challenge() -> None:
    built = A.build_aarq(
        authentication="hls-gmac", password=b"K56iVagY", max_pdu_size=1200, conformance=0x7E1F
    )
    assert built == AARQ_HLS
    info = A.decode_request(AARQ_HLS)
    assert isinstance(info, A.AarqInfo)
    assert (info.mechanism, info.calling_auth_value) == (5, b"K56iVagY")


def test_aarq_gurux_vector() -> None:
    built = A.build_aarq(authentication="lls", password=b"12345678", conformance=0x401E5D)
    assert built == AARQ_GURUX


def test_aarq_ciphered_context_keeps_system_title_and_ciphered_initiate() -> None:
    info = A.decode_request(AARQ_CIPHERED)
    assert isinstance(info, A.AarqInfo)
    assert info.ciphered
    assert info.system_title == bytes.fromhex("4D4D4D0000BC614E")
    assert info.calling_auth_value == b"12345678"
    assert info.ciphered_initiate is not None and info.ciphered_initiate[0] == 0x21


def test_aarq_keeps_high_conformance_bits() -> None:
    # dlms-cosem's InitiateRequest.from_bytes drops bits 16-23; ours must not.
    built = A.build_aarq(conformance=0x601E1D)  # + general-protection, general-block-transfer
    info = A.decode_request(built)
    assert isinstance(info, A.AarqInfo)
    assert info.proposed_conformance == 0x601E1D


def test_aarq_system_title_round_trip() -> None:
    built = A.build_aarq(system_title=b"HES00001")
    info = A.decode_request(built)
    assert isinstance(info, A.AarqInfo)
    assert info.system_title == b"HES00001"
    assert info.proposed_conformance == A.DEFAULT_CONFORMANCE
    assert info.client_max_pdu_size == 0xFFFF


@pytest.mark.parametrize(
    "kwargs",
    [
        {"authentication": "lls"},
        {"authentication": "none", "password": b"x"},
        {"authentication": "kerberos", "password": b"x"},
        {"max_pdu_size": 0x10000},
        {"conformance": 0x100000},  # "read" (SN) is not an LN conformance bit
    ],
)
def test_aarq_builder_rejects_bad_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        A.build_aarq(**kwargs)  # type: ignore[arg-type]


def test_aare_accepted_green_book_vector() -> None:
    info = A.parse_aare(AARE_OK)
    assert info == A.AareInfo(
        accepted=True,
        result=0,
        diagnostic=0,
        negotiated_conformance=0x00501F,
        server_max_pdu_size=500,
        dlms_version=6,
    )
    assert A.build_aare(accepted=True, conformance=0x00501F, max_pdu_size=500) == AARE_OK
    assert A.decode_response(AARE_OK) == info


def test_aare_rejected_context_green_book_vector() -> None:
    info = A.parse_aare(AARE_CONTEXT)
    assert (info.accepted, info.result, info.diagnostic) == (False, 1, 2)
    built = A.build_aare(
        accepted=False,
        diagnostic=AcseDiagnostic.APPLICATION_CONTEXT_NAME_NOT_SUPPORTED,
        conformance=0x00501F,
        max_pdu_size=500,
    )
    assert built == AARE_CONTEXT


def test_aare_initiate_error_green_book_vector() -> None:
    info = A.parse_aare(AARE_VERSION)
    assert (info.accepted, info.diagnostic, info.initiate_error) == (False, 1, 1)
    built = A.build_aare(
        accepted=False, diagnostic=1, conformance=0, max_pdu_size=0, initiate_error=1
    )
    assert built == AARE_VERSION


def test_aare_hls_vector() -> None:
    info = A.parse_aare(AARE_HLS)
    assert info.accepted
    assert info.diagnostic == AcseDiagnostic.AUTHENTICATION_REQUIRED
    assert (info.mechanism, info.challenge) == (5, b"P6wRJ21F")
    built = A.build_aare(
        accepted=True,
        diagnostic=AcseDiagnostic.AUTHENTICATION_REQUIRED,
        conformance=0x00501F,
        max_pdu_size=500,
        authentication="hls-gmac",
        challenge=b"P6wRJ21F",
    )
    assert built == AARE_HLS


def test_aare_authentication_failure_round_trip() -> None:
    built = A.build_aare(
        accepted=False,
        diagnostic=AcseDiagnostic.AUTHENTICATION_FAILURE,
        conformance=A.DEFAULT_CONFORMANCE,
        max_pdu_size=1024,
        system_title=b"METER001",
    )
    info = A.parse_aare(built)
    assert not info.accepted
    assert info.diagnostic == 13
    assert info.responding_system_title == b"METER001"
    assert info.negotiated_conformance == A.DEFAULT_CONFORMANCE


def test_parse_aare_rejects_other_apdus() -> None:
    with pytest.raises(DecodeError):
        A.parse_aare(bytes.fromhex("6303800100"))
    with pytest.raises(DecodeError):
        A.parse_aare(AARE_OK[:-3])


def test_release_vectors() -> None:
    # DC (test_rlrq.py / test_rlre.py): reason normal, no user-information.
    assert A.build_rlrq() == bytes.fromhex("6203800100")
    assert A.build_rlre() == bytes.fromhex("6303800100")
    assert A.decode_request(bytes.fromhex("6203800100")) == A.ReleaseRequest(0)
    assert A.decode_response(bytes.fromhex("6303800100")) == A.ReleaseResponse(0)
    assert A.decode_request(b"\x62\x00") == A.ReleaseRequest(None)
    assert A.decode_response(b"\x63\x00") == A.ReleaseResponse(None)
    # DC (test_rlre.py, test_with_initiate_response).
    rlre = bytes.fromhex("6316800100BE11040F080100065F1F0400001E1D04C80007")
    assert A.decode_response(rlre) == A.ReleaseResponse(0)


# ---------------------------------------------------------------- GET


def test_get_request_vectors() -> None:
    # DC (test_get.py, TestGetRequestNormal): data 0.0.43.1.0.255 attribute 2.
    vector = bytes.fromhex("C001C1000100002B0100FF0200")
    assert A.build_get(1, 1, bytes.fromhex("00002B0100FF"), 2) == vector
    assert A.decode_request(vector) == A.GetRequest(1, 1, bytes.fromhex("00002B0100FF"), 2)
    # GX: GXDLMSClient.read(GXDLMSData("0.0.42.0.0.255"), 2).
    assert A.build_get(1, 1, (0, 0, 42, 0, 0, 255), 2) == bytes.fromhex(
        "C001C1000100002A0000FF0200"
    )
    # Clock time, the request of the brief: class 8, 0.0.1.0.0.255, attribute 2.
    assert A.build_get(1, 8, CLOCK, 2) == bytes.fromhex("C001C100080000010000FF0200")


def test_get_next_vector() -> None:
    # DC (test_get.py, TestGetRequestNext).
    assert A.build_get_next(1, 1) == bytes.fromhex("C002C100000001")
    assert A.decode_request(bytes.fromhex("C002C100000001")) == A.GetNextRequest(1, 1)


def test_get_with_list_vector() -> None:
    # DC (test_get.py, TestGetRequestWithList): 0.0.42.0.0.255/2 and clock/2.
    vector = bytes.fromhex("C003C102000100002A0000FF020000080000010000FF0200")
    items: list[A.GetListItem] = [(1, bytes.fromhex("00002A0000FF"), 2, None), (8, CLOCK, 2, None)]
    assert A.build_get_with_list(1, items) == vector
    assert A.decode_request(vector) == A.GetListRequest(1, items)


def test_entry_access_gurux_vector() -> None:
    # GX: readRowsByEntry(ProfileGeneric 1.0.99.1.0.255, index=1, count=10).
    vector = bytes.fromhex("C001C100070100630100FF02010202040600000001060000000A120001120000")
    access = A.EntryAccess(from_entry=1, to_entry=10, from_column=1, to_column=0)
    assert A.build_get(1, 7, LOAD_PROFILE, 2, access) == vector
    assert A.decode_request(vector) == A.GetRequest(1, 7, LOAD_PROFILE, 2, access)


def test_range_access_gurux_vector() -> None:
    # GX: readRowsByRange(1.0.99.1.0.255, 2017-10-01 00:00, 2017-10-01 01:00), clock column.
    vector = bytes.fromhex(
        "C001C100070100630100FF0201010204020412000809060000010000FF0F02120000"
        "090C07E10A01FF00000000000000090C07E10A01FF010000000000000100"
    )
    access = A.RangeAccess(
        restricting=A.ColumnRef(8, CLOCK, 2, 0),
        from_value=bytes.fromhex("07E10A01FF00000000000000"),
        to_value=bytes.fromhex("07E10A01FF01000000000000"),
    )
    assert A.build_get(1, 7, LOAD_PROFILE, 2, access) == vector
    assert A.decode_request(vector) == A.GetRequest(1, 7, LOAD_PROFILE, 2, access)


def test_range_access_dlms_cosem_vector() -> None:
    # DC (test_selective_access.py, test_parse_range_descriptor): 01.10.2017 00:00-01:00.
    vector = bytes.fromhex(
        "C001C100070100630100FF0201010204020412000809060000010000FF0F02120000"
        "090C07E10A010700000000FFC480090C07E10A010701000000FFC4800100"
    )
    request = A.decode_request(vector)
    assert isinstance(request, A.GetRequest)
    assert isinstance(request.access, A.RangeAccess)
    assert request.access.from_value == bytes.fromhex("07E10A010700000000FFC480")
    assert request.access.selected_columns == []
    assert A.build_get(1, 7, LOAD_PROFILE, 2, request.access) == vector


def test_range_access_with_selected_columns_and_date_time_tag() -> None:
    stamp = bytes.fromhex("07E80301FF000000008000FF")
    columns = [A.ColumnRef(8, CLOCK, 2, 0), A.ColumnRef(3, bytes.fromhex("0100010800FF"), 2, 0)]
    access = A.RangeAccess(A.ColumnRef(8, CLOCK, 2, 0), stamp, stamp, columns)
    built = A.build_get(3, 7, LOAD_PROFILE, 2, access)
    assert A.decode_request(built) == A.GetRequest(3, 7, LOAD_PROFILE, 2, access)
    # Some meters send the bounds as date-time (tag 25) rather than octet-string.
    tagged = built.replace(b"\x09\x0c" + stamp, b"\x19" + stamp)
    assert A.decode_request(tagged) == A.GetRequest(3, 7, LOAD_PROFILE, 2, access)


def test_get_response_vectors() -> None:
    # DC (test_get.py, TestGetResponseNormal): double-long-unsigned 5009.
    assert A.decode_response(bytes.fromhex("C401C1000600001391")) == A.GetResult(
        1, bytes.fromhex("0600001391")
    )
    assert A.build_get_response(1, bytes.fromhex("0600001391")) == bytes.fromhex(
        "C401C1000600001391"
    )
    # DC: GetResponseNormalWithError, hardware-fault.
    assert A.decode_response(bytes.fromhex("C401C10101")) == A.GetError(1, 1)
    assert A.build_get_response_error(1, 1) == bytes.fromhex("C401C10101")
    # DC: GetResponseLastBlockWithError, block 19, hardware-fault.
    last_error = bytes.fromhex("C402C101000000130101")
    assert A.decode_response(last_error) == A.GetError(1, 1)
    assert A.build_get_response_block_error(1, 19, 1) == last_error


@pytest.mark.parametrize("wrapped", ["0102", "1602"])
def test_block_data_access_result_wrapped_by_a_meter_is_still_that_result(wrapped: str) -> None:
    # Seen from meters: the DataBlock-G data-access-result length-prefixed like raw-data,
    # or as a typed A-XDR enum. Anything longer stays a decode error.
    assert A.decode_response(bytes.fromhex("C402C1000000000201" + wrapped)) == A.GetError(1, 2)
    with pytest.raises(DecodeError):
        A.decode_response(bytes.fromhex("C402C1000000000201" + wrapped + "00"))


def test_get_response_with_list_vector() -> None:
    # DC (test_get.py, TestGetResponseWithList): two octet-strings.
    vector = (
        b"\xc4\x03\xc1\x02\x00\t\x10ISK1030777764366"
        b"\x00\t\x0c\x07\xe5\x06\x03\x04\x0e\t\x17\x00\xff\xc4\x00"
    )
    first = b"\t\x10ISK1030777764366"
    second = b"\t\x0c\x07\xe5\x06\x03\x04\x0e\t\x17\x00\xff\xc4\x00"
    assert A.decode_response(vector) == A.GetListResult(1, [first, second])
    assert A.build_get_list_response(1, [first, second]) == vector


def test_get_response_with_list_mixes_values_and_errors() -> None:
    built = A.build_get_list_response(7, [b"\x12\x00\x05", 4, b"\x00", 250])
    assert A.decode_response(built) == A.GetListResult(7, [b"\x12\x00\x05", 4, b"\x00", 250])


def test_get_blocks_round_trip_including_long_lengths() -> None:
    for size in (0, 1, 0x7F, 0x80, 0xFF, 0x100, 0x1234):
        raw = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
        for last in (False, True):
            built = A.build_get_response_block(5, 0x01020304, last, raw)
            assert A.decode_response(built) == A.GetBlock(5, 0x01020304, last, raw)


def test_get_block_matches_dlms_cosem_encoder() -> None:
    raw = bytes(range(200))
    ours = A.build_get_response_block(1, 3, False, raw)
    theirs = dc_xdlms.GetResponseWithBlock(raw, 3, dc_xdlms.InvokeIdAndPriority(1)).to_bytes()
    assert ours == theirs
    ours_last = A.build_get_response_block(1, 4, True, raw)
    theirs_last = dc_xdlms.GetResponseLastBlock(raw, 4, dc_xdlms.InvokeIdAndPriority(1))
    assert ours_last == theirs_last.to_bytes()


# ---------------------------------------------------------------- SET / ACTION


def test_set_vectors() -> None:
    # DC (test_set.py, TestSetRequestNormal): set clock time to an octet-string date-time.
    value = bytes.fromhex("090C07E50118FF0E303950FFC400")
    vector = bytes.fromhex("C101C100080000010000FF0200") + value
    assert A.build_set(1, 8, CLOCK, 2, value) == vector
    assert A.decode_request(vector) == A.SetRequest(1, 8, CLOCK, 2, value)
    # DC (test_set.py, TestSetResponseNormal).
    assert A.build_set_response(1, 0) == bytes.fromhex("C501C100")
    assert A.decode_response(bytes.fromhex("C501C100")) == A.SetResult(1, 0)


def test_set_with_entry_access_round_trip() -> None:
    access = A.EntryAccess(2, 3)
    built = A.build_set(4, 7, LOAD_PROFILE, 2, b"\x01\x00", access)
    assert A.decode_request(built) == A.SetRequest(4, 7, LOAD_PROFILE, 2, b"\x01\x00", access)


def test_action_vectors() -> None:
    # DC (test_action.py, TestActionRequestNormal): reply_to_HLS_authentication on 0.0.40.0.0.255.
    association = bytes.fromhex("0000280000FF")
    params = bytes.fromhex("09111000001A90E6D2221FA2FD85EED61ACC22")
    vector = bytes.fromhex("C301C0000F0000280000FF0101") + params
    assert A.build_action(0, 15, association, 1, params) == vector
    assert A.decode_request(vector) == A.ActionRequest(0, 15, association, 1, params)
    no_params = bytes.fromhex("C301C0000F0000280000FF0100")
    assert A.build_action(0, 15, association, 1) == no_params
    assert A.decode_request(no_params) == A.ActionRequest(0, 15, association, 1, None)
    # DC (test_action.py, TestActionResponse*).
    assert A.decode_response(bytes.fromhex("C701C00000")) == A.ActionResult(0, 0)
    assert A.build_action_response(0, 0) == bytes.fromhex("C701C00000")
    returned = bytes.fromhex("09111000001AFDE8857B728A3499106AA665D1")
    with_data = bytes.fromhex("C701C0000100") + returned
    assert A.decode_response(with_data) == A.ActionResult(0, 0, returned)
    assert A.build_action_response(0, 0, returned) == with_data
    assert A.decode_response(bytes.fromhex("C701C0000101FA")) == A.ActionResult(
        0, 0, data_error=250
    )


# ---------------------------------------------------------------- other responses


def test_exception_and_service_error() -> None:
    built = A.build_exception_response(1, 2)
    assert built == bytes.fromhex("D80102")
    assert A.decode_response(built) == A.ExceptionResult(1, 2)
    assert A.decode_response(bytes.fromhex("D8010600000102")) == A.ExceptionResult(1, 6, 258)
    # ConfirmedServiceError: initiateError(1), service(3)... here initiate/other (6, 0).
    assert A.decode_response(bytes.fromhex("0E010600")) == A.ServiceErrorResult(1, 6, 0)


def test_data_notification_vector() -> None:
    # DC (test_data_notification.py): no date-time, body is a structure of values.
    vector = bytes.fromhex(
        "0F000001DB000922125A8591360000000049000000110000000A5A8513D01480000000000D0000000A0100"
    )
    decoded = A.decode_response(vector)
    assert decoded == A.DataNotification(0x1DB, None, vector[6:])
    assert A.build_data_notification(0x1DB, vector[6:]) == vector
    stamp = bytes.fromhex("07E80301FF0C00000080 00FF".replace(" ", ""))
    built = A.build_data_notification(7, b"\x12\x00\x01", stamp)
    assert A.decode_response(built) == A.DataNotification(7, stamp, b"\x12\x00\x01")


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00",
        b"\xc4",
        b"\xc4\x01\xc1",
        b"\xc4\x01\xc1\x00",  # data choice without a value
        b"\xc4\x01\xc1\x02\x00",  # bad Get-Data-Result choice
        b"\xc4\x01\xc1\x01\x01\x01",  # trailing byte after error
        b"\xc4\x02\xc1\x00\x00\x00\x00\x01\x00\x05\x01",  # raw-data shorter than length
        b"\xc4\x02\xc1\x00\x00\x00\x00\x01\x00\x85\x01",  # bad length prefix
        b"\xc4\x03\xc1\x02\x00\x12\x00\x01",  # list says 2 items, has 1
        b"\xc4\x03\xc1\x01\x00\xff",  # unknown A-XDR tag in a list item
        b"\xc4\x04\xc1\x00",
        b"\xc5\x01\xc1",
        b"\xc7\x01\xc1\x00\x01\x00",
        b"\xd8\x01",
        b"\x0f\x00\x00\x00\x01\x0c\x07",
        b"\x61\x03\xa1\x01\x00",
        AARE_OK[:-1],
        AARE_OK + b"\x00",
        b"\x63\x03\x80\x01\x07",  # release reason outside the enum
    ],
)
def test_decode_response_rejects_malformed(data: bytes) -> None:
    with pytest.raises(DecodeError):
        A.decode_response(data)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc0\x01\xc1\x00\x08",
        b"\xc0\x01\xc1\x00\x08\x00\x00\x01\x00\x00\xff\x02",  # access flag missing
        b"\xc0\x01\xc1\x00\x08\x00\x00\x01\x00\x00\xff\x02\x00\x00",  # trailing byte
        b"\xc0\x01\xc1\x00\x07\x01\x00\x63\x01\x00\xff\x02\x01\x03",  # selector 3
        b"\xc0\x01\xc1\x00\x07\x01\x00\x63\x01\x00\xff\x02\x01\x02\x02\x04\x06",
        b"\xc0\x02\xc1\x00\x00\x00",
        b"\xc0\x03\xc1\x05\x00\x08",
        b"\xc1\x01\xc1\x00\x08\x00\x00\x01\x00\x00\xff\x02\x00",  # SET without value
        b"\xc1\x02\xc1\x00\x08\x00\x00\x01\x00\x00\xff\x02\x00\x00",
        b"\xc3\x01\xc1\x00\x08\x00\x00\x01\x00\x00\xff\x02\x01",
        AARQ_LLS[:-2],
        AARQ_LLS.replace(bytes.fromhex("0801 01"), bytes.fromhex("080104"), 1),  # SN ciphered
        b"\x60\x00",
        b"\xff\x01",
    ],
)
def test_decode_request_rejects_malformed(data: bytes) -> None:
    with pytest.raises(DecodeError):
        A.decode_request(data)


def test_builders_reject_bad_arguments() -> None:
    with pytest.raises(ValueError):
        A.build_get(16, 8, CLOCK, 2)
    with pytest.raises(ValueError):
        A.build_get(1, 8, b"\x00\x00\x01", 2)
    with pytest.raises(ValueError):
        A.build_get(1, 8, CLOCK, 256)
    with pytest.raises(ValueError):
        A.build_set(1, 8, CLOCK, 2, b"")


# ---------------------------------------------------------------- full circle


def test_full_circle_every_apdu() -> None:
    """client builder -> meter decoder -> meter builder -> client decoder."""
    aarq = A.decode_request(A.build_aarq(authentication="lls", password=b"secret12"))
    assert isinstance(aarq, A.AarqInfo)
    aare = A.decode_response(
        A.build_aare(
            accepted=aarq.calling_auth_value == b"secret12",
            conformance=aarq.proposed_conformance & 0x00FFFF,
            max_pdu_size=min(aarq.client_max_pdu_size, 1024),
        )
    )
    assert isinstance(aare, A.AareInfo)
    assert aare.accepted and aare.server_max_pdu_size == 1024

    get = A.decode_request(A.build_get(2, 3, bytes.fromhex("0100010800FF"), 2))
    assert isinstance(get, A.GetRequest)
    value = b"\x06\x00\x00\x30\x39"
    assert A.decode_response(A.build_get_response(get.invoke_id, value)) == A.GetResult(2, value)

    nxt = A.decode_request(A.build_get_next(3, 1))
    assert isinstance(nxt, A.GetNextRequest)
    assert A.decode_response(
        A.build_get_response_block(nxt.invoke_id, nxt.block_number + 1, True, b"\x01\x02")
    ) == A.GetBlock(3, 2, True, b"\x01\x02")

    lst = A.decode_request(A.build_get_with_list(4, [(8, CLOCK, 2, None), (1, CLOCK, 9, None)]))
    assert isinstance(lst, A.GetListRequest)
    answer = A.build_get_list_response(lst.invoke_id, [b"\x09\x00", 4])
    assert A.decode_response(answer) == A.GetListResult(4, [b"\x09\x00", 4])

    st = A.decode_request(A.build_set(5, 8, CLOCK, 2, b"\x09\x00"))
    assert isinstance(st, A.SetRequest)
    assert A.decode_response(A.build_set_response(st.invoke_id, 3)) == A.SetResult(5, 3)

    act = A.decode_request(A.build_action(6, 70, bytes.fromhex("0000600300FF"), 1, b"\x0f\x00"))
    assert isinstance(act, A.ActionRequest)
    assert A.decode_response(A.build_action_response(act.invoke_id, 0, b"\x03\x01")) == (
        A.ActionResult(6, 0, b"\x03\x01")
    )

    rel = A.decode_request(A.build_rlrq())
    assert isinstance(rel, A.ReleaseRequest)
    assert A.decode_response(A.build_rlre(rel.reason)) == A.ReleaseResponse(0)


# ---------------------------------------------------------------- our own ACSE codec


def _long_form(apdu: bytes) -> bytes:
    """The same AARE with every BER length in long form (81 xx), as Kamstrup OMNIA sends."""
    out, pos = bytearray(), 2
    while pos < len(apdu):
        tag, size = apdu[pos], apdu[pos + 1]
        out += bytes((tag, 0x81, size)) + apdu[pos + 2 : pos + 2 + size]
        pos += 2 + size
    return bytes((apdu[0], 0x81, len(out))) + bytes(out)


def test_aare_with_long_form_ber_lengths_parses_as_the_short_form() -> None:
    for vector in (AARE_OK, AARE_HLS, AARE_VERSION):
        assert A.parse_aare(_long_form(vector)) == A.parse_aare(vector)


def test_aarq_with_a_long_ciphered_initiate_uses_long_form_lengths() -> None:
    glo = bytes((0x21, 0x81, 0x90)) + bytes(0x90)  # a glo-InitiateRequest of 144 bytes
    built = A.build_aarq(system_title=b"HES00001", ciphered=True, user_information=glo)
    assert built[:2] == b"\x60\x81"
    info = A.decode_request(built)
    assert isinstance(info, A.AarqInfo)
    assert info.ciphered and info.ciphered_initiate == glo


def test_initiate_request_with_dedicated_key_and_quality_of_service() -> None:
    plain = A.build_initiate_request(conformance=0x1E1D, max_pdu_size=512, dedicated_key=bytes(16))
    assert plain[:3] == b"\x01\x01\x10"
    info = A.decode_initiate(plain)
    assert (info.conformance, info.max_pdu_size, info.dedicated_key) == (0x1E1D, 512, bytes(16))
    # Built by hand from the Green Book layout: response-allowed FALSE and quality-of-service
    # 5 present (01 xx each), then version 6, conformance and max PDU size.
    with_qos = bytes.fromhex("010001000105065F1F0400001E1D0200")
    assert A.decode_initiate(with_qos) == A.InitiateInfo(0x1E1D, 0x200, 6)


@pytest.mark.parametrize(
    "data",
    [
        AARE_OK.replace(bytes.fromhex("0801"), bytes.fromhex("0804"), 1),  # SN ciphered
        AARE_OK.replace(bytes.fromhex("A203020100"), bytes.fromhex("A203020107"), 1),
        AARE_OK.replace(bytes.fromhex("A1090607"), bytes.fromhex("A1090407"), 1),  # not an OID
        bytes.fromhex("6105A103020100"),  # no result-source-diagnostic
    ],
)
def test_aare_decoder_names_what_is_wrong(data: bytes) -> None:
    with pytest.raises(DecodeError, match="AARE"):
        A.parse_aare(data)
