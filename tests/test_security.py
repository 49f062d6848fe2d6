"""Suite-0 ciphering and HLS-GMAC (protocols.security): Green Book vectors and properties.

Vectors: the Green Book (DLMS UA 1000-2) security examples as carried by dlms-cosem's own
test suite (github.com/u9n/dlms-cosem, tests/test_security.py: test_encrypt_authenticated,
test_gmac): EK 000102..0F, AK D0D1..DF, server system title 4D4D4D0000BC614E, IC 01234567, a
GET of the clock's attribute 2; and the HLS-GMAC f(StoC) of client title 4D4D4D0000000001,
IC 1, StoC 503677524A323146. The authenticated-only and encrypted-only forms are checked
against dlms-cosem's ``gmac``/``encrypt`` as independent implementations.
"""

from __future__ import annotations

import random

import pytest
from dlms_cosem import security as dc_security

from protocols import xdlms
from protocols.errors import (
    DecodeError,
    HlsVerificationFailed,
    ReplayedResponse,
    ResponseAuthenticationFailed,
    SystemTitleMismatch,
)
from protocols.security import (
    GENERAL_GLO_CIPHERING,
    MemoryCounterStore,
    SecurityContext,
    SecurityKeys,
    cipher_apdu,
    decipher_apdu,
    decrypt_payload,
    encrypt_payload,
    hls_gmac,
    security_control,
    verify_hls_gmac,
)

EK = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
AK = bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF")
KEYS = SecurityKeys(EK, AK)
SERVER_TITLE = bytes.fromhex("4D4D4D0000BC614E")
CLIENT_TITLE = bytes.fromhex("4D4D4D0000000001")
IC = 0x01234567
GET_CLOCK = bytes.fromhex("C0010000080000010000FF0200")
GB_CIPHERED = bytes.fromhex("411312FF935A47566827C467BC7D825C3BE4A77C3FCC056B6B")


def test_green_book_glo_get_request_authenticated_encrypted() -> None:
    out = cipher_apdu(
        GET_CLOCK, sc=0x30, system_title=SERVER_TITLE, invocation_counter=IC, keys=KEYS
    )
    assert out == bytes.fromhex("C81E3001234567") + GB_CIPHERED
    header = decipher_apdu(out)
    assert (header.sc, header.invocation_counter, header.expected_tag) == (0x30, IC, 0xC0)
    assert header.open(SERVER_TITLE, KEYS) == GET_CLOCK


def test_encrypted_only_is_the_same_keystream_without_tag() -> None:
    out = cipher_apdu(
        GET_CLOCK, sc=0x20, system_title=SERVER_TITLE, invocation_counter=IC, keys=KEYS
    )
    assert out == bytes.fromhex("C8122001234567") + GB_CIPHERED[: len(GET_CLOCK)]
    assert decipher_apdu(out).open(SERVER_TITLE, KEYS) == GET_CLOCK


def test_authenticated_only_tag_matches_dlms_cosem_gmac() -> None:
    out = encrypt_payload(0x10, SERVER_TITLE, IC, KEYS, GET_CLOCK)
    sc = dc_security.SecurityControlField(security_suite=0, authenticated=True)
    expected = dc_security.gmac(sc, SERVER_TITLE, IC, EK, AK, GET_CLOCK)
    assert out == GET_CLOCK + expected
    assert decrypt_payload(0x10, SERVER_TITLE, IC, KEYS, out) == GET_CLOCK


def test_green_book_hls_gmac_f_stoc() -> None:
    stoc = bytes.fromhex("503677524A323146")
    reply = hls_gmac(CLIENT_TITLE, 1, KEYS, stoc)
    assert reply == bytes.fromhex("1000000001") + bytes.fromhex("1A52FE7DD3E72748973C1E28")
    assert verify_hls_gmac(reply, CLIENT_TITLE, KEYS, stoc) == 1
    assert verify_hls_gmac(reply, SERVER_TITLE, KEYS, stoc) is None
    assert verify_hls_gmac(reply[:-1] + bytes((reply[-1] ^ 1,)), CLIENT_TITLE, KEYS, stoc) is None


def test_matches_dlms_cosem_encrypt_on_random_inputs() -> None:
    rng = random.Random(6)
    sc = dc_security.SecurityControlField(security_suite=0, authenticated=True, encrypted=True)
    for _ in range(200):
        keys = SecurityKeys(rng.randbytes(16), rng.randbytes(16))
        title, ic = rng.randbytes(8), rng.getrandbits(32)
        plain = rng.randbytes(rng.randint(1, 600))
        ours = encrypt_payload(0x30, title, ic, keys, plain)
        theirs = dc_security.encrypt(
            sc, title, ic, keys.encryption_key, plain, keys.authentication_key
        )
        assert ours == theirs
        assert decrypt_payload(0x30, title, ic, keys, theirs) == plain


@pytest.mark.parametrize("sc", [0x10, 0x30])
def test_any_flipped_bit_fails_the_tag(sc: int) -> None:
    out = cipher_apdu(GET_CLOCK, sc=sc, system_title=SERVER_TITLE, invocation_counter=IC, keys=KEYS)
    for i in range(2, len(out)):  # every byte after tag and length: SC, IC, payload, tag
        bad = bytearray(out)
        bad[i] ^= 0x01
        expected = DecodeError if i == 2 else ResponseAuthenticationFailed  # SC -> suite 1
        with pytest.raises(expected):
            decipher_apdu(bytes(bad)).open(SERVER_TITLE, KEYS)
    other = SecurityKeys(EK, bytes(16))
    with pytest.raises(ResponseAuthenticationFailed):
        decipher_apdu(out).open(SERVER_TITLE, other)


def test_long_apdus_general_and_dedicated_round_trip() -> None:
    plain = xdlms.build_get_response(3, bytes((0x09, 0x82, 0x01, 0x2C)) + bytes(300))
    for general, dedicated in ((False, False), (True, False), (False, True)):
        out = cipher_apdu(
            plain,
            sc=0x30,
            system_title=SERVER_TITLE,
            invocation_counter=9,
            keys=KEYS,
            general=general,
            dedicated=dedicated,
        )
        header = decipher_apdu(out)
        if general:
            assert out[0] == GENERAL_GLO_CIPHERING and header.system_title == SERVER_TITLE
        else:
            assert out[0] == (0xD4 if dedicated else 0xCC) and out[1] == 0x82  # 2-byte length
        assert header.dedicated is dedicated
        assert header.open(SERVER_TITLE, KEYS) == plain


def test_glo_initiate_request_fits_an_aarq() -> None:
    initiate = xdlms.build_initiate_request()
    glo = cipher_apdu(initiate, sc=0x30, system_title=CLIENT_TITLE, invocation_counter=5, keys=KEYS)
    assert glo[0] == 0x21
    aarq = xdlms.build_aarq(
        authentication="hls-gmac",
        password=b"K56iVagY",
        system_title=CLIENT_TITLE,
        ciphered=True,
        user_information=glo,
    )
    info = xdlms.decode_request(aarq)
    assert isinstance(info, xdlms.AarqInfo)
    assert info.ciphered and info.mechanism == 5 and info.system_title == CLIENT_TITLE
    assert info.ciphered_initiate == glo
    assert xdlms.decode_initiate(decipher_apdu(glo).open(CLIENT_TITLE, KEYS)) == xdlms.InitiateInfo(
        xdlms.DEFAULT_CONFORMANCE, 0xFFFF, 6
    )


def test_keys_never_show_in_repr() -> None:
    ctx = SecurityContext(KEYS, counters=MemoryCounterStore())
    for text in (repr(KEYS), str(KEYS), repr(ctx)):
        assert EK.hex() not in text.lower() and AK.hex() not in text.lower()
    with pytest.raises(ValueError, match="16 bytes") as info:
        SecurityKeys(EK[:15], AK)
    assert EK[:15].hex() not in str(info.value)
    with pytest.raises(ValueError, match="suite 1"):
        security_control("authenticated", suite=1)


def test_context_reserves_counter_blocks_and_checks_responses() -> None:
    store = MemoryCounterStore(100)
    ctx = SecurityContext(KEYS, counters=store, system_title=CLIENT_TITLE, counter_block=4)
    counters = [decipher_apdu(ctx.wrap(GET_CLOCK)).invocation_counter for _ in range(6)]
    assert counters == [100, 101, 102, 103, 104, 105]
    assert store.next == 108  # two blocks reserved before use

    def response(ic: int, title: bytes = SERVER_TITLE) -> bytes:
        return cipher_apdu(
            xdlms.build_get_response(1, b"\x11\x05"),
            sc=0x30,
            system_title=title,
            invocation_counter=ic,
            keys=KEYS,
        )

    ctx.learn_server_title(SERVER_TITLE)
    assert ctx.unwrap(response(7)) == xdlms.build_get_response(1, b"\x11\x05")
    with pytest.raises(ReplayedResponse):
        ctx.unwrap(response(7))
    with pytest.raises(SystemTitleMismatch):
        ctx.learn_server_title(CLIENT_TITLE)
    ctx.learn_server_title(None)  # an AARE without the title: the configured one stands
    assert ctx.server_system_title == SERVER_TITLE
    general = cipher_apdu(
        xdlms.build_get_response(1, b"\x11\x05"),
        sc=0x30,
        system_title=CLIENT_TITLE,
        invocation_counter=9,
        keys=KEYS,
        general=True,
    )
    with pytest.raises(SystemTitleMismatch):
        ctx.unwrap(general)
    assert ctx.unwrap(b"\xd8\x01\x05") == b"\xd8\x01\x05"  # plain ExceptionResponse passes
    with pytest.raises(HlsVerificationFailed):
        ctx.check_server_reply(bytes(17))


def test_a_block_reserved_elsewhere_is_used_before_the_store_is_asked() -> None:
    store = MemoryCounterStore(1000)
    ctx = SecurityContext(KEYS, counters=store, counter_block=4)
    ctx.hold_block(40)
    ctx.prepare()  # nothing to reserve: the held block is not used up
    assert store.next == 1000
    assert [ctx.next_counter() for _ in range(4)] == [40, 41, 42, 43]
    ctx.prepare()
    assert ctx.next_counter() == 1000 and store.next == 1004
    with pytest.raises(ValueError, match="out of range"):
        ctx.hold_block(-1)
