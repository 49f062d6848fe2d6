"""The words a trace puts on frames and APDUs (``protocols.explain``), pinned for known frames."""

from __future__ import annotations

from protocols.explain import FrameTracer, describe_apdu, wrapper_trace
from protocols.hdlc import LLC_REQUEST, LLC_RESPONSE, FrameKind, HdlcAddress, HdlcFrame
from protocols.hdlc_link import HdlcSettings, encode_parameters
from protocols.wrapper import WrapperPdu

CLIENT = HdlcAddress(16)
METER = HdlcAddress(1, 17)
#: GET-Request-Normal, invoke-id 0xC1, the clock's time (class 8, 0.0.1.0.0.255, attribute 2).
GET_CLOCK = bytes.fromhex("C001C1000800000100 00FF0200".replace(" ", ""))


def test_client_frames_one_line_each() -> None:
    snrm = HdlcFrame(FrameKind.SNRM, METER, CLIENT).encode()
    get = HdlcFrame(FrameKind.I, METER, CLIENT, information=LLC_REQUEST + GET_CLOCK).encode()
    rr = HdlcFrame(FrameKind.RR, METER, CLIENT, recv_seq=2).encode()
    # As a transport writes them: one chunk, split into frames by the tracer.
    assert FrameTracer("tx").feed(snrm + get + rr) == [
        "tx 7e a0 08 02 23 21 93 bd 64 7e  | HDLC SNRM to 1/17 from 16 P/F",
        "tx 7e a0 1a 02 23 21 10 e6 70 e6 e6 00 c0 01 c1 00 08 00 00 01 00 00 ff 02 00 60 1a 7e"
        "  | HDLC I to 1/17 from 16 N(S)=0 N(R)=0 P/F info 16: "
        "GET-Request-Normal 8/0.0.1.0.0.255/2",
        "tx 7e a0 08 02 23 21 51 a3 81 7e  | HDLC RR to 1/17 from 16 N(R)=2 P/F",
    ]


def test_meter_frames_parameters_segments_and_noise() -> None:
    ua = HdlcFrame(
        FrameKind.UA, CLIENT, METER, information=encode_parameters(HdlcSettings())
    ).encode()
    first = HdlcFrame(
        FrameKind.I, CLIENT, METER, poll_final=False, send_seq=1, recv_seq=1, segmented=True,
        information=LLC_RESPONSE + bytes.fromhex("C40281000000000101"),
    ).encode()  # fmt: skip
    rest = HdlcFrame(
        FrameKind.I, CLIENT, METER, send_seq=2, recv_seq=1, information=bytes(range(1, 6))
    ).encode()
    tracer = FrameTracer("rx")
    data = ua + first + rest + b"\x01\x02\x03"
    # Bytes arrive in pieces: lines come out as frames complete.
    lines = tracer.feed(data[:10]) + tracer.feed(data[10:])
    assert lines == [
        "rx 7e a0 1f 21 02 23 73 e6 c7 81 80 12 05 01 80 06 01 80 07 04 00 00 00 01 08 04 00 00"
        " 00 01 53 3b 7e  | HDLC UA to 16 from 1/17 P/F info 21: max-info tx 128 rx 128, "
        "window tx 1 rx 1",
        "rx 7e a8 16 21 02 23 22 d6 f4 e6 e7 00 c4 02 81 00 00 00 00 01 01 62 66 7e  | HDLC I "
        "to 16 from 1/17 N(S)=1 N(R)=1 segmented info 12: GET-Response-With-Datablock block 1",
        "rx 7e a0 0f 21 02 23 34 1d 45 01 02 03 04 05 eb 61 7e  | HDLC I to 16 from 1/17 "
        "N(S)=2 N(R)=1 P/F info 5: continued APDU",
        "rx 01 02 03  | 3 bytes that are not a valid HDLC frame",
    ]


def test_rlre_without_llc_is_named() -> None:
    rlre = HdlcFrame(FrameKind.I, CLIENT, METER, information=bytes.fromhex("6303800100")).encode()
    (line,) = FrameTracer("rx").feed(rlre)
    assert line.endswith("info 5: no LLC header, RLRE")


def test_wrapper_line() -> None:
    pdu = WrapperPdu(1, 16, bytes.fromhex("C401C1000906"))
    assert wrapper_trace("rx", pdu) == (
        "rx 00 01 00 01 00 10 00 06 c4 01 c1 00 09 06  | wrapper wPort 1->16 length 6: "
        "GET-Response-Normal data"
    )


def test_apdu_names() -> None:
    assert [
        describe_apdu(bytes.fromhex(h))
        for h in ("C401C10104", "C002C100000002", "D80105", "DB08", "99", "", "C009")
    ] == [
        "GET-Response-Normal data-access-result 4",
        "GET-Request-Next block 2",
        "ExceptionResponse",
        "general-glo-ciphering",
        "unknown APDU tag 0x99",
        "empty APDU",
        "GET-Request (unknown choice 9)",
    ]


def test_short_name_apdus_are_named_with_their_short_names() -> None:
    assert [
        describe_apdu(bytes.fromhex(h))
        for h in (
            "050202fa0804120802020406000000010600000001120001120000",
            "0c020009020101 0104",
            "06010203080112 0005",
            "0d020001 03",
            "0c01",
        )
    ] == [
        "ReadRequest 0xFA08, 0x1208 parameterized",
        "ReadResponse data, data-access-result 4",
        "WriteRequest 0x0308",
        "WriteResponse success, data-access-result 3",
        "malformed short-name APDU 0x0C: ReadResponse: 2 bytes, need at least 3",
    ]
