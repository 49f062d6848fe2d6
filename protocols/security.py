"""DLMS security suite 0 (AES-GCM-128) for xDLMS APDUs and HLS mechanism 5 (GMAC), sans-IO.

Green Book (DLMS UA 1000-2) ciphering of an xDLMS APDU with security suite 0:

* security header = security control byte (SC) || invocation counter (IC, 4 bytes);
* IV = system title of the *sender* (8 bytes) || IC;
* SC bits 0-3 suite, bit 4 authentication, bit 5 encryption, bit 6 broadcast key,
  bit 7 compression;
* authenticated and encrypted: AAD = SC || AK, payload = C || T;
  authenticated only: AAD = SC || AK || P, payload = P || T; encrypted only: payload = C;
* T is the GCM tag truncated to 12 bytes;
* glo-/ded- APDU = tag || length || SC || IC || payload; general-glo-ciphering adds the
  sender's system title in front.

HLS mechanism 5 (GMAC): f(challenge) = SC || IC || GMAC(SC || AK || challenge), computed by
the client over the server's challenge (StoC) with the client's title and IC, and by the
server over the client's challenge (CtoS) with its own.

What ``dlms-cosem`` 25.1 could not do here, so it is written with ``cryptography``
directly: its ``encrypt``/``decrypt`` only handle authenticated *and* encrypted APDUs
(NotImplementedError otherwise) and raise its own exception types;
``GeneralGlobalCipher``/``GlobalCipherInitiateRequest.to_bytes`` write a one-byte length
(wrong above 127 bytes); it has no glo-/ded- GET/SET/ACTION APDUs at all. Its ``encrypt``
and ``gmac`` serve the tests as an independent check of this module.

Keys never appear in a ``repr``, a log line or an exception message of this module.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeAlias

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from protocols.axdr import encode_length, read_length
from protocols.errors import (
    DecodeError,
    HlsVerificationFailed,
    ReplayedResponse,
    ResponseAuthenticationFailed,
    SystemTitleMismatch,
)

__all__ = [
    "DEFAULT_CLIENT_SYSTEM_TITLE",
    "GENERAL_GLO_CIPHERING",
    "CounterStore",
    "Deciphered",
    "MemoryCounterStore",
    "Policy",
    "SecurityContext",
    "SecurityKeys",
    "cipher_apdu",
    "decipher_apdu",
    "decrypt_payload",
    "encrypt_payload",
    "hls_gmac",
    "is_ciphered",
    "security_control",
    "verify_hls_gmac",
]

TAG_LENGTH = 12
SUITE_0 = 0
SC_AUTHENTICATED = 0x10
SC_ENCRYPTED = 0x20
SC_BROADCAST = 0x40
SC_COMPRESSED = 0x80
MAX_INVOCATION_COUNTER = 0xFFFFFFFF

#: A 3-letter FLAG id and five bytes (Green Book system title); the simulator accepts it
#: by default.
DEFAULT_CLIENT_SYSTEM_TITLE = b"HES\x00\x00\x00\x00\x01"

GENERAL_GLO_CIPHERING = 0xDB
#: plain xDLMS tag -> (glo tag, ded tag) (Green Book xDLMS-APDU CHOICE).
_CIPHERED_TAGS: dict[int, tuple[int, int | None]] = {
    0x01: (0x21, 0x41),  # InitiateRequest
    0x08: (0x28, 0x48),  # InitiateResponse
    0x0E: (0x2E, 0x4E),  # ConfirmedServiceError
    0xC0: (0xC8, 0xD0),  # get-request
    0xC1: (0xC9, 0xD1),  # set-request
    0xC2: (0xCA, 0xD2),  # event-notification-request
    0xC3: (0xCB, 0xD3),  # action-request
    0xC4: (0xCC, 0xD4),  # get-response
    0xC5: (0xCD, 0xD5),  # set-response
    0xC7: (0xCF, 0xD7),  # action-response
}
_PLAIN_TAG: dict[int, tuple[int, bool]] = {}
for _plain, (_glo, _ded) in _CIPHERED_TAGS.items():
    _PLAIN_TAG[_glo] = (_plain, False)
    if _ded is not None:
        _PLAIN_TAG[_ded] = (_plain, True)

Policy: TypeAlias = Literal["authenticated", "encrypted", "authenticated-encrypted"]
_POLICY_SC: dict[str, int] = {
    "authenticated": SC_AUTHENTICATED,
    "encrypted": SC_ENCRYPTED,
    "authenticated-encrypted": SC_AUTHENTICATED | SC_ENCRYPTED,
}


@dataclass(frozen=True, slots=True)
class SecurityKeys:
    """The global unicast encryption key (EK) and the authentication key (AK), suite 0.

    ``repr`` shows neither: keys must not reach logs or exception messages.
    """

    encryption_key: bytes = field(repr=False)
    authentication_key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        for name, key in (
            ("encryption", self.encryption_key),
            ("authentication", self.authentication_key),
        ):
            if not isinstance(key, bytes) or len(key) != 16:
                raise ValueError(f"{name} key must be 16 bytes for security suite 0")

    def __repr__(self) -> str:
        return "SecurityKeys(<redacted>)"


def security_control(policy: Policy, suite: int = SUITE_0) -> int:
    """The SC byte of a policy (no broadcast key, no compression)."""
    if suite != SUITE_0:
        raise ValueError(f"security suite {suite} not supported (suite 0 only)")
    try:
        return _POLICY_SC[policy] | suite
    except KeyError:
        raise ValueError(f"unknown security policy {policy!r}") from None


def _iv(system_title: bytes, invocation_counter: int) -> bytes:
    if len(system_title) != 8:
        raise ValueError(f"system title must be 8 bytes, got {len(system_title)}")
    if not 0 <= invocation_counter <= MAX_INVOCATION_COUNTER:
        raise ValueError("invocation counter outside 0..2^32-1")
    return system_title + invocation_counter.to_bytes(4, "big")


def _check_sc(sc: int) -> None:
    if sc & 0x0F != SUITE_0:
        raise DecodeError(f"security suite {sc & 0x0F} not supported")
    if sc & (SC_BROADCAST | SC_COMPRESSED):
        raise DecodeError(f"security control 0x{sc:02X}: broadcast key/compression not supported")
    if not sc & (SC_AUTHENTICATED | SC_ENCRYPTED):
        raise DecodeError(f"security control 0x{sc:02X} applies no protection")


def encrypt_payload(
    sc: int, system_title: bytes, invocation_counter: int, keys: SecurityKeys, plain: bytes
) -> bytes:
    """The protected payload (C || T, P || T or C) for the SC byte."""
    _check_sc(sc)
    iv = _iv(system_title, invocation_counter)
    enc = Cipher(algorithms.AES(keys.encryption_key), modes.GCM(iv)).encryptor()
    auth = bool(sc & SC_AUTHENTICATED)
    if auth:
        aad = bytes((sc,)) + keys.authentication_key
        enc.authenticate_additional_data(aad if sc & SC_ENCRYPTED else aad + plain)
    if sc & SC_ENCRYPTED:
        out = enc.update(plain) + enc.finalize()
    else:
        enc.finalize()
        out = plain
    return out + enc.tag[:TAG_LENGTH] if auth else out


def decrypt_payload(
    sc: int, system_title: bytes, invocation_counter: int, keys: SecurityKeys, payload: bytes
) -> bytes:
    """Open a protected payload; ResponseAuthenticationFailed when the tag does not verify."""
    _check_sc(sc)
    iv = _iv(system_title, invocation_counter)
    auth = bool(sc & SC_AUTHENTICATED)
    if not auth:
        # Encryption only: GCM without its tag is AES-CTR from counter block J0 + 1.
        ctr = Cipher(algorithms.AES(keys.encryption_key), modes.CTR(iv + b"\x00\x00\x00\x02"))
        stream = ctr.decryptor()
        return stream.update(payload) + stream.finalize()
    if len(payload) < TAG_LENGTH:
        raise DecodeError(f"ciphered payload of {len(payload)} bytes has no 12-byte tag")
    body, tag = payload[:-TAG_LENGTH], payload[-TAG_LENGTH:]
    aad = bytes((sc,)) + keys.authentication_key
    if sc & SC_ENCRYPTED:
        try:
            gcm = Cipher(
                algorithms.AES(keys.encryption_key), modes.GCM(iv, tag, min_tag_length=TAG_LENGTH)
            ).decryptor()
            gcm.authenticate_additional_data(aad)
            return gcm.update(body) + gcm.finalize()
        except InvalidTag:
            raise ResponseAuthenticationFailed(
                "authentication tag does not verify (wrong keys or altered APDU)"
            ) from None
    expected = encrypt_payload(sc, system_title, invocation_counter, keys, body)[-TAG_LENGTH:]
    if not hmac.compare_digest(expected, tag):
        raise ResponseAuthenticationFailed(
            "authentication tag does not verify (wrong keys or altered APDU)"
        )
    return body


def is_ciphered(apdu: bytes) -> bool:
    """True for a glo-/ded- APDU or general-glo-ciphering."""
    return bool(apdu) and (apdu[0] in _PLAIN_TAG or apdu[0] == GENERAL_GLO_CIPHERING)


def cipher_apdu(
    plain: bytes,
    *,
    sc: int,
    system_title: bytes,
    invocation_counter: int,
    keys: SecurityKeys,
    dedicated: bool = False,
    general: bool = False,
) -> bytes:
    """Protect a plain xDLMS APDU as glo- (or ded-) APDU, or as general-glo-ciphering.

    ``keys`` holds the dedicated key as its encryption key for ded- APDUs; general-glo-
    ciphering carries the sender's system title and any plain xDLMS APDU.
    """
    if not plain:
        raise ValueError("nothing to cipher")
    header = bytes((sc,)) + invocation_counter.to_bytes(4, "big")
    body = header + encrypt_payload(sc, system_title, invocation_counter, keys, plain)
    if general:
        return (
            bytes((GENERAL_GLO_CIPHERING,))
            + encode_length(len(system_title))
            + system_title
            + encode_length(len(body))
            + body
        )
    tags = _CIPHERED_TAGS.get(plain[0])
    tag = None if tags is None else tags[1] if dedicated else tags[0]
    if tag is None:
        raise ValueError(f"APDU tag 0x{plain[0]:02X} has no ciphered variant")
    return bytes((tag,)) + encode_length(len(body)) + body


@dataclass(frozen=True, slots=True)
class Deciphered:
    """A ciphered APDU's security header, taken apart before deciphering."""

    sc: int
    invocation_counter: int
    payload: bytes
    system_title: bytes | None  # only general-glo-ciphering carries one
    dedicated: bool
    expected_tag: int | None  # plain tag the deciphered APDU must carry (None: any)

    def open(self, system_title: bytes, keys: SecurityKeys) -> bytes:
        """Decipher with the sender's title; checks the plain tag matches the wrapper."""
        plain = decrypt_payload(self.sc, system_title, self.invocation_counter, keys, self.payload)
        if not plain:
            raise DecodeError("ciphered APDU holds an empty APDU")
        if self.expected_tag is not None and plain[0] != self.expected_tag:
            raise DecodeError(
                f"ciphered APDU holds tag 0x{plain[0]:02X}, expected 0x{self.expected_tag:02X}"
            )
        return plain


def decipher_apdu(data: bytes) -> Deciphered:
    """Split a glo-/ded-/general-glo-ciphering APDU into its header and payload."""
    if not data:
        raise DecodeError("empty ciphered APDU")
    tag = data[0]
    title: bytes | None = None
    expected: int | None = None
    dedicated = False
    if tag == GENERAL_GLO_CIPHERING:
        size, pos = read_length(data, 1, "ciphered APDU")
        title = data[pos : pos + size]
        if len(title) != size:
            raise DecodeError("general-glo-ciphering: system title truncated")
        length, pos = read_length(data, pos + size, "ciphered APDU")
    elif tag in _PLAIN_TAG:
        expected, dedicated = _PLAIN_TAG[tag]
        length, pos = read_length(data, 1, "ciphered APDU")
    else:
        raise DecodeError(f"APDU tag 0x{tag:02X} is not a ciphered APDU")
    if length != len(data) - pos:
        raise DecodeError(f"ciphered APDU: length {length} but {len(data) - pos} bytes follow")
    if length < 5:
        raise DecodeError("ciphered APDU: security header truncated")
    return Deciphered(
        sc=data[pos],
        invocation_counter=int.from_bytes(data[pos + 1 : pos + 5], "big"),
        payload=data[pos + 5 :],
        system_title=title or None,
        dedicated=dedicated,
        expected_tag=expected,
    )


def hls_gmac(
    system_title: bytes, invocation_counter: int, keys: SecurityKeys, challenge: bytes
) -> bytes:
    """f(challenge) of HLS mechanism 5: SC || IC || GMAC(SC || AK || challenge)."""
    sc = SC_AUTHENTICATED | SUITE_0
    iv = _iv(system_title, invocation_counter)
    enc = Cipher(algorithms.AES(keys.encryption_key), modes.GCM(iv)).encryptor()
    enc.authenticate_additional_data(bytes((sc,)) + keys.authentication_key + challenge)
    enc.finalize()
    return bytes((sc,)) + invocation_counter.to_bytes(4, "big") + enc.tag[:TAG_LENGTH]


def verify_hls_gmac(
    reply: bytes, system_title: bytes, keys: SecurityKeys, challenge: bytes
) -> int | None:
    """The invocation counter of a valid f(challenge), or None when it does not verify."""
    if len(reply) != 5 + TAG_LENGTH or reply[0] != SC_AUTHENTICATED | SUITE_0:
        return None
    counter = int.from_bytes(reply[1:5], "big")
    expected = hls_gmac(system_title, counter, keys, challenge)
    return counter if hmac.compare_digest(expected, reply) else None


class CounterStore(Protocol):
    """Where a client's invocation counter lives between sessions.

    ``reserve(count)`` records that every counter below ``start + count`` is used *before*
    returning ``start``, so a crash after it never lets a later session reuse one.
    """

    def reserve(self, count: int) -> int: ...


class MemoryCounterStore:
    """A counter store in memory (one process; tests and one-off reads)."""

    def __init__(self, start: int = 0) -> None:
        self.next = start

    def reserve(self, count: int) -> int:
        start = self.next
        self.next = start + count
        return start


class SecurityContext:
    """The client side of a suite-0 ciphered association with one meter.

    ``keys`` are the meter's EK/AK; ``system_title`` the client's (calling-AP-title and the
    IV of everything the client ciphers); ``server_system_title`` the meter's, learned from
    the AARE when None (when given, the AARE must name it). Counters come from ``counters``
    in blocks of ``counter_block`` so the store is written once per session, not per APDU.
    """

    def __init__(
        self,
        keys: SecurityKeys,
        *,
        counters: CounterStore,
        system_title: bytes = DEFAULT_CLIENT_SYSTEM_TITLE,
        server_system_title: bytes | None = None,
        policy: Policy = "authenticated-encrypted",
        general_ciphering: bool = False,
        counter_block: int = 64,
        challenge: Callable[[], bytes] | None = None,
    ) -> None:
        if len(system_title) != 8:
            raise ValueError(f"client system title must be 8 bytes, got {len(system_title)}")
        if server_system_title is not None and len(server_system_title) != 8:
            raise ValueError("server system title must be 8 bytes")
        if counter_block < 1:
            raise ValueError("counter block must be at least 1")
        self.keys = keys
        self.counters = counters
        self.system_title = system_title
        self.server_system_title = server_system_title
        self.sc = security_control(policy)
        self.general_ciphering = general_ciphering
        self.counter_block = counter_block
        self._challenge = challenge or (lambda: os.urandom(16))
        self._next = 0
        self._limit = 0
        self.last_server_counter: int | None = None
        self.client_challenge: bytes | None = None

    def __repr__(self) -> str:
        return f"SecurityContext(system_title={self.system_title.hex()}, sc=0x{self.sc:02X})"

    def next_counter(self) -> int:
        """The next unused client invocation counter (reserving a block when needed)."""
        self.prepare()
        if self._next > MAX_INVOCATION_COUNTER:
            raise ValueError("client invocation counter exhausted: the keys must be renewed")
        value = self._next
        self._next += 1
        return value

    @property
    def next_unused(self) -> int | None:
        """The counter the next ciphered APDU would use (every one below it was used or
        reserved): where a later session of another head-end must start. None before any
        counter was reserved (nothing was ciphered)."""
        return self._next if self._limit else None

    def hold_block(self, start: int) -> None:
        """Use the counters ``[start, start + counter_block)``, reserved (and committed) by
        the caller, e.g. for many meters in one transaction; ``prepare`` then has nothing
        to do until they run out."""
        if not 0 <= start <= MAX_INVOCATION_COUNTER:
            raise ValueError(f"invocation counter block start {start} out of range")
        self._next, self._limit = start, start + self.counter_block

    def prepare(self) -> None:
        """Reserve a block of counters now if none is held (run it in a worker thread when
        the store does blocking IO, so the event loop never waits on the database)."""
        if self._next >= self._limit:
            start = self.counters.reserve(self.counter_block)
            self._next, self._limit = start, start + self.counter_block

    def new_session(self) -> None:
        """Forget per-association state (server counter, challenge); keep the counters."""
        self.last_server_counter = None
        self.client_challenge = None

    def new_challenge(self) -> bytes:
        """A fresh CtoS for the AARQ (8..64 bytes, Green Book)."""
        self.client_challenge = self._challenge()
        if not 8 <= len(self.client_challenge) <= 64:
            raise ValueError("HLS challenge must be 8..64 bytes")
        return self.client_challenge

    def wrap(self, plain: bytes) -> bytes:
        """Cipher one request APDU (glo-, or general-glo-ciphering when configured)."""
        return cipher_apdu(
            plain,
            sc=self.sc,
            system_title=self.system_title,
            invocation_counter=self.next_counter(),
            keys=self.keys,
            general=self.general_ciphering and plain[0] not in (0x01,),
        )

    def unwrap(self, data: bytes) -> bytes:
        """Decipher a response; plain APDUs (ExceptionResponse, RLRE...) pass unchanged."""
        if not is_ciphered(data):
            return data
        header = decipher_apdu(data)
        title = header.system_title or self.server_system_title
        if title is None:
            raise SystemTitleMismatch("ciphered response before the meter's system title is known")
        if self.server_system_title is not None and title != self.server_system_title:
            raise SystemTitleMismatch(
                f"response ciphered by system title {title.hex()}, the meter is "
                f"{self.server_system_title.hex()}"
            )
        last = self.last_server_counter
        if last is not None and header.invocation_counter <= last:
            raise ReplayedResponse(
                f"meter invocation counter {header.invocation_counter} not above {last}"
            )
        plain = header.open(title, self.keys)
        self.last_server_counter = header.invocation_counter
        return plain

    def learn_server_title(self, title: bytes | None) -> None:
        """Take the responding-AP-title of an AARE (or check it against the configured one).

        A meter that leaves the title out is taken when the title is configured (some do)."""
        if title is None and self.server_system_title is not None:
            return
        if title is None:
            raise SystemTitleMismatch(
                "the AARE names no responding system title and none is configured for this "
                "meter: give its system title (the key store's system_title column)"
            )
        if len(title) != 8:
            raise SystemTitleMismatch(
                f"the AARE's responding system title {title.hex()} is not 8 bytes"
            )
        if self.server_system_title is None:
            self.server_system_title = title
        elif title != self.server_system_title:
            raise SystemTitleMismatch(
                f"meter answered as system title {title.hex()}, expected "
                f"{self.server_system_title.hex()}"
            )

    def reply_to_challenge(self, server_challenge: bytes) -> bytes:
        """f(StoC) for reply_to_HLS_authentication (uses one client counter)."""
        return hls_gmac(self.system_title, self.next_counter(), self.keys, server_challenge)

    def check_server_reply(self, reply: bytes) -> None:
        """Check the meter's f(CtoS); HlsVerificationFailed when it does not prove the keys."""
        if self.client_challenge is None or self.server_system_title is None:
            raise HlsVerificationFailed("no HLS exchange in progress")
        counter = verify_hls_gmac(reply, self.server_system_title, self.keys, self.client_challenge)
        if counter is None:
            raise HlsVerificationFailed(
                "the meter's f(CtoS) does not verify: it does not hold this meter's keys"
            )
