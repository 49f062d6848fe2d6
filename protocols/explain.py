"""Frames and APDUs in words, for a bench trace (``hes read --trace``): sans-IO.

Every function takes bytes or decoded frames and returns one short line; nothing here raises
on bad input (a trace must show what arrived, however broken). :class:`FrameTracer` follows
one direction of an HDLC line, so a segment that continues an APDU is not mistaken for the
start of one, and turns the raw byte chunks of a stream into one line per frame.
"""

from __future__ import annotations

from protocols.enums import ApduTag
from protocols.errors import DecodeError
from protocols.hdlc import (
    LLC_REQUEST,
    LLC_RESPONSE,
    FrameDecoder,
    FrameKind,
    HdlcAddress,
    HdlcFrame,
)
from protocols.hdlc_link import decode_parameters
from protocols.wrapper import WrapperPdu, encode_wrapper
from protocols.xdlms import sn

__all__ = [
    "FrameTracer",
    "describe_address",
    "describe_apdu",
    "describe_hdlc",
    "describe_wrapper",
    "trace_line",
    "wrapper_trace",
]

#: APDU tags beyond :class:`ApduTag` that a trace may meet: ciphered services (Green Book).
_MORE_TAGS: dict[int, str] = {
    0x21: "glo-InitiateRequest",
    0x28: "glo-InitiateResponse",
    0xC2: "EventNotification-Request",
    0xC8: "glo-GET-Request",
    0xC9: "glo-SET-Request",
    0xCA: "glo-EventNotification",
    0xCB: "glo-ACTION-Request",
    0xCC: "glo-GET-Response",
    0xCD: "glo-SET-Response",
    0xCF: "glo-ACTION-Response",
    0xD0: "ded-GET-Request",
    0xD1: "ded-SET-Request",
    0xD2: "ded-EventNotification",
    0xD3: "ded-ACTION-Request",
    0xD4: "ded-GET-Response",
    0xD5: "ded-SET-Response",
    0xD7: "ded-ACTION-Response",
    0xD9: "Access-Request",
    0xDA: "Access-Response",
    0xDB: "general-glo-ciphering",
    0xDC: "general-ded-ciphering",
    0xDD: "general-ciphering",
    0xDF: "general-signing",
    0xE0: "general-block-transfer",
}

#: The request/response CHOICE (second byte) of the xDLMS services, by tag.
_SUBTYPES: dict[int, dict[int, str]] = {
    ApduTag.GET_REQUEST: {1: "Normal", 2: "Next", 3: "With-List"},
    ApduTag.GET_RESPONSE: {1: "Normal", 2: "With-Datablock", 3: "With-List"},
    ApduTag.SET_REQUEST: {
        1: "Normal",
        2: "With-First-Datablock",
        3: "With-Datablock",
        4: "With-List",
        5: "With-List-And-First-Datablock",
    },
    ApduTag.SET_RESPONSE: {
        1: "Normal",
        2: "Datablock",
        3: "Last-Datablock",
        4: "Last-Datablock-With-List",
        5: "With-List",
    },
    ApduTag.ACTION_REQUEST: {
        1: "Normal",
        2: "Next-Pblock",
        3: "With-List",
        4: "With-First-Pblock",
        5: "With-List-And-First-Pblock",
        6: "With-Pblock",
    },
    ApduTag.ACTION_RESPONSE: {1: "Normal", 2: "With-Pblock", 3: "With-List", 4: "Next-Pblock"},
}

_NAMES: dict[int, str] = {
    ApduTag.AARQ: "AARQ",
    ApduTag.AARE: "AARE",
    ApduTag.RLRQ: "RLRQ",
    ApduTag.RLRE: "RLRE",
    ApduTag.GET_REQUEST: "GET-Request",
    ApduTag.SET_REQUEST: "SET-Request",
    ApduTag.ACTION_REQUEST: "ACTION-Request",
    ApduTag.GET_RESPONSE: "GET-Response",
    ApduTag.SET_RESPONSE: "SET-Response",
    ApduTag.ACTION_RESPONSE: "ACTION-Response",
    ApduTag.EXCEPTION_RESPONSE: "ExceptionResponse",
    ApduTag.CONFIRMED_SERVICE_ERROR: "ConfirmedServiceError",
    ApduTag.DATA_NOTIFICATION: "DataNotification",
    ApduTag.INITIATE_REQUEST: "InitiateRequest",
    ApduTag.INITIATE_RESPONSE: "InitiateResponse",
    **_MORE_TAGS,
}


def _attribute(body: bytes) -> str:
    """class/OBIS/attribute of a Cosem-Attribute-Descriptor (2 + 6 + 1 bytes)."""
    class_id = int.from_bytes(body[0:2], "big")
    obis = ".".join(str(b) for b in body[2:8])
    return f"{class_id}/{obis}/{body[8]}"


def describe_apdu(apdu: bytes) -> str:
    """The APDU's name (tag and service CHOICE), with the attribute a GET/SET/ACTION names,
    the block number of a block transfer and the result of a normal GET response."""
    if not apdu:
        return "empty APDU"
    tag = apdu[0]
    if tag in _SN_TAGS:
        return _describe_sn(apdu)
    name = _NAMES.get(tag)
    if name is None:
        return f"unknown APDU tag 0x{tag:02X}"
    subtypes = _SUBTYPES.get(tag)
    if subtypes is None or len(apdu) < 2:
        return name
    choice = apdu[1]
    sub = subtypes.get(choice)
    if sub is None:
        return f"{name} (unknown choice {choice})"
    text = f"{name}-{sub}"
    body = apdu[3:]  # after tag, choice and invoke-id-and-priority
    if tag in (ApduTag.GET_REQUEST, ApduTag.SET_REQUEST, ApduTag.ACTION_REQUEST):
        if choice == 1 and len(body) >= 9:
            text += f" {_attribute(body)}"
        elif tag == ApduTag.GET_REQUEST and choice == 2 and len(body) >= 4:
            text += f" block {int.from_bytes(body[:4], 'big')}"
        elif tag == ApduTag.GET_REQUEST and choice == 3 and body:
            text += f" {body[0]} items"
    elif tag == ApduTag.GET_RESPONSE:
        if choice == 1 and body:
            if body[0] == 0:
                text += " data"
            elif len(body) > 1:
                text += f" data-access-result {body[1]}"
        elif choice == 2 and len(body) >= 5:
            last = " (last)" if body[0] else ""
            text += f" block {int.from_bytes(body[1:5], 'big')}{last}"
        elif choice == 3 and body:
            text += f" {body[0]} items"
    return text


_SN_TAGS = (
    ApduTag.READ_REQUEST,
    ApduTag.WRITE_REQUEST,
    ApduTag.READ_RESPONSE,
    ApduTag.WRITE_RESPONSE,
)


def _result(item: bytes | int) -> str:
    return "data" if isinstance(item, bytes) else f"data-access-result {item}"


def _describe_sn(apdu: bytes) -> str:
    """Short-name Read/Write: the short names asked for, the results given."""
    tag = apdu[0]
    try:
        if tag == ApduTag.READ_REQUEST:
            request = sn.decode_read_request(apdu)
            if isinstance(request, sn.ReadNextRequest):
                return f"ReadRequest next after block {request.block_number}"
            refs = request.references
            names = ", ".join(
                f"0x{name:04X}" + ("" if access is None else " parameterized")
                for name, access in refs
            )
            return f"ReadRequest {names}"
        if tag == ApduTag.WRITE_REQUEST:
            items = sn.decode_write_request(apdu).items
            return "WriteRequest " + ", ".join(f"0x{name:04X}" for name, _ in items)
        if tag == ApduTag.READ_RESPONSE:
            response = sn.decode_read_response(apdu)
            if isinstance(response, sn.ReadBlock):
                last = " (last)" if response.last else ""
                return f"ReadResponse block {response.block_number}{last}"
            results = response.items
            return "ReadResponse " + ", ".join(_result(item) for item in results)
        written = sn.decode_write_response(apdu).results
        return "WriteResponse " + ", ".join(
            "success" if r == 0 else f"data-access-result {r}" for r in written
        )
    except (DecodeError, IndexError, ValueError) as exc:
        return f"malformed short-name APDU 0x{tag:02X}: {exc}"


def describe_address(address: HdlcAddress) -> str:
    """``upper`` for a client SAP, ``upper/lower`` (logical/physical) for a server."""
    if address.lower is None:
        return str(address.upper)
    return f"{address.upper}/{address.lower}"


def _parameters(information: bytes) -> str:
    try:
        p = decode_parameters(information)
    except DecodeError as exc:
        return f"bad parameters ({exc})"
    return (
        f"max-info tx {p.max_info_tx} rx {p.max_info_rx}, window tx {p.window_tx} rx {p.window_rx}"
    )


def describe_hdlc(frame: HdlcFrame, *, continuation: bool = False) -> str:
    """Frame type, addresses, sequence numbers, poll/final and segment bits, and what the
    information field carries. ``continuation``: the frame continues a segmented APDU, so
    its information field does not start with an APDU tag."""
    kind = frame.kind
    parts = [
        f"HDLC {kind.value}",
        f"to {describe_address(frame.destination)} from {describe_address(frame.source)}",
    ]
    if kind is FrameKind.I:
        parts.append(f"N(S)={frame.send_seq} N(R)={frame.recv_seq}")
    elif kind in (FrameKind.RR, FrameKind.RNR):
        parts.append(f"N(R)={frame.recv_seq}")
    if frame.poll_final:
        parts.append("P/F")
    if frame.segmented:
        parts.append("segmented")
    info = frame.information
    if info:
        parts.append(f"info {len(info)}")
    text = " ".join(parts)
    if kind in (FrameKind.SNRM, FrameKind.UA) and info:
        return f"{text}: {_parameters(info)}"
    if kind in (FrameKind.I, FrameKind.UI) and info:
        if continuation:
            return f"{text}: continued APDU"
        if info[:3] in (LLC_REQUEST, LLC_RESPONSE):
            return f"{text}: {describe_apdu(info[3:])}"
        return f"{text}: no LLC header, {describe_apdu(info)}"
    return text


def describe_wrapper(pdu: WrapperPdu) -> str:
    """The wrapper header (wPorts, length) and the APDU it carries."""
    return (
        f"wrapper wPort {pdu.source}->{pdu.destination} length {len(pdu.apdu)}: "
        f"{describe_apdu(pdu.apdu)}"
    )


def trace_line(direction: str, raw: bytes, summary: str) -> str:
    """One trace line: direction, the bytes in hex, what they mean."""
    return f"{direction} {raw.hex(' ')}  | {summary}"


def wrapper_trace(direction: str, pdu: WrapperPdu) -> str:
    """The trace line of one wrapper PDU (the wrapper encoding is canonical: the bytes are
    the PDU's own encoding)."""
    raw = encode_wrapper(pdu.source, pdu.destination, pdu.apdu)
    return trace_line(direction, raw, describe_wrapper(pdu))


class FrameTracer:
    """One direction of an HDLC line in trace lines, fed the bytes as they pass.

    It keeps its own :class:`FrameDecoder`, so tracing changes nothing in the link's
    decoding, and remembers whether the last I-frame was segmented, so the next one is
    shown as the rest of that APDU.
    """

    def __init__(self, direction: str) -> None:
        self.direction = direction
        self._decoder = FrameDecoder()
        self._continuing = False

    def feed(self, data: bytes) -> list[str]:
        """The trace lines of every frame (and every run of noise) completed by ``data``."""
        lines: list[str] = []
        for frame, raw in self._decoder.feed_raw(data):
            if frame is None:
                summary = f"{len(raw)} bytes that are not a valid HDLC frame"
            else:
                summary = describe_hdlc(frame, continuation=self._continuing)
                if frame.kind is FrameKind.I:
                    self._continuing = frame.segmented
                elif frame.kind in (FrameKind.SNRM, FrameKind.DISC, FrameKind.UA):
                    self._continuing = False
            lines.append(trace_line(self.direction, raw, summary))
        return lines
