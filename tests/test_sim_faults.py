"""Injected faults, seen by the project's client as the right typed errors.

Every fault is a pure function of (seed, meter, session attempt), so each test picks a meter
whose first session has the fault and whose second has none, checks the typed error of the
first and that the retry reads the meter correctly.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from collector.session import Session
from collector.transport import open_transport
from contracts.meters import MeterTarget
from protocols.errors import DecodeError, DlmsError, DlmsTimeout, LinkError
from simulator import model
from simulator.faults import FaultPlan, FaultSpec, SessionFault
from simulator.fleet import Fleet, FleetSpec, LatencySpec
from simulator.meter import SimulatedMeter
from simulator.server import corrupt_hdlc, garble_wrapper

SEED = 5
NOW = 1773999600.0  # 2026-03-20T10:00Z
N_TCP = 300
N_BUS = 300
FIRST_BUS_METER = N_TCP + 1
HALF = FaultSpec(no_answer=0.2, corrupt_frame=0.2, drop=0.2, slow=0.2, slow_delay_s=0.3)


def pick(
    spec: FaultSpec,
    fault: SessionFault,
    numbers: range,
    retry: SessionFault = SessionFault.NONE,
    now: float = NOW,
) -> int:
    """A powered meter whose session 0 has ``fault`` and session 1 has ``retry``."""
    plan = FaultPlan(spec, SEED)
    for n in numbers:
        if (
            plan.session_fault(n, 0) is fault
            and plan.session_fault(n, 1) is retry
            and SimulatedMeter(n, SEED).online(now)
        ):
            return n
    raise AssertionError(f"no meter in {numbers} with {fault} then {retry}")


def fleet_spec(faults: FaultSpec, **kw: object) -> FleetSpec:
    args: dict[str, object] = {
        "seed": SEED,
        "tcp_meters": N_TCP,
        "buses": 1,
        "meters_per_bus": N_BUS,
        "tcp_port": 0,
        "baudrate": None,
        "faults": faults,
        "bus_silence_s": 0.5,
    }
    args.update(kw)
    return FleetSpec(**args)  # type: ignore[arg-type]


def quick(target: MeterTarget) -> MeterTarget:
    """Short HDLC timers so a silent meter is noticed in well under a second."""
    return MeterTarget(
        target.transport,
        host=target.host,
        port=target.port,
        device=target.device,
        physical_address=target.physical_address,
        frame_timeout=0.25,
        retries=1,
    )


async def read_four(target: MeterTarget, timeout: float = 1.0) -> tuple[int, int]:
    """AARQ then four GETs (so any fault point 0..3 strikes); returns (A+ Wh, retransmissions)."""
    transport = open_transport(quick(target))
    async with Session(transport, request_timeout=timeout) as s:
        await s.read_clock()
        await s.get(1, "0.0.42.0.0.255", 2)
        await s.get(1, "0.0.96.1.0.255", 2)
        energy = await s.read_register("1.0.1.8.0.255")
    assert isinstance(energy.raw, int)
    return energy.raw, transport.stats.retransmissions


def truth_energy(number: int, now: float = NOW) -> int:
    spec = model.meter_spec(number, SEED)
    return model.registers(spec, model.meter_clock(spec, now)).active_import


TCP = range(1, N_TCP + 1)
BUS = range(FIRST_BUS_METER, FIRST_BUS_METER + N_BUS)


@pytest.mark.parametrize(
    ("numbers", "fault", "error"),
    [
        (TCP, SessionFault.NO_ANSWER, DlmsTimeout),
        (TCP, SessionFault.CORRUPT_FRAME, DecodeError),
        (TCP, SessionFault.DROP, LinkError),
        (BUS, SessionFault.NO_ANSWER, DlmsTimeout),
        (BUS, SessionFault.DROP, LinkError),
    ],
)
async def test_transient_fault_then_retry_succeeds(
    numbers: range, fault: SessionFault, error: type[DlmsError]
) -> None:
    number = pick(HALF, fault, numbers)
    async with Fleet(fleet_spec(HALF), clock=lambda: NOW) as fleet:
        target = fleet.target(number)
        with pytest.raises(error) as caught:
            await read_four(target)
        assert caught.value.transient
        assert type(caught.value) is error
        energy, _ = await read_four(target)
        assert energy == truth_energy(number)
        counted = fleet.stats()["tcp" if numbers is TCP else "buses"]["faults"]
        assert counted == {fault.value: 1}


async def test_bad_hdlc_frame_is_dropped_and_retransmitted() -> None:
    number = pick(HALF, SessionFault.CORRUPT_FRAME, BUS)
    async with Fleet(fleet_spec(HALF), clock=lambda: NOW) as fleet:
        energy, retransmissions = await read_four(fleet.target(number))
        assert energy == truth_energy(number)
        assert retransmissions >= 1
        clean, none = await read_four(fleet.target(number))
        assert (clean, none) == (energy, 0)


@pytest.mark.parametrize("numbers", [TCP, BUS])
async def test_slow_meter_times_out_short_and_answers_long(numbers: range) -> None:
    number = pick(HALF, SessionFault.SLOW, numbers, retry=SessionFault.SLOW)
    async with Fleet(fleet_spec(HALF), clock=lambda: NOW) as fleet:
        with pytest.raises(DlmsTimeout):
            await read_four(fleet.target(number), timeout=0.1)
        target = fleet.target(number)
        if target.transport == "hdlc-tcp":
            target = MeterTarget(
                "hdlc-tcp",
                host=target.host,
                port=target.port,
                physical_address=target.physical_address,
                frame_timeout=3.0,
                retries=0,
            )
            async with Session(open_transport(target), request_timeout=3.0) as s:
                energy = (await s.read_register("1.0.1.8.0.255")).raw
        else:
            energy, _ = await read_four(target, timeout=3.0)
        assert energy == truth_energy(number)


@pytest.mark.parametrize(("numbers", "error"), [(TCP, LinkError), (BUS, DlmsTimeout)])
async def test_permanently_offline_meter(numbers: range, error: type[DlmsError]) -> None:
    spec = FaultSpec(offline=0.3)
    plan = FaultPlan(spec, SEED)
    dead = [n for n in numbers if plan.permanently_offline(n)]
    alive = [n for n in numbers if not plan.permanently_offline(n)]
    assert dead and alive
    async with Fleet(fleet_spec(spec), clock=lambda: NOW) as fleet:
        for _ in range(2):
            with pytest.raises(error):
                await read_four(fleet.target(dead[0]))
        live = next(n for n in alive if SimulatedMeter(n, SEED).online(NOW))
        energy, _ = await read_four(fleet.target(live))
        assert energy == truth_energy(live)


async def test_intermittent_meter_goes_offline_and_comes_back() -> None:
    spec = FaultSpec(intermittent=1.0, intermittent_window_s=3600, intermittent_down_share=0.5)
    plan = FaultPlan(spec, SEED)
    number, down, up = 0, 0.0, 0.0
    for n in TCP:
        times = [NOW + h * 3600 for h in range(48)]
        downs = [t for t in times if not plan.online(n, t)]
        ups = [t for t in times if plan.online(n, t) and SimulatedMeter(n, SEED).online(t)]
        if downs and ups:
            number, down, up = n, downs[0], ups[0]
            break
    assert number
    now = [down]
    clock: Callable[[], float] = lambda: now[0]  # noqa: E731
    async with Fleet(fleet_spec(spec), clock=clock) as fleet:
        with pytest.raises(LinkError):
            await read_four(fleet.target(number))
        now[0] = up
        energy, _ = await read_four(fleet.target(number))
        assert energy == truth_energy(number, up)


async def test_gprs_latency_fleet_reads_correctly() -> None:
    latency = LatencySpec("gprs", median_s=0.02, max_s=0.1)
    async with Fleet(fleet_spec(FaultSpec(), latency=latency), clock=lambda: NOW) as fleet:
        energy, _ = await read_four(fleet.target(3), timeout=2.0)
        assert energy == truth_energy(3)


def test_fault_draws_are_seeded_and_shares_hold() -> None:
    spec = FaultSpec(offline=0.1, no_answer=0.05, corrupt_frame=0.05, drop=0.05)
    a, b = FaultPlan(spec, SEED), FaultPlan(spec, SEED)
    draws = [a.next_session(n) for n in range(4000)]
    assert draws == [b.next_session(n) for n in range(4000)]
    share = sum(f is not SessionFault.NONE for f, _ in draws) / len(draws)
    assert 0.11 < share < 0.19
    offline = sum(a.permanently_offline(n) for n in range(4000)) / 4000
    assert 0.07 < offline < 0.13
    assert FaultPlan(FaultSpec(), SEED).next_session(1) == (SessionFault.NONE, 0)
    with pytest.raises(ValueError, match="add up"):
        FaultSpec(no_answer=0.6, drop=0.6)


def test_corruptions_break_the_checks() -> None:
    from protocols.hdlc import FrameDecoder, FrameKind, HdlcAddress, HdlcFrame
    from protocols.wrapper import WrapperDecoder, encode_wrapper

    frame = HdlcFrame(FrameKind.UA, HdlcAddress(16), HdlcAddress(1, 17)).encode()
    decoder = FrameDecoder()
    assert decoder.feed(corrupt_hdlc(frame)) == []
    assert decoder.dropped_frames == 1
    with pytest.raises(DecodeError):
        WrapperDecoder().feed(garble_wrapper(encode_wrapper(1, 16, b"\x61\x00")))
