"""HDLC windows above 1 and negotiated information field sizes, both ways, sans-IO: the
client's and the meter's HdlcConnection talking through a list of frames."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.hdlc import FrameDecoder, FrameKind, HdlcAddress, HdlcFrame
from protocols.hdlc_link import (
    ApduReceived,
    HdlcConnection,
    HdlcEvent,
    HdlcSettings,
    Role,
    Transmit,
)

CLIENT = HdlcAddress(16)
SERVER = HdlcAddress(1, 17)


def _frames(data: bytes) -> list[HdlcFrame]:
    return list(FrameDecoder().feed(data))


def _link(client: HdlcSettings, server: HdlcSettings) -> tuple[HdlcConnection, HdlcConnection]:
    c = HdlcConnection(Role.CLIENT, CLIENT, SERVER, client)
    s = HdlcConnection(Role.SERVER, SERVER, CLIENT, server)
    (snrm,) = _frames(c.connect())
    ua_events = s.handle_frame(snrm)
    (ua,) = [e for e in ua_events if isinstance(e, Transmit)]
    c.handle_frame(_frames(ua.data)[0])
    assert c.connected and s.connected
    return c, s


def _deliver(
    to: HdlcConnection, data: bytes, sizes: list[int], windows: list[int], drop: int | None = None
) -> tuple[list[bytes], bytes]:
    """Frames of one transmission into ``to``: (APDUs it delivered, what it sends back).

    ``sizes`` collects every I-frame's information length, ``windows`` the number of I-frames
    in each transmission; ``drop`` loses that frame of the transmission on the way."""
    apdus: list[bytes] = []
    answer = b""
    frames = _frames(data)
    windows.append(sum(f.kind is FrameKind.I for f in frames))
    for index, frame in enumerate(frames):
        if frame.kind is FrameKind.I:
            sizes.append(len(frame.information))
        if index == drop:
            continue
        events: list[HdlcEvent] = to.handle_frame(frame)
        for event in events:
            if isinstance(event, Transmit):
                answer += event.data
            elif isinstance(event, ApduReceived):
                apdus.append(event.apdu)
    return apdus, answer


def test_negotiation_takes_the_smaller_of_both_sides() -> None:
    c, s = _link(HdlcSettings(40, 100, 3, 5), HdlcSettings(128, 64, 7, 2))
    assert c.settings == HdlcSettings(max_info_tx=40, max_info_rx=100, window_tx=2, window_rx=5)
    assert s.settings == HdlcSettings(max_info_tx=100, max_info_rx=40, window_tx=5, window_rx=2)


@pytest.mark.parametrize(("window", "transmissions"), [(1, 8), (3, 3), (7, 2)])
def test_client_segments_go_a_window_at_a_time_within_the_meter_info_size(
    window: int, transmissions: int
) -> None:
    c, s = _link(HdlcSettings(40, 40, window, window), HdlcSettings(128, 128, 7, 7))
    apdu = (bytes(range(256)) * 2)[:297]  # 300 bytes with the LLC: 8 segments of 40
    sizes: list[int] = []
    windows: list[int] = []
    data = c.send_apdu(apdu)
    got: list[bytes] = []
    while True:
        delivered, answer = _deliver(s, data, sizes, windows)
        got += delivered
        if delivered:
            break
        (rr,) = _frames(answer)
        assert rr.kind is FrameKind.RR
        _, data = _deliver(c, answer, [], [])
    assert got == [apdu]
    assert max(sizes) <= 40 and len(sizes) == 8
    assert max(windows) <= window and len(windows) == transmissions


def test_meter_answer_and_its_following_apdus_share_windows_and_polls() -> None:
    """A GBT window from the meter: three APDUs in 32-byte segments, windows of 4 frames."""
    c, s = _link(HdlcSettings(64, 32, 4, 4), HdlcSettings(128, 128, 7, 7))
    _, _ = _deliver(s, c.send_apdu(b"\xc0\x01\x01"), [], [])
    answers = [bytes([0xE0]) + bytes([n]) * 70 for n in range(3)]
    sizes: list[int] = []
    windows: list[int] = []
    data = s.send_apdu(answers[0], following=answers[1:])
    got: list[bytes] = []
    while len(got) < 3:
        delivered, back = _deliver(c, data, sizes, windows)
        got += delivered
        if not back:
            back = c.poll()  # the client waits for the rest of the GBT window
        _, data = _deliver(s, back, [], [])
    assert got == answers
    assert max(sizes) <= 32 and max(windows) <= 4
    assert not s.sending


@given(st.integers(0, 6), st.integers(1, 7), st.integers(40, 400))
@settings(max_examples=60, deadline=None)
def test_a_frame_lost_in_a_window_is_sent_again(drop: int, window: int, size: int) -> None:
    """The client's RR names the first frame it missed; the meter repeats from there."""
    c, s = _link(HdlcSettings(32, 32, window, window), HdlcSettings(128, 128, 7, 7))
    _deliver(s, c.send_apdu(b"\xc0\x01\x01"), [], [])
    answer = bytes(range(256)) * 2
    answer = answer[:size]
    data = s.send_apdu(answer)
    first = True
    got: list[bytes] = []
    for _ in range(100):
        delivered, back = _deliver(c, data, [], [], drop if first else None)
        first = False
        got += delivered
        if got:
            break
        if not back:
            back = c.on_timeout() if c.sending else c.poll()
        _, data = _deliver(s, back, [], [])
    assert got == [answer]


def test_meter_rejects_an_information_field_over_the_negotiated_size() -> None:
    """A client that ignores the UA and sends 100 bytes where 64 were agreed: FRMR."""
    c, s = _link(HdlcSettings(128, 128, 1, 1), HdlcSettings(64, 64, 1, 1))
    assert c.settings.max_info_tx == 64
    big = HdlcFrame(FrameKind.I, SERVER, CLIENT, True, 0, 0, False, b"\xe6\xe6\x00" + bytes(97))
    events = s.handle_frame(big)
    (reply,) = [e for e in events if isinstance(e, Transmit)]
    (frmr,) = _frames(reply.data)
    assert frmr.kind is FrameKind.FRMR and not s.connected
    assert "100 information bytes, more than the negotiated 64" in str(s.last_error)
    (rejected,) = c.handle_frame(frmr)
    assert rejected.kind is FrameKind.FRMR and not c.connected


@given(st.integers(0, 6), st.integers(2, 7), st.integers(100, 400))
@settings(max_examples=60, deadline=None)
def test_a_frame_of_the_client_window_lost_is_asked_for_by_rr(
    drop: int, window: int, size: int
) -> None:
    """The meter's RR names the first frame it missed; the client sends again from there,
    without waiting out a timeout."""
    c, s = _link(HdlcSettings(32, 32, window, window), HdlcSettings(128, 128, 7, 7))
    apdu = (bytes(range(256)) * 2)[:size]
    data = c.send_apdu(apdu)
    first = True
    got: list[bytes] = []
    for _ in range(100):
        delivered, back = _deliver(s, data, [], [], drop if first else None)
        first = False
        got += delivered
        if got:
            break
        if not back:  # the lost frame carried the poll bit: only a timeout helps
            assert drop % window == window - 1 or drop == -(-(size + 3) // 32) - 1
            data = c.on_timeout()
            continue
        _, data = _deliver(c, back, [], [])
        assert data, "the client did not answer the meter's RR"
    assert got == [apdu]
