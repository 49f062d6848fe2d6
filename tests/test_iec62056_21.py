"""IEC 62056-21 mode E sign-on (protocols.iec62056_21): vectors, round trips, hostile input.

Byte vectors follow the message formats as public sources give them (see the module
docstring): the request ``/?!`` CR LF and the 300 baud start (pwitab/iec62056-21
``constants.py``/``messages.py``), the baud-rate table 0..6 = 300..19200 (pwitab
``client.py``), the HDLC acknowledgement ``06 32 Z 32 0D 0A`` (openmuc jDLMS ``Iec21Layer``:
"ACK [HDLC protocol procedure] [baud] [binary mode]"), the enhanced identification
character 2 = HDLC available (DLMS UA, "Enhanced identification character").
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.errors import DecodeError, DlmsError, SignOnError
from protocols.iec62056_21 import (
    BAUD_RATES,
    ClientSignOn,
    HdlcSelected,
    Identification,
    MeterSignOn,
    OptionRefused,
    OptionSelect,
    SignOnRequest,
    SignOnRequested,
    baud_char,
    with_even_parity,
    without_even_parity,
)

CHEAP = settings(max_examples=200, deadline=None)


def test_request_vectors() -> None:
    assert SignOnRequest().encode() == bytes.fromhex("2F 3F 21 0D 0A")
    assert SignOnRequest("12345678").encode() == b"/?12345678!\r\n"
    assert SignOnRequest.decode(b"/?SIM000000017!\r\n").device_address == "SIM000000017"
    with pytest.raises(ValueError, match="device address"):
        SignOnRequest("a b")
    with pytest.raises(ValueError, match="device address"):
        SignOnRequest("1" * 33)


def test_baud_table() -> None:
    assert BAUD_RATES == {
        "0": 300,
        "1": 600,
        "2": 1200,
        "3": 2400,
        "4": 4800,
        "5": 9600,
        "6": 19200,
    }
    assert baud_char(9600) == "5"
    with pytest.raises(ValueError, match="38400"):
        baud_char(38400)


def test_identification_vectors() -> None:
    ident = Identification.decode(b"/ISK5\\2MT382-1000\r\n")
    assert (ident.manufacturer, ident.baud_char, ident.identification) == ("ISK", "5", "MT382-1000")
    assert ident.mode_e and ident.baudrate == 9600 and ident.reaction_time_s == 0.2
    assert ident.encode() == b"/ISK5\\2MT382-1000\r\n"
    # No \W: a mode A-D meter; lower-case third letter: the 20 ms reaction time.
    plain = Identification.decode(b"/LGz4ZMD3104407\r\n")
    assert not plain.mode_e and plain.enhanced is None and plain.reaction_time_s == 0.02
    assert Identification("ABC", "6", "x", None).encode() == b"/ABC6x\r\n"


def test_acknowledgement_vectors() -> None:
    assert OptionSelect.hdlc("5").encode() == bytes.fromhex("06 32 35 32 0D 0A")
    assert OptionSelect.hdlc("0").encode() == bytes.fromhex("06 32 30 32 0D 0A")
    readout = OptionSelect.decode(bytes.fromhex("06 30 35 30 0D 0A"))
    assert not readout.selects_hdlc and readout.baudrate == 9600


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (b"/ISK5\\2MT382", "CR LF"),
        (b"ISK5\\2MT382\r\n", "/XXXZ"),
        (b"/IS15\\2MT382\r\n", "manufacturer"),
        (b"/ISK.\\2MT382\r\n", "baud character"),
        (b"/ISK5\\xMT382\r\n", "digit"),
        (b"/ISK5\\2" + b"A" * 17 + b"\r\n", "16"),
        (b"/ISK5\\2MT!382\r\n", "other than / and !"),
        (b"/ISK5\\2MT\xe9\r\n", "0x7F"),
        (b"/ISK5\\2M\rT\r\n", "CR or LF"),
    ],
)
def test_malformed_identification_names_the_fault(data: bytes, what: str) -> None:
    with pytest.raises(DecodeError, match=what.replace("/", ".").replace("\\", ".")):
        Identification.decode(data)


def test_malformed_request_and_acknowledgement() -> None:
    with pytest.raises(DecodeError, match=r"not /.\[address\]!"):
        SignOnRequest.decode(b"/!\r\n")
    with pytest.raises(DecodeError, match="letters and digits"):
        SignOnRequest.decode(b"/?a-b!\r\n")
    with pytest.raises(DecodeError, match="ACK V Z Y"):
        OptionSelect.decode(b"\x06252x\r\n")
    with pytest.raises(DecodeError, match="one digit"):
        OptionSelect.decode(b"\x062A2\r\n")


def _sign_on(client: ClientSignOn, meter: MeterSignOn, ident: Identification) -> list[object]:
    events = meter.receive_data(client.request())
    assert events == [SignOnRequested(client.request_message.device_address)]
    answer = meter.identify(ident)
    got = None
    for i in range(len(answer)):  # byte by byte, as a 300 baud UART delivers it
        got = client.receive_data(answer[i : i + 1]) or got
    assert got == ident
    return list(meter.receive_data(client.acknowledge()))


def test_full_sign_on_both_sides() -> None:
    client, meter = ClientSignOn("SIM000000017"), MeterSignOn()
    events = _sign_on(client, meter, Identification("SIM", "5", "SIM000000017"))
    assert events == [HdlcSelected(9600)]
    assert client.baudrate == 9600 and meter.in_hdlc
    assert meter.receive_data(b"/?!\r\n") == []  # HDLC now: the caller resets it
    meter.reset()
    assert meter.receive_data(b"/?!\r\n") == [SignOnRequested("")]


def test_meter_ignores_hdlc_and_noise_before_the_request() -> None:
    meter = MeterSignOn()
    snrm = bytes.fromhex("7E A0 08 02 23 21 93 B3 8D 7E")
    assert meter.receive_data(snrm * 3) == []
    assert meter.receive_data(bytes(range(256))) == []  # a line too long: dropped
    assert meter.receive_data(b"\x00\x7e/?!\r\n") == [SignOnRequested("")]
    meter.ignore()
    assert meter.receive_data(b"\x06252\r\n") == []  # no identification sent: no ack taken


def test_meter_refuses_other_options() -> None:
    meter = MeterSignOn()
    meter.receive_data(b"/?!\r\n")
    meter.identify(Identification("SIM", "4", "x"))
    (refused,) = meter.receive_data(b"\x06050\r\n")  # data readout: mode C, not HDLC
    assert isinstance(refused, OptionRefused) and not meter.in_hdlc
    meter.receive_data(b"/?!\r\n")
    meter.identify(Identification("SIM", "4", "x"))
    (faster,) = meter.receive_data(b"\x06252\r\n")  # 9600 when 4800 was offered
    assert isinstance(faster, OptionRefused) and "4800" in faster.reason


def test_client_refuses_a_meter_without_mode_e() -> None:
    client = ClientSignOn()
    client.request()
    assert client.receive_data(b"/?!\r\n") is None  # the echo of our own request
    with pytest.raises(SignOnError, match="mode E"):
        client.receive_data(b"/LGZ5ZMD3104407\r\n")
    client.request()
    with pytest.raises(SignOnError, match="baud character 'A'"):
        client.receive_data(b"/ABCA\\2x\r\n")
    client.request()
    with pytest.raises(DecodeError, match="no CR LF within"):
        client.receive_data(b"/" + b"A" * 60)
    with pytest.raises(SignOnError, match="before an identification"):
        ClientSignOn().acknowledge()


addresses = st.text("ABCXYZabcxyz0123456789", max_size=32)
idents = st.builds(
    Identification,
    st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcz", min_size=3, max_size=3),
    st.sampled_from([*sorted(BAUD_RATES), "A", "I"]),
    st.text(
        st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="/!\\"),
        max_size=16,
    ),
    st.sampled_from([None, "2", "0", "9"]),
)


@CHEAP
@given(addresses)
def test_request_round_trip(address: str) -> None:
    assert SignOnRequest.decode(SignOnRequest(address).encode()) == SignOnRequest(address)


@CHEAP
@given(idents)
def test_identification_round_trip(ident: Identification) -> None:
    assert Identification.decode(ident.encode()) == ident


@CHEAP
@given(st.sampled_from(sorted(BAUD_RATES)), st.sampled_from("0129"), st.sampled_from("0126"))
def test_acknowledgement_round_trip(baud: str, protocol: str, mode: str) -> None:
    option = OptionSelect(protocol, baud, mode)
    assert OptionSelect.decode(option.encode()) == option


@CHEAP
@given(addresses, st.sampled_from(sorted(BAUD_RATES)), st.integers(1, 7))
def test_sign_on_in_any_chunks(address: str, baud: str, chunk: int) -> None:
    """The client takes the identification however the UART splits it."""
    client, meter = ClientSignOn(address), MeterSignOn()
    request = client.request()
    events = [
        e for i in range(0, len(request), chunk) for e in meter.receive_data(request[i : i + chunk])
    ]
    assert events == [SignOnRequested(address)]
    answer = meter.identify(Identification("SIM", baud, "id"))
    got = [client.receive_data(answer[i : i + chunk]) for i in range(0, len(answer), chunk)]
    assert got[-1] == Identification("SIM", baud, "id") and not any(got[:-1])
    assert meter.receive_data(client.acknowledge()) == [HdlcSelected(BAUD_RATES[baud])]


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64))
def test_parsers_raise_only_decode_error(data: bytes) -> None:
    for decode in (SignOnRequest.decode, Identification.decode, OptionSelect.decode):
        try:
            decode(data)
        except DecodeError:
            pass
    for line in (data + b"\r\n", b"/" + data + b"\r\n", b"\x06" + data[:3] + b"\r\n"):
        for decode in (SignOnRequest.decode, Identification.decode, OptionSelect.decode):
            try:
                decode(line)
            except DecodeError:
                pass


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=6))
def test_state_machines_on_hostile_streams(chunks: list[bytes]) -> None:
    """The meter never raises; the client raises only DLMS errors."""
    meter = MeterSignOn()
    client = ClientSignOn()
    client.request()
    for chunk in chunks:
        for event in meter.receive_data(chunk):
            if isinstance(event, SignOnRequested):
                meter.identify(Identification("SIM", "5", "x"))
        try:
            client.receive_data(chunk)
        except DlmsError:
            client.request()


def test_7e1_as_8n1_vectors() -> None:
    """7E1 on the wire read as 8N1: bit 7 is the even parity of bits 0-6."""
    assert with_even_parity(SignOnRequest().encode()) == bytes.fromhex("AF 3F 21 8D 0A")
    assert with_even_parity(OptionSelect.hdlc("5").encode()) == bytes.fromhex("06 B2 35 B2 8D 0A")
    assert without_even_parity(bytes.fromhex("AF 3F 21 8D 0A")) == b"/?!\r\n"
    with pytest.raises(DecodeError, match=r"parity error .* byte 0 0x2f"):
        without_even_parity(b"/?!")
    assert without_even_parity(b"/?!", drop_errors=True) == b"?!"
    with pytest.raises(ValueError, match="7-bit"):
        with_even_parity(b"\x80")


@CHEAP
@given(st.binary(max_size=64))
def test_parity_round_trip_and_hostile_bytes(data: bytes) -> None:
    seven = bytes(b & 0x7F for b in data)
    wire = with_even_parity(seven)
    assert all(bin(b).count("1") % 2 == 0 for b in wire)
    assert without_even_parity(wire) == seven
    try:
        assert without_even_parity(data) == seven
    except DecodeError:
        assert len(without_even_parity(data, drop_errors=True)) < len(data)
