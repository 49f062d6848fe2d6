"""Ciphered sessions (HLS-GMAC + suite 0) against the simulator over the TCP wrapper.

Real sockets on 127.0.0.1, the real simulated meter. Every rejection the meter can give is
observed by the client as its own non-transient error class; the tampering cases use a
transport that alters bytes on the wire (an attacker in the middle), not a mock.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from collector.profile_reader import read_profile
from collector.session import Session
from collector.transport import TcpWrapperTransport
from protocols.errors import (
    AccessDenied,
    AssociationRefused,
    AuthenticationFailed,
    DecipheringRejected,
    DlmsError,
    HlsVerificationFailed,
    InvocationCounterRejected,
    KeyRejected,
    ResponseAuthenticationFailed,
    SecurityError,
    SystemTitleRejected,
)
from protocols.security import (
    MemoryCounterStore,
    Policy,
    SecurityContext,
    SecurityKeys,
    decipher_apdu,
    is_ciphered,
)
from protocols.xdlms import Authentication
from simulator import model
from simulator.meter import SimulatedMeter
from simulator.server import WrapperServer
from storage.database import open_database
from storage.keystore import KeyStore, MasterKey, security_context

ROOT = Path(__file__).resolve().parents[1]
SEED = 2026
METER_ID = 4242
NOW = 1772409600 + 10 * model.DAY + 13 * 3600 + 17.5
MANAGEMENT = 1
MASTER = MasterKey(bytes(range(32)))


def keys_of(meter: SimulatedMeter) -> SecurityKeys:
    k = meter.keys
    return SecurityKeys(k.encryption_key, k.authentication_key)


class Server:
    def __init__(self, meter: SimulatedMeter) -> None:
        self.meter = meter
        self.server = WrapperServer(lambda _ip, _port: meter, "127.0.0.1", 0, clock=lambda: NOW)

    @property
    def port(self) -> int:
        return self.server.port


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    s = Server(SimulatedMeter(METER_ID, SEED, require_security=True))
    await s.server.start()
    try:
        yield s
    finally:
        await s.server.close()


class Tamper(TcpWrapperTransport):
    """Alters the ``nth`` request (or response) on the wire: the man in the middle."""

    def __init__(
        self,
        port: int,
        nth: int,
        edit: Callable[[bytes, list[bytes]], bytes],
        responses: bool = False,
    ) -> None:
        super().__init__("127.0.0.1", port, client_wport=MANAGEMENT)
        self.nth, self.edit, self.responses = nth, edit, responses
        self.sent: list[bytes] = []
        self.count = 0

    async def request(self, apdu: bytes, timeout: float) -> bytes:
        self.count += 1
        hit = self.count == self.nth
        if hit and not self.responses:
            apdu = self.edit(apdu, self.sent)
        self.sent.append(apdu)
        answer = await super().request(apdu, timeout)
        return self.edit(answer, self.sent) if hit and self.responses else answer


def flip_last(data: bytes, _sent: list[bytes]) -> bytes:
    return data[:-1] + bytes((data[-1] ^ 0x01,))


def context(
    meter: SimulatedMeter,
    store: MemoryCounterStore | None = None,
    policy: Policy = "authenticated-encrypted",
    **kw: object,
) -> SecurityContext:
    return SecurityContext(
        keys_of(meter), counters=store or MemoryCounterStore(), policy=policy, **kw
    )  # type: ignore[arg-type]


async def full_read(
    transport: TcpWrapperTransport, ctx: SecurityContext, meter: SimulatedMeter
) -> None:
    """Clock, A+ register and four hours of load profile, checked against ground truth."""
    mt = meter.meter_time(NOW)
    day = int(mt) // model.DAY - 1
    start = day * model.DAY + 10 * 3600
    end = start + 4 * 3600
    async with Session(transport, authentication="hls-gmac", security=ctx, request_timeout=5) as s:
        clock = await s.read_clock()
        assert clock.to_datetime().timestamp() == pytest.approx(mt, abs=0.011)
        reg = await s.read_register("1.0.1.8.0.255")
        assert reg.raw == model.registers(meter.spec, mt).active_import
        profile = await read_profile(
            s,
            "1.0.99.1.0.255",
            datetime.fromtimestamp(start, UTC),
            datetime.fromtimestamp(end, UTC),
        )
        rows = [(int(r.timestamp.timestamp()), *r.values[1:]) for r in profile.rows]
        assert rows == model.ground_truth(meter.meter_id, SEED, start, end + 1).load_profile
        assert len(rows) == 17
        assert s.association is not None and s.association.ciphered


@pytest.mark.parametrize("policy", ["authenticated-encrypted", "authenticated", "encrypted"])
async def test_full_session_equals_ground_truth(server: Server, policy: Policy) -> None:
    transport = Tamper(server.port, 0, flip_last)  # never fires: records the wire
    ctx = context(server.meter, policy=policy)
    await full_read(transport, ctx, server.meter)
    ciphered = [a for a in transport.sent[1:-1]]  # between AARQ and RLRQ
    assert ciphered and all(is_ciphered(a) for a in ciphered)
    counters = [decipher_apdu(a).invocation_counter for a in ciphered]
    assert counters == sorted(set(counters))  # strictly increasing, never reused
    assert server.meter.state.client_invocation_counter == counters[-1]
    if "encrypted" in policy:
        # the register's OBIS code is not visible on the wire
        assert not any(bytes((1, 0, 1, 8, 0, 255)) in a for a in ciphered)


async def test_wrong_system_title_is_rejected(server: Server) -> None:
    transport = TcpWrapperTransport("127.0.0.1", server.port, client_wport=MANAGEMENT)
    ctx = context(server.meter, system_title=b"XYZ\x00\x00\x00\x00\x09")
    with pytest.raises(SystemTitleRejected) as info:
        async with Session(transport, authentication="hls-gmac", security=ctx):
            pass
    assert info.value.diagnostic == 3


async def test_wrong_key_is_rejected(server: Server) -> None:
    transport = TcpWrapperTransport("127.0.0.1", server.port, client_wport=MANAGEMENT)
    good = keys_of(server.meter)
    ctx = SecurityContext(
        SecurityKeys(good.encryption_key, bytes(16)), counters=MemoryCounterStore()
    )
    with pytest.raises(KeyRejected):
        async with Session(transport, authentication="hls-gmac", security=ctx):
            pass


async def test_replayed_counter_is_rejected_at_association(server: Server) -> None:
    store = MemoryCounterStore()
    await full_read(
        TcpWrapperTransport("127.0.0.1", server.port, client_wport=MANAGEMENT),
        context(server.meter, store),
        server.meter,
    )
    transport = TcpWrapperTransport("127.0.0.1", server.port, client_wport=MANAGEMENT)
    with pytest.raises(InvocationCounterRejected) as info:
        async with Session(
            transport,
            authentication="hls-gmac",
            security=context(server.meter, MemoryCounterStore()),
        ):
            pass
    assert info.value.expected == server.meter.state.client_invocation_counter + 1


async def test_replayed_request_is_rejected_mid_session(server: Server) -> None:
    def replay(_apdu: bytes, sent: list[bytes]) -> bytes:
        return sent[-1]  # the previous ciphered request, byte for byte

    transport = Tamper(server.port, 4, replay)  # AARQ, HLS, clock, then replay the clock GET
    with pytest.raises(InvocationCounterRejected) as info:
        async with Session(
            transport, authentication="hls-gmac", security=context(server.meter)
        ) as s:
            await s.read_clock()
            await s.read_clock()
    assert info.value.expected is not None


async def test_tampered_request_tag_is_rejected(server: Server) -> None:
    transport = Tamper(server.port, 3, flip_last)  # the first GET after HLS
    with pytest.raises(DecipheringRejected):
        async with Session(
            transport, authentication="hls-gmac", security=context(server.meter)
        ) as s:
            await s.read_clock()


async def test_tampered_response_fails_locally(server: Server) -> None:
    transport = Tamper(server.port, 3, flip_last, responses=True)
    with pytest.raises(ResponseAuthenticationFailed):
        async with Session(
            transport, authentication="hls-gmac", security=context(server.meter)
        ) as s:
            await s.read_clock()


async def test_meter_that_cannot_prove_the_keys_fails_hls(server: Server) -> None:
    # Encryption only has no tag: an altered f(CtoS) reaches the HLS check itself.
    transport = Tamper(server.port, 2, flip_last, responses=True)
    with pytest.raises(HlsVerificationFailed):
        async with Session(
            transport, authentication="hls-gmac", security=context(server.meter, policy="encrypted")
        ):
            pass


async def test_wrong_f_stoc_fails_authentication(server: Server) -> None:
    ctx = context(server.meter, policy="encrypted")

    def spoil(apdu: bytes, _sent: list[bytes]) -> bytes:
        # decipher, alter f(StoC)'s last byte, cipher again with a fresh counter
        header = decipher_apdu(apdu)
        plain = header.open(ctx.system_title, ctx.keys)
        return ctx.wrap(plain[:-1] + bytes((plain[-1] ^ 1,)))

    transport = Tamper(server.port, 2, spoil)
    with pytest.raises(AuthenticationFailed):
        async with Session(transport, authentication="hls-gmac", security=ctx):
            pass


async def test_unciphered_association_refused_by_secured_meter(server: Server) -> None:
    """The management client must cipher; LLS does not get past a secured meter either."""
    tries: list[tuple[Authentication, bytes | None]] = [
        ("none", None),
        ("lls", server.meter.spec.password),
    ]
    for auth, password in tries:
        transport = TcpWrapperTransport("127.0.0.1", server.port, client_wport=MANAGEMENT)
        with pytest.raises(AssociationRefused) as info:
            async with Session(transport, authentication=auth, password=password):
                pass
        assert info.value.diagnostic == 2 and not isinstance(info.value, SecurityError)


async def test_public_client_of_a_secured_meter_reads_only_the_frame_counter(
    server: Server,
) -> None:
    """Unciphered, the public client sees the frame counter (the highest client counter the
    meter accepted) and the logical device name; the energy registers stay closed."""
    server.meter.state.client_invocation_counter = 4242
    async with Session(TcpWrapperTransport("127.0.0.1", server.port)) as session:
        assert await session.get(1, "0.0.43.1.0.255", 2) == 4242
        assert await session.get(1, "0.0.42.0.0.255", 2) == server.meter.spec.logical_device_name
        with pytest.raises(AccessDenied):
            await session.read_register("1.0.1.8.0.255")
        with pytest.raises(AccessDenied):
            await session.read_clock()


def test_security_errors_are_distinct_and_never_retried() -> None:
    classes: list[type[DlmsError]] = [
        KeyRejected,
        DecipheringRejected,
        InvocationCounterRejected,
        SystemTitleRejected,
        ResponseAuthenticationFailed,
        HlsVerificationFailed,
    ]
    names = {c.error_class for c in classes}
    assert len(names) == len(classes)
    assert not any(c.transient for c in classes)


async def test_counter_persists_across_processes(
    server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A new process continues above every counter used; and nothing leaks any key."""
    caplog.set_level(logging.DEBUG)
    db_file = tmp_path / "hes.db"
    meter = server.meter
    db = open_database(str(db_file))
    store = KeyStore(db, MASTER)
    store.put(str(METER_ID), keys_of(meter), meter.keys.system_title)
    ctx = security_context(store, str(METER_ID))
    await full_read(
        TcpWrapperTransport("127.0.0.1", server.port, client_wport=MANAGEMENT), ctx, meter
    )
    used = meter.state.client_invocation_counter
    db.close()
    # a second process: own interpreter, own database handle, same files
    script = (
        "import asyncio, json, sys\n"
        "from collector.session import Session\n"
        "from collector.transport import TcpWrapperTransport\n"
        "from storage.database import open_database\n"
        "from storage.keystore import KeyStore, MasterKey, security_context\n"
        "db = open_database(sys.argv[1])\n"
        f"ctx = security_context(KeyStore(db, MasterKey(bytes(range(32)))), '{METER_ID}')\n"
        "async def main():\n"
        f"    t = TcpWrapperTransport('127.0.0.1', {server.port}, client_wport=1)\n"
        "    async with Session(t, authentication='hls-gmac', security=ctx) as s:\n"
        "        c = await s.read_clock()\n"
        "    return c\n"
        "c = asyncio.run(main())\n"
        "print(json.dumps({'year': c.year}))\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        str(db_file),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert json.loads(out)["year"] >= 2026
    assert meter.state.client_invocation_counter > used
    # and a client that forgot its counter is caught by the meter (the check can fail)
    with pytest.raises(InvocationCounterRejected):
        async with Session(
            TcpWrapperTransport("127.0.0.1", server.port, client_wport=1),
            authentication="hls-gmac",
            security=context(meter),
        ):
            pass
    # no key in the logs, the stdout/stderr of the run, or the database file
    k = meter.keys
    secrets = [k.encryption_key, k.authentication_key]
    texts = [caplog.text, out.decode(), err.decode(), repr(ctx), repr(store)]
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("hes.db*"))
    for key in secrets:
        for form in (key.hex(), key.hex().upper()):
            assert all(form not in t for t in texts)
            assert form.encode() not in raw
        assert key not in raw
