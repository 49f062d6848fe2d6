"""HDLC (IEC 62056-46 frame format type 3): vectors, cross-checks, link state machine."""

from __future__ import annotations

import pytest
from dlms_cosem.hdlc import frames as dc_frames
from dlms_cosem.hdlc.address import HdlcAddress as DcAddress

from protocols.crc import CRC16_X25_INIT, CRC16_X25_XOROUT, crc16_x25, crc16_x25_update
from protocols.errors import DecodeError, FrameCheckError, LinkError, ProtocolError
from protocols.hdlc import FrameDecoder, FrameKind, HdlcAddress, HdlcFrame
from protocols.hdlc_link import (
    ApduReceived,
    Connected,
    Disconnected,
    HdlcConnection,
    HdlcEvent,
    HdlcSettings,
    LinkState,
    PeerRejected,
    Role,
    Transmit,
    decode_parameters,
    encode_parameters,
    negotiate,
)

CLIENT = HdlcAddress(16)
SERVER = HdlcAddress(1, 17)

# --- public vectors ----------------------------------------------------------------------
# dlms-cosem test-suite, tests/test_hdlc/test_hdlc.py (github.com/u9n/dlms-cosem):
DC_SNRM = "7ea00802232193bd647e"  # TestSnrmFrame: server 1/17, public client 16
DC_UA = "7EA01F21022373E6C781801205019A06019A070400000001080400000001CCA27E"  # TestUAFrame
DC_AARQ = (  # TestInformationFrame: AARQ in an I-frame, N(S)=0 N(R)=0 P=1
    "7EA02C02232110AF9FE6E600601DA109060760857405080101BE10040E01000000065F1F0400001E1DFFFFC5E47E"
)
DC_AARE = (  # TestInformationResponseFrame: AARE, N(S)=0 N(R)=1 F=1
    "7EA0382102233034E7E6E7006129A109060760857405080101A203020100A305A103020100BE10040E0800"
    "065F1F0400001E1D04C80007B86A7E"
)
# Gyozo Kmethy, "Examples for DLMS/COSEM information exchange" (DLMS UA), section 1/2:
# 4-byte server address (upper 1, lower 17), UA with 2-byte length values.
GK_SNRM = "7EA00A00020023219318717E"
GK_UA = "7EA023210002002373F6C58180140502008006020080070400000001080400000001CE6A7E"
GK_AARQ = (  # its HCS is 7E CB: a flag byte inside a frame
    "7EA02E0002002321107ECBE6E600601DA109060760857405080101BE10040E01000000065F1F040000301D"
    "FFFFD4C57E"
)
# GXDLMSDirector trace published at gist.github.com/knogi/f3d4853b936164882e5ed653498e7b61:
# SNRM proposing max info 1010 both ways, the meter's UA, a GET in an I-frame N(S)=1 N(R)=1.
GX_SNRM = "7EA014032193 63E7 818008050203F2060203F2 03F07E"
GX_UA = "7EA02021037373988180140502 03F2060203F2070400000001080400000001 0A757E"
GX_GET = "7EA0190321326FD8E6E600C001C1000F0000280000FF0200 91537E"
# Produced by gurux-dlms 1.0.203 GXDLMSClient (client 16, server 1/17): receiverReady(),
# disconnectRequest().
GX_RR = "7ea00802232111a7c37e"
GX_DISC = "7ea00802232153b1a27e"


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def test_crc_check_value() -> None:
    # CRC-16/X-25 catalogue check value over ASCII "123456789".
    assert crc16_x25(b"123456789") == 0x906E
    assert crc16_x25_update(CRC16_X25_INIT, b"123456789") ^ CRC16_X25_XOROUT == 0x906E
    # dlms-cosem tests/test_hdlc/test_hdlc.py TestCrc: CRC of 03 3F transmitted as 5B EC.
    assert crc16_x25(b"\x03\x3f").to_bytes(2, "little") == bytes.fromhex("5bec")


def test_crc_incremental_and_memoryview() -> None:
    data = bytes(range(256)) * 3
    crc = crc16_x25_update(CRC16_X25_INIT, data[:100])
    crc = crc16_x25_update(crc, memoryview(data)[100:])
    assert crc ^ CRC16_X25_XOROUT == crc16_x25(data) == crc16_x25(memoryview(data))


@pytest.mark.parametrize(
    ("vector", "kind", "dst", "src", "ns", "nr", "info_start"),
    [
        (DC_SNRM, FrameKind.SNRM, SERVER, CLIENT, 0, 0, ""),
        (DC_UA, FrameKind.UA, CLIENT, SERVER, 0, 0, "818012"),
        (DC_AARQ, FrameKind.I, SERVER, CLIENT, 0, 0, "e6e60060"),
        (DC_AARE, FrameKind.I, CLIENT, SERVER, 0, 1, "e6e70061"),
        (GK_SNRM, FrameKind.SNRM, HdlcAddress(1, 17, 4), CLIENT, 0, 0, ""),
        (GK_UA, FrameKind.UA, CLIENT, HdlcAddress(1, 17, 4), 0, 0, "818014"),
        (GK_AARQ, FrameKind.I, HdlcAddress(1, 17, 4), CLIENT, 0, 0, "e6e600601d"),
        (GX_SNRM, FrameKind.SNRM, HdlcAddress(1), CLIENT, 0, 0, "818008050203f2"),
        (GX_UA, FrameKind.UA, CLIENT, HdlcAddress(1), 0, 0, "818014"),
        (GX_GET, FrameKind.I, HdlcAddress(1), CLIENT, 1, 1, "e6e600c001c1"),
        (GX_RR, FrameKind.RR, SERVER, CLIENT, 0, 0, ""),
        (GX_DISC, FrameKind.DISC, SERVER, CLIENT, 0, 0, ""),
    ],
)
def test_public_vectors_decode_and_encode_byte_exact(
    vector: str,
    kind: FrameKind,
    dst: HdlcAddress,
    src: HdlcAddress,
    ns: int,
    nr: int,
    info_start: str,
) -> None:
    data = h(vector)
    frame = HdlcFrame.decode(data)
    assert frame.kind is kind
    assert frame.destination == dst and frame.destination.size == dst.size
    assert frame.source == src
    assert (frame.send_seq, frame.recv_seq) == (ns, nr)
    assert frame.poll_final and not frame.segmented
    assert frame.information.hex().startswith(info_start)
    assert bool(frame.information) == bool(info_start)
    rebuilt = HdlcFrame(kind, dst, src, True, ns, nr, False, frame.information)
    assert rebuilt.encode() == data


def test_hcs_and_fcs_bytes_and_coverage() -> None:
    aarq = h(DC_AARQ)
    # Frame with information: HCS over format..control (bytes 1..6), FCS over 1..-3.
    assert crc16_x25(aarq[1:7]).to_bytes(2, "little") == aarq[7:9] == h("AF9F")
    assert crc16_x25(aarq[1:-3]).to_bytes(2, "little") == aarq[-3:-1] == h("C5E4")
    # Frame without information: only the FCS, and it covers just the header.
    snrm = h(DC_SNRM)
    assert len(snrm) == 10
    assert crc16_x25(snrm[1:7]).to_bytes(2, "little") == snrm[7:9] == h("BD64")


def test_segmented_frame_whose_length_byte_is_a_flag() -> None:
    # dlms-cosem tests/test_hdlc/test_hdlc.py TestHdlcAddress.test_find_address: format A8 7E
    # (S bit set, length 126: the length byte equals the flag), control 96 (I, N(S)=3,
    # N(R)=4, F=1). Not byte-stuffed, so only the length field delimits it.
    vector = h(
        "7ea87e210396a4090f01160002020f02160002020f03160002020f04160002020f05160002020f0616"
        "000204120017110009060000160000ff0202010902030f0116010002030f0216010002030f031601"
        "0002030f0416010002030f0516010002030f0616010002030f0716010002030f0816010002030f09"
        "160100016ff37e"
    )
    frame = HdlcFrame.decode(vector)
    assert frame.segmented and frame.kind is FrameKind.I
    assert (frame.send_seq, frame.recv_seq, frame.poll_final) == (3, 4, True)
    assert frame.destination == CLIENT and frame.source == HdlcAddress(1)
    assert frame.encode() == vector
    decoder = FrameDecoder()
    out = [f for i in range(len(vector)) for f in decoder.feed(vector[i : i + 1])]
    assert out == [frame]


def test_gurux_forum_frame_with_4_byte_source() -> None:
    # gurux.fi forum "Last gasp frame format" (2021, checked there with GXDLMSTranslator):
    # DataNotification from server upper 1 / lower 11956 (4-byte address) to client 48.
    vector = h(
        "7EA043610002BA69301351E6E7000FC0000001000204 0A0937303232303030353 90A0F383635323334"
        "303330333437363737 0F0C090C07E5050A0100362CFF8000FF78647E"
    )
    frame = HdlcFrame.decode(vector)
    assert frame.source == HdlcAddress(1, 11956, 4)
    assert frame.destination == HdlcAddress(48)
    assert frame.encode() == vector


# --- addresses -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "raw"),
    [
        (HdlcAddress(16), "21"),
        (HdlcAddress(1), "03"),
        (HdlcAddress(0b1001010), "95"),  # dlms-cosem test_client_address_just_logical
        (HdlcAddress(1, 17), "0223"),
        (HdlcAddress(1, 17, 4), "00020023"),
        (HdlcAddress(0x3FFF, 0x3FFF), "fefefeff"),
        (HdlcAddress(0x80, 0x12D), "0200045b"),
    ],
)
def test_address_encoding(address: HdlcAddress, raw: str) -> None:
    assert address.encode().hex() == raw
    assert HdlcAddress.decode(bytes.fromhex(raw)) == address


def test_address_sizes_and_validation() -> None:
    assert HdlcAddress(1, 17) == HdlcAddress(1, 17, 2)
    assert HdlcAddress(1, 200).size == 4
    assert HdlcAddress(1, 17, 4).same_station(HdlcAddress(1, 17))
    for bad in (
        lambda: HdlcAddress(128),  # 1 byte holds 7 bits
        lambda: HdlcAddress(1, 17, 1),
        lambda: HdlcAddress(1, None, 2),
        lambda: HdlcAddress(128, 1, 2),
        lambda: HdlcAddress(1, 0x4000),
        lambda: HdlcAddress(-1),
        lambda: HdlcAddress(1, 1, 3),
    ):
        with pytest.raises(ValueError):
            bad()
    for raw in ("", "02", "020203", "0002020203", "0300", "0103"):
        with pytest.raises(DecodeError):
            HdlcAddress.decode(bytes.fromhex(raw))


# --- control field and frame errors --------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "pf", "ns", "nr", "control"),
    [
        (FrameKind.SNRM, True, 0, 0, 0x93),
        (FrameKind.SNRM, False, 0, 0, 0x83),
        (FrameKind.DISC, True, 0, 0, 0x53),
        (FrameKind.DISC, False, 0, 0, 0x43),
        (FrameKind.UA, True, 0, 0, 0x73),
        (FrameKind.UA, False, 0, 0, 0x63),
        (FrameKind.DM, True, 0, 0, 0x1F),
        (FrameKind.DM, False, 0, 0, 0x0F),
        (FrameKind.FRMR, True, 0, 0, 0x97),
        (FrameKind.FRMR, False, 0, 0, 0x87),
        (FrameKind.UI, True, 0, 0, 0x13),
        (FrameKind.UI, False, 0, 0, 0x03),
        (FrameKind.RR, True, 0, 5, 0xB1),
        (FrameKind.RR, False, 0, 7, 0xE1),
        (FrameKind.RNR, True, 0, 2, 0x55),
        (FrameKind.I, True, 1, 5, 0xB2),  # gurux.fi forum "DLMS (HDLC) Packet Description"
        (FrameKind.I, False, 7, 6, 0xCE),
    ],
)
def test_control_field(kind: FrameKind, pf: bool, ns: int, nr: int, control: int) -> None:
    frame = HdlcFrame(kind, SERVER, CLIENT, pf, ns, nr)
    data = frame.encode()
    assert data[6] == control
    assert HdlcFrame.decode(data) == frame


def test_frame_decode_errors() -> None:
    good = h(DC_AARQ)
    with pytest.raises(FrameCheckError):
        HdlcFrame.decode(good[:20] + bytes([good[20] ^ 1]) + good[21:])
    with pytest.raises(FrameCheckError):  # header corrupted and FCS patched: HCS catches it
        bad = bytearray(good)
        bad[5] ^= 0x20
        bad[-3:-1] = crc16_x25(bytes(bad[1:-3])).to_bytes(2, "little")
        HdlcFrame.decode(bytes(bad))
    for bad_bytes in (b"", b"\x7e\x7e", good[:-1], good[1:], good + b"\x00", b"\x7e" * 12):
        with pytest.raises(DecodeError):
            HdlcFrame.decode(bad_bytes)
    # REJ (supervisory 0x09) is not part of the DLMS HDLC profile.
    rej = bytearray(h(GX_RR))
    rej[6] = 0x19
    rej[-3:-1] = crc16_x25(bytes(rej[1:-3])).to_bytes(2, "little")
    with pytest.raises(DecodeError, match="supervisory"):
        HdlcFrame.decode(bytes(rej))


def test_frame_encode_limits() -> None:
    # 2047 = format 2 + addresses 2+1 + control 1 + HCS 2 + information + FCS 2.
    assert len(HdlcFrame(FrameKind.I, SERVER, CLIENT, information=b"x" * 2037).encode()) == 2049
    with pytest.raises(ValueError):
        HdlcFrame(FrameKind.I, SERVER, CLIENT, information=b"x" * 2038).encode()
    with pytest.raises(ValueError):
        HdlcFrame(FrameKind.I, SERVER, CLIENT, send_seq=8).encode()
    segmented = HdlcFrame(FrameKind.I, SERVER, CLIENT, segmented=True, information=b"a")
    assert segmented.encode()[1] == 0xA8


# --- stream decoder ------------------------------------------------------------------------


def test_decoder_shared_and_separate_flags_and_garbage() -> None:
    a, b, c = h(DC_SNRM), h(DC_AARQ), h(GK_AARQ)
    shared = a + b[1:] + c[1:]  # 7E ... 7E ... 7E ... 7E
    assert [f.encode() for f in FrameDecoder().feed(shared)] == [a, b, c]
    noisy = b"\x00\xff\x7e\x7e\x7e\xa0" + a + b"\x7e\xa0\x05junk" + b + b"\x7e\x7e\x7e" + c
    decoder = FrameDecoder()
    assert [f.encode() for f in decoder.feed(noisy)] == [a, b, c]
    assert decoder.buffered <= 1


def test_decoder_drops_and_counts_bad_frames() -> None:
    good = h(DC_AARQ)
    corrupt = good[:30] + bytes([good[30] ^ 0x10]) + good[31:]
    decoder = FrameDecoder()
    assert [f.encode() for f in decoder.feed(corrupt + good)] == [good]
    assert decoder.dropped_frames == 1
    assert isinstance(decoder.last_error, FrameCheckError)
    bad_header = bytearray(good)
    bad_header[4] ^= 0x04
    assert decoder.feed(bytes(bad_header) + good) == [HdlcFrame.decode(good)]
    assert decoder.dropped_frames == 2


def test_decoder_does_not_wait_for_a_fake_long_frame() -> None:
    # "7E A7 FF" claims a 2047-byte frame; its HCS fails as soon as the header is in, so the
    # real frame behind it comes out at once instead of after 2 KiB of further input.
    decoder = FrameDecoder()
    fake = b"\x7e\xa7\xff\x03\x21\x10\x00\x00"
    assert decoder.feed(fake + h(DC_AARQ)) == [HdlcFrame.decode(h(DC_AARQ))]


def test_decoder_buffer_is_bounded() -> None:
    decoder = FrameDecoder()
    for _ in range(50):
        decoder.feed(b"\x00\x01\x02" * 1000)
        assert decoder.buffered == 0
    # A valid-looking header of a maximum-length frame is kept, but never more than that.
    header = HdlcFrame(FrameKind.I, SERVER, CLIENT, information=b"\x00" * 2036).encode()
    for _ in range(3):
        decoder.feed(header[:-10])
        assert decoder.buffered <= len(header)


# --- cross-check against dlms-cosem's independent frame code --------------------------------


def _dc_server(address: HdlcAddress) -> DcAddress:
    return DcAddress(address.upper, address.lower, "server", extended_addressing=address.size == 4)


SERVERS = [SERVER, HdlcAddress(1, 17, 4), HdlcAddress(3, 4660), HdlcAddress(0x3FFF, 0x1234)]


@pytest.mark.parametrize("server", SERVERS)
def test_dlms_cosem_decodes_our_frames(server: HdlcAddress) -> None:
    # dlms-cosem is a client: it parses I/UA/RR frames coming from a server and builds the
    # client's frames, so the cross-check follows those directions.
    apdu = b"\xe6\xe7\x00\xc4\x01\xc1\x00\x06\x00\x00\x12\x34"
    ours = HdlcFrame(FrameKind.I, CLIENT, server, True, 3, 5, False, apdu).encode()
    theirs = dc_frames.InformationFrame.from_bytes(ours)
    assert theirs.payload == apdu
    assert (theirs.send_sequence_number, theirs.receive_sequence_number) == (3, 5)
    assert theirs.source_address.logical_address == server.upper
    assert theirs.source_address.physical_address == server.lower
    assert theirs.destination_address.logical_address == CLIENT.upper
    ua_info = encode_parameters(HdlcSettings(512, 256, 1, 1))
    ua = HdlcFrame(FrameKind.UA, CLIENT, server, information=ua_info).encode()
    their_ua = dc_frames.UnNumberedAcknowledgmentFrame.from_bytes(ua)
    assert their_ua.payload == ua_info
    assert their_ua.source_address.physical_address == server.lower
    rr = HdlcFrame(FrameKind.RR, CLIENT, server, recv_seq=6).encode()
    assert dc_frames.ReceiveReadyFrame.from_bytes(rr).receive_sequence_number == 6
    if 0 in server.encode():
        # dlms-cosem's DisconnectFrame.from_bytes rebuilds the destination without its
        # extended_addressing flag, drops zero address bytes and then fails its own FCS.
        return
    disc = HdlcFrame(FrameKind.DISC, server, CLIENT).encode()
    their_disc = dc_frames.DisconnectFrame.from_bytes(disc)
    assert their_disc.destination_address.logical_address == server.upper
    assert their_disc.destination_address.physical_address == server.lower


@pytest.mark.parametrize("server", SERVERS)
def test_we_decode_dlms_cosem_frames(server: HdlcAddress) -> None:
    dc_server = _dc_server(server)
    dc_client = DcAddress(16, None, "client")
    payload = bytes(range(40))
    frames = [
        (dc_frames.SetNormalResponseModeFrame(dc_server, dc_client), FrameKind.SNRM, b""),
        (dc_frames.DisconnectFrame(dc_server, dc_client), FrameKind.DISC, b""),
        (
            dc_frames.ReceiveReadyFrame(dc_server, dc_client, receive_sequence_number=4),
            FrameKind.RR,
            b"",
        ),
        (
            dc_frames.InformationFrame(
                dc_server, dc_client, payload, send_sequence_number=2, receive_sequence_number=7
            ),
            FrameKind.I,
            payload,
        ),
        (
            dc_frames.UnnumberedInformationFrame(dc_server, dc_client, payload),
            FrameKind.UI,
            payload,
        ),
    ]
    for theirs, kind, info in frames:
        frame = HdlcFrame.decode(theirs.to_bytes())
        assert frame.kind is kind
        assert frame.destination == server and frame.destination.size == server.size
        assert frame.source == CLIENT
        assert frame.information == info
        assert frame.encode() == theirs.to_bytes()
    assert HdlcFrame.decode(frames[2][0].to_bytes()).recv_seq == 4
    i_frame = HdlcFrame.decode(frames[3][0].to_bytes())
    assert (i_frame.send_seq, i_frame.recv_seq) == (2, 7)


# --- parameter negotiation -----------------------------------------------------------------


def test_parameters_encoding_matches_published_frames() -> None:
    assert encode_parameters(HdlcSettings(), omit_defaults=True) == b""
    gx_snrm = HdlcFrame.decode(h(GX_SNRM))
    assert encode_parameters(HdlcSettings(1010, 1010), omit_defaults=True) == gx_snrm.information
    gx_ua = HdlcFrame.decode(h(GX_UA))
    assert encode_parameters(HdlcSettings(1010, 1010)) == gx_ua.information
    dc_ua = HdlcFrame.decode(h(DC_UA))
    assert encode_parameters(HdlcSettings(154, 154)) == dc_ua.information
    assert decode_parameters(dc_ua.information) == HdlcSettings(154, 154, 1, 1)
    assert decode_parameters(HdlcFrame.decode(h(GK_UA)).information) == HdlcSettings()
    assert decode_parameters(b"") == HdlcSettings()


def test_parameters_partial_unknown_clamped_and_bad() -> None:
    assert decode_parameters(h("818003 050140")) == HdlcSettings(max_info_tx=64)
    assert decode_parameters(h("818007 0901ff 08020003")) == HdlcSettings(window_rx=3)
    assert decode_parameters(h("818007 0502ffff 070109")) == HdlcSettings(2030, 128, 7, 1)
    for bad in (
        "81",
        "828003050140",
        "818004050140",
        "818003050100",
        "818004 05030000ff",
        "81800205",
        "8180030502",
    ):
        with pytest.raises(DecodeError):
            decode_parameters(h(bad))


def test_negotiation_takes_minimum_of_proposal_and_peer_capability() -> None:
    client = HdlcSettings(max_info_tx=1000, max_info_rx=512, window_tx=3, window_rx=1)
    server = HdlcSettings(max_info_tx=256, max_info_rx=2030, window_tx=7, window_rx=2)
    assert negotiate(server, client) == HdlcSettings(256, 1000, 1, 2)
    assert negotiate(client, negotiate(server, client)) == HdlcSettings(1000, 256, 2, 1)


# --- connection state machine --------------------------------------------------------------


def transmitted(events: list[HdlcEvent]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, Transmit))


def others(events: list[HdlcEvent]) -> list[HdlcEvent]:
    return [e for e in events if not isinstance(e, Transmit)]


class Link:
    """Two connections wired back to back; logs events and the frames on the line."""

    def __init__(
        self,
        client_settings: HdlcSettings | None = None,
        server_settings: HdlcSettings | None = None,
        server_address: HdlcAddress = SERVER,
    ) -> None:
        self.client = HdlcConnection(Role.CLIENT, CLIENT, server_address, client_settings)
        self.server = HdlcConnection(Role.SERVER, server_address, CLIENT, server_settings)
        self.client_events: list[HdlcEvent] = []
        self.server_events: list[HdlcEvent] = []
        self.to_server_frames: list[HdlcFrame] = []
        self.to_client_frames: list[HdlcFrame] = []

    def to_server(self, data: bytes) -> None:
        """Deliver client bytes and play the exchange out until the line is quiet."""
        while data:
            self.to_server_frames += FrameDecoder().feed(data)
            events = self.server.receive_data(data)
            self.server_events += others(events)
            reply = transmitted(events)
            if not reply:
                return
            self.to_client(reply)
            data = self.client_reply

    def to_client(self, data: bytes) -> None:
        """Deliver server bytes to the client; its answer waits in ``client_reply``."""
        self.to_client_frames += FrameDecoder().feed(data)
        events = self.client.receive_data(data)
        self.client_events += others(events)
        self.client_reply = transmitted(events)

    def server_answers(self, data: bytes) -> None:
        """The server application sends ``data``; play out the client's RR polls."""
        self.to_client(data)
        if self.client_reply:
            self.to_server(self.client_reply)

    def connect(self) -> None:
        self.to_server(self.client.connect())


def test_snrm_ua_negotiation() -> None:
    link = Link(HdlcSettings(1010, 1010), HdlcSettings(max_info_tx=200, max_info_rx=1500))
    snrm = link.client.connect()
    assert HdlcFrame.decode(snrm).information == HdlcFrame.decode(h(GX_SNRM)).information
    link.to_server(snrm)
    assert link.server_events == [Connected(HdlcSettings(200, 1010, 1, 1))]
    assert link.client_events == [Connected(HdlcSettings(1010, 200, 1, 1))]
    assert link.client.connected and link.server.connected
    assert link.client.settings == HdlcSettings(1010, 200, 1, 1)


def test_default_snrm_has_no_information_and_matches_dlms_cosem_vector() -> None:
    client = HdlcConnection(Role.CLIENT, CLIENT, SERVER)
    assert client.connect() == h(DC_SNRM)
    client4 = HdlcConnection(Role.CLIENT, CLIENT, HdlcAddress(1, 17, 4))
    assert client4.connect() == h(GK_SNRM)


def test_published_ua_connects_client() -> None:
    client = HdlcConnection(Role.CLIENT, CLIENT, HdlcAddress(1, 17, 4), HdlcSettings(512, 512))
    client.connect()
    assert client.receive_data(h(GK_UA)) == [Connected(HdlcSettings(128, 128, 1, 1))]
    aarq_apdu = HdlcFrame.decode(h(GK_AARQ)).information[3:]
    assert client.send_apdu(aarq_apdu) == h(GK_AARQ)


def test_small_apdu_both_ways_and_llc() -> None:
    link = Link()
    link.connect()
    aarq_apdu = HdlcFrame.decode(h(DC_AARQ)).information[3:]
    data = link.client.send_apdu(aarq_apdu)
    assert data == h(DC_AARQ)
    link.to_server(data)
    assert link.server_events[-1] == ApduReceived(aarq_apdu)
    aare_apdu = HdlcFrame.decode(h(DC_AARE)).information[3:]
    reply = link.server.send_apdu(aare_apdu)
    assert reply == h(DC_AARE)  # N(S)=0, N(R)=1, F=1, LLC E6 E7 00
    assert link.client.receive_data(reply) == [ApduReceived(aare_apdu)]


@pytest.mark.parametrize("window", [1, 3])
def test_segmented_apdu_both_directions(window: int) -> None:
    small = HdlcSettings(max_info_tx=64, max_info_rx=64, window_tx=window, window_rx=window)
    link = Link(small, small)
    link.connect()
    request = bytes((i * 7) & 0xFF for i in range(1000))
    first = link.client.send_apdu(request)
    sent = FrameDecoder().feed(first)
    assert len(sent) == window
    assert all(f.segmented and len(f.information) == 64 for f in sent)
    assert [f.poll_final for f in sent] == [False] * (window - 1) + [True]
    link.to_server(first)
    assert link.server_events[-1] == ApduReceived(request)
    segments = -(-(len(request) + 3) // 64)
    i_frames = [f for f in link.to_server_frames if f.kind is FrameKind.I]
    assert len(i_frames) == segments
    assert [f.send_seq for f in i_frames] == [n & 7 for n in range(segments)]
    assert [f.segmented for f in i_frames] == [True] * (segments - 1) + [False]
    assert all(f.poll_final for f in i_frames[window - 1 :: window])
    rrs = [f for f in link.to_client_frames if f.kind is FrameKind.RR]
    assert len(rrs) == -(-segments // window) - 1  # one per window, none after the last
    assert all(f.poll_final for f in rrs)
    assert b"".join(f.information for f in i_frames) == b"\xe6\xe6\x00" + request

    link.to_server_frames.clear()
    link.to_client_frames.clear()
    response = bytes((i * 13 + 5) & 0xFF for i in range(1000))
    link.server_answers(link.server.send_apdu(response))
    assert link.client_events[-1] == ApduReceived(response)
    s_frames = [f for f in link.to_client_frames if f.kind is FrameKind.I]
    assert len(s_frames) == segments
    assert b"".join(f.information for f in s_frames) == b"\xe6\xe7\x00" + response
    assert all(f.poll_final for f in s_frames[window - 1 :: window])
    assert s_frames[-1].poll_final and not s_frames[-1].segmented
    c_rrs = [f for f in link.to_server_frames if f.kind is FrameKind.RR]
    assert len(c_rrs) == -(-segments // window) - 1 and all(f.poll_final for f in c_rrs)
    assert not link.client.decoder.dropped_frames and not link.server.decoder.dropped_frames
    assert link.client.ignored_frames == link.server.ignored_frames == 0

    # The link keeps working afterwards with the sequence numbers carried on.
    link.to_server(link.client.send_apdu(b"\xc0\x01\xc1"))
    assert link.server_events[-1] == ApduReceived(b"\xc0\x01\xc1")


def test_duplicate_i_frame_after_timeout_repeats_last_response() -> None:
    link = Link()
    link.connect()
    request = link.client.send_apdu(b"\xc0\x01\xc1\x00\x03")
    link.to_server(request)
    assert link.server_events.count(ApduReceived(b"\xc0\x01\xc1\x00\x03")) == 1
    # Before the application answers there is nothing to repeat: the retry is ignored.
    assert link.server.receive_data(link.client.on_timeout()) == []
    response = link.server.send_apdu(b"\xc4\x01\xc1\x00\x09\x01\x00")
    # The response is lost on the line; the client times out and sends its request again.
    retry = link.client.on_timeout()
    assert retry == request
    events = link.server.receive_data(retry)
    assert events == [Transmit(response)]  # repeated, APDU not handed up twice
    assert link.server_events.count(ApduReceived(b"\xc0\x01\xc1\x00\x03")) == 1
    assert link.client.receive_data(response) == [ApduReceived(b"\xc4\x01\xc1\x00\x09\x01\x00")]
    link.to_server(link.client.send_apdu(b"\xc0\x01\xc1\x00\x04"))
    assert link.server_events[-1] == ApduReceived(b"\xc0\x01\xc1\x00\x04")


def test_lost_rr_during_segmented_response_is_recovered() -> None:
    small = HdlcSettings(max_info_tx=32, max_info_rx=32)
    link = Link(small, small)
    link.connect()
    link.to_server(link.client.send_apdu(b"\xc0\x01"))
    response = bytes(range(100))
    first = link.server.send_apdu(response)
    rr = transmitted(link.client.receive_data(first))
    assert HdlcFrame.decode(rr).kind is FrameKind.RR
    second = transmitted(link.server.receive_data(rr))
    # The second segment is lost; the client times out and repeats its RR.
    assert link.client.on_timeout() == rr
    again = transmitted(link.server.receive_data(rr))
    assert again == second  # same N(S): a retransmission
    # The server's segment arrives twice (late original plus retransmission).
    rr2 = transmitted(link.client.receive_data(second))
    assert transmitted(link.client.receive_data(again)) == rr2  # duplicate: same RR again
    third = transmitted(link.server.receive_data(rr2))
    events = link.client.receive_data(third)
    rest = transmitted(link.server.receive_data(transmitted(events)))
    assert link.client.receive_data(rest) == [ApduReceived(response)]


def test_wrong_sequence_numbers_are_ignored() -> None:
    link = Link()
    link.connect()
    bogus = HdlcFrame(FrameKind.I, SERVER, CLIENT, True, 5, 0, False, b"\xe6\xe6\x00\x01")
    # The poll is answered: RR naming the frame the server expects (N(R) = 0), nothing taken.
    expected = HdlcFrame(FrameKind.RR, CLIENT, SERVER, recv_seq=0).encode()
    assert link.server.receive_data(bogus.encode()) == [Transmit(expected)]
    assert link.server.ignored_frames == 1
    assert isinstance(link.server.last_error, ProtocolError)
    # An RR acknowledging frames never sent changes nothing.
    bad_rr = HdlcFrame(FrameKind.RR, CLIENT, SERVER, recv_seq=4).encode()
    assert link.client.receive_data(bad_rr) == []
    assert link.client.ignored_frames == 1
    # A server I-frame out of sequence is dropped by the client.
    stray = HdlcFrame(FrameKind.I, CLIENT, SERVER, True, 3, 0, False, b"\xe6\xe7\x00\x01")
    assert link.client.receive_data(stray.encode()) == []
    # The link still works with the right numbers.
    link.to_server(link.client.send_apdu(b"\x01\x02"))
    assert link.server_events[-1] == ApduReceived(b"\x01\x02")


def test_server_answers_poll_with_nothing_to_send_and_missing_llc() -> None:
    link = Link()
    link.connect()
    poll = HdlcFrame(FrameKind.RR, SERVER, CLIENT, recv_seq=0).encode()
    answer = link.server.receive_data(poll)
    assert answer == [Transmit(HdlcFrame(FrameKind.RR, CLIENT, SERVER, recv_seq=0).encode())]
    no_llc = HdlcFrame(FrameKind.I, SERVER, CLIENT, True, 0, 0, False, b"\xc0\x01").encode()
    assert link.server.receive_data(no_llc) == []
    assert isinstance(link.server.last_error, DecodeError)


def test_disconnect_ua_and_dm() -> None:
    link = Link()
    link.connect()
    disc = link.client.disconnect()
    assert disc == h(GX_DISC)
    link.to_server(disc)
    assert link.server_events[-1] == Disconnected()
    assert link.client_events[-1] == Disconnected()
    assert link.client.state is link.server.state is LinkState.DISCONNECTED
    # DISC to a disconnected server: DM, which the disconnecting client takes as done.
    link.to_server(link.client.disconnect())
    assert link.to_client_frames[-1].kind is FrameKind.DM
    assert link.client_events[-1] == Disconnected()
    # An I-frame (P=1) to a disconnected server: DM, and the client is told it was rejected.
    link.client.state = LinkState.CONNECTED
    link.to_server(link.client.send_apdu(b"\x01"))
    assert link.client_events[-1] == PeerRejected(FrameKind.DM, b"")
    assert not link.client.connected


def test_dm_answer_to_snrm_and_frmr_reject_the_client() -> None:
    client = HdlcConnection(Role.CLIENT, CLIENT, SERVER)
    client.connect()
    dm = HdlcFrame(FrameKind.DM, CLIENT, SERVER).encode()
    assert client.receive_data(dm) == [PeerRejected(FrameKind.DM, b"")]
    assert client.state is LinkState.DISCONNECTED
    client.connect()
    client.receive_data(HdlcFrame(FrameKind.UA, CLIENT, SERVER).encode())
    assert client.connected
    frmr = HdlcFrame(FrameKind.FRMR, CLIENT, SERVER, information=b"\x10\x00\x01").encode()
    assert client.receive_data(frmr) == [PeerRejected(FrameKind.FRMR, b"\x10\x00\x01")]
    with pytest.raises(LinkError):
        client.send_apdu(b"\x01")


def test_server_rejects_bad_snrm_parameters_with_dm() -> None:
    server = HdlcConnection(Role.SERVER, SERVER, CLIENT)
    snrm = HdlcFrame(FrameKind.SNRM, SERVER, CLIENT, information=b"\x81\x80\x05\x05").encode()
    events = server.receive_data(snrm)
    assert [HdlcFrame.decode(e.data).kind for e in events if isinstance(e, Transmit)] == [
        FrameKind.DM
    ]
    assert not server.connected


def test_multidrop_server_ignores_other_addresses() -> None:
    meter_a = HdlcConnection(Role.SERVER, HdlcAddress(1, 17), CLIENT)
    meter_b = HdlcConnection(Role.SERVER, HdlcAddress(1, 18), CLIENT)
    client = HdlcConnection(Role.CLIENT, CLIENT, HdlcAddress(1, 18))
    bus = client.connect()
    assert meter_a.receive_data(bus) == []
    events_b = meter_b.receive_data(bus)
    assert Connected(HdlcSettings()) in events_b
    # Same physical address, another logical device: not for this connection either.
    other_ld = HdlcFrame(FrameKind.SNRM, HdlcAddress(2, 17), CLIENT).encode()
    assert meter_a.receive_data(other_ld) == []
    # A client ignores frames from another server on the bus.
    assert client.receive_data(HdlcFrame(FrameKind.UA, CLIENT, HdlcAddress(1, 17)).encode()) == []
    assert client.receive_data(transmitted(events_b)) == [Connected(HdlcSettings())]
    # handle_frame: a bus that decodes and routes frames itself.
    frame = HdlcFrame.decode(client.send_apdu(b"\x07"))
    assert meter_a.handle_frame(frame) == []
    assert meter_b.handle_frame(frame) == [ApduReceived(b"\x07")]


def test_server_binds_to_the_client_that_connects() -> None:
    server = HdlcConnection(Role.SERVER, SERVER, CLIENT)
    management = HdlcAddress(1)
    client = HdlcConnection(Role.CLIENT, management, SERVER)
    events = server.receive_data(client.connect())
    assert server.remote == management and server.connected
    assert client.receive_data(transmitted(events)) == [Connected(HdlcSettings())]
    # While connected, another client's frames are ignored.
    intruder = HdlcConnection(Role.CLIENT, CLIENT, SERVER)
    assert server.receive_data(intruder.connect()) == []


def test_usage_errors() -> None:
    server = HdlcConnection(Role.SERVER, SERVER, CLIENT)
    with pytest.raises(ProtocolError):
        server.connect()
    assert server.disconnect() == b""
    assert server.on_timeout() == b""
    link = Link(HdlcSettings(max_info_tx=32), HdlcSettings(max_info_rx=32))
    link.connect()
    link.client.send_apdu(bytes(100))
    with pytest.raises(ProtocolError):
        link.client.send_apdu(b"\x01")
