"""IEC 62056-21 mode E: the sign-on that comes before HDLC on optical probes and some buses.

A meter that needs it ignores HDLC until the head-end has signed on at 300 baud 7E1:

1. head-end: request ``/ ? [device address] ! CR LF``;
2. meter: identification ``/ XXX Z \\ 2 identification CR LF``, where ``XXX`` is the
   manufacturer, ``Z`` the baud rate it proposes and ``\\2`` says HDLC is available;
3. head-end: acknowledgement / option select ``ACK 2 Z 2 CR LF`` (HDLC protocol procedure,
   baud ``Z``, binary mode); then both ends switch to baud ``Z`` at 8N1 and HDLC starts.

Sans-IO, like ``protocols.hdlc``: :class:`ClientSignOn` (head-end) and :class:`MeterSignOn`
(simulated meter) turn bytes into messages and back; the caller owns the port, the baud switch
and the waits (:attr:`Identification.reaction_time_s`).

Facts used, with where they come from (IEC 62056-21:2002 clause 6.3, as published summaries
and public projects give it):

- baud rate characters ``0``..``6`` = 300, 600, 1200, 2400, 4800, 9600, 19200 baud, and the
  option-select mode characters ``0`` readout, ``1`` programming, ``2`` binary (HDLC):
  pwitab/iec62056-21, ``iec62056_21/client.py``;
- a manufacturer id whose third letter is lower case means a 20 ms reaction time instead of
  200 ms: the same file;
- the request carries an optional device address, needed on a bus where several meters
  listen: the same file (``send_init_request``); up to 32 letters and digits: openmuc jDLMS,
  ``SerialConnectionBuilder`` (``IEC_21_PATTERN``);
- the enhanced identification character ``2`` (``\\2``) says binary mode (HDLC) is
  available, 0, 1 and 3..9 are reserved: DLMS UA list of standard items, "Enhanced
  identification character" (IEC 62056-21 clause 6.3.2 item 24);
- the acknowledgement for HDLC is ``06 32 Z 32 0D 0A`` (protocol control ``2`` = HDLC
  protocol procedure, mode ``2`` = binary): openmuc jDLMS, ``Iec21Layer``; jDLMS waits
  150 ms by default before it switches baud (``baudrateChangeTime``);
- a meter answers within a reaction time of 200 ms (20 ms for a lower-case third letter)
  to 1.5 s (IEC 62056-21, reaction time; pwitab/iec62056-21 applies the lower bounds);
- the identification proper is at most 16 printable characters other than ``/`` and ``!``
  (IEC 62056-21 clause 6.3.2).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from protocols.errors import DecodeError, SignOnError

__all__ = [
    "ACK",
    "BAUD_RATES",
    "BAUD_SWITCH_DELAY_S",
    "IDENTIFICATION_WAIT_S",
    "INITIAL_BAUD",
    "REACTION_TIME_S",
    "ClientSignOn",
    "HdlcSelected",
    "Identification",
    "MeterSignOn",
    "OptionRefused",
    "OptionSelect",
    "SignOnRequest",
    "SignOnRequested",
    "baud_char",
    "with_even_parity",
    "without_even_parity",
]

#: Baud rate character of the identification and the acknowledgement (modes C and E).
BAUD_RATES: dict[str, int] = {
    "0": 300,
    "1": 600,
    "2": 1200,
    "3": 2400,
    "4": 4800,
    "5": 9600,
    "6": 19200,
}
#: The sign-on runs at 300 baud, 7 data bits, even parity, 1 stop bit.
INITIAL_BAUD = 300
#: Seconds to wait after the acknowledgement has left before switching baud (jDLMS default).
BAUD_SWITCH_DELAY_S = 0.15
REACTION_TIME_S = 0.2
SHORT_REACTION_TIME_S = 0.02
#: The longest a meter may take to start its answer (IEC 62056-21: 1.5 s).
MAX_REACTION_TIME_S = 1.5
ACK = 0x06
CRLF = b"\r\n"
#: The protocol control and mode characters of an acknowledgement that selects HDLC.
HDLC_PROTOCOL = "2"
BINARY_MODE = "2"
#: The enhanced identification character that says HDLC (binary mode) is available.
MODE_E_MARKER = "2"
MAX_ADDRESS = 32
MAX_IDENTIFICATION = 16
#: The longest line either side sends: a request with a 32-character address.
MAX_LINE = 2 + MAX_ADDRESS + 3
#: How long a head-end waits for the identification: the longest reaction time, then the
#: longest identification (``/XXXZ\W``, 16 characters, CR LF) at 300 baud, 10 bits each.
IDENTIFICATION_WAIT_S = MAX_REACTION_TIME_S + (7 + MAX_IDENTIFICATION + 2) * 10 / INITIAL_BAUD

_ADDRESS = re.compile(r"[A-Za-z0-9]{0,32}")
_MANUFACTURER = re.compile(r"[A-Za-z]{3}")
# Printable ASCII other than "/" and "!" (the start and end characters of a request).
_IDENT = re.compile(r"[\x20-\x20\x22-\x2e\x30-\x7e]{0,16}")


# Each 7-bit character with bit 7 set to make the number of one bits even.
_PARITY = bytes(c | (0x80 if bin(c).count("1") % 2 else 0) for c in range(128)) * 2


def with_even_parity(data: bytes) -> bytes:
    """7E1 characters as an 8N1 port sends them: the same bits on the wire, with bit 7
    the even parity of bits 0-6. ValueError for a byte that is not 7-bit."""
    if any(b > 0x7F for b in data):
        raise ValueError(f"{data!r}: 7E1 carries 7-bit characters only")
    return data.translate(_PARITY)


def without_even_parity(data: bytes, *, drop_errors: bool = False) -> bytes:
    """7E1 characters as an 8N1 port reads them: bit 7 checked and cleared.

    A character whose parity is wrong raises DecodeError naming it, or with
    ``drop_errors`` is dropped, as a 7E1 UART drops a character with a parity error.
    """
    out = bytearray()
    for pos, b in enumerate(data):
        if _PARITY[b & 0x7F] == b:
            out.append(b & 0x7F)
        elif not drop_errors:
            raise DecodeError(
                f"IEC 62056-21: parity error (7E1) in byte {pos} 0x{b:02x} of {data!r}"
            )
    return bytes(out)


def baud_char(rate: int) -> str:
    """The baud rate character of ``rate``; ValueError for a rate outside the table."""
    for char, value in BAUD_RATES.items():
        if value == rate:
            return char
    raise ValueError(
        f"baud rate {rate} has no IEC 62056-21 character; use one of "
        + ", ".join(str(v) for v in BAUD_RATES.values())
    )


def _text(data: bytes, what: str) -> str:
    """``data`` as ASCII text (7-bit characters on the line), or DecodeError."""
    if any(b > 0x7F for b in data):
        raise DecodeError(f"IEC 62056-21 {what} {data!r}: byte above 0x7F on a 7-bit line")
    return data.decode("ascii")


def _line(data: bytes, what: str) -> str:
    """The text of one ``... CR LF`` message without its CR LF, or DecodeError."""
    if not data.endswith(CRLF):
        raise DecodeError(f"IEC 62056-21 {what} {data!r} does not end with CR LF")
    body = _text(data[:-2], what)
    if "\r" in body or "\n" in body:
        raise DecodeError(f"IEC 62056-21 {what} {data!r}: CR or LF before its end")
    return body


@dataclass(slots=True, frozen=True)
class SignOnRequest:
    """``/?ADDRESS!`` CR LF: the head-end asks the meter (at ``device_address``) to identify."""

    device_address: str = ""

    def __post_init__(self) -> None:
        if not _ADDRESS.fullmatch(self.device_address):
            raise ValueError(
                f"device address {self.device_address!r}: give up to {MAX_ADDRESS} "
                "letters and digits"
            )

    def encode(self) -> bytes:
        return b"/?" + self.device_address.encode("ascii") + b"!" + CRLF

    @classmethod
    def decode(cls, data: bytes) -> SignOnRequest:
        body = _line(data, "request")
        if not body.startswith("/?") or not body.endswith("!"):
            raise DecodeError(f"IEC 62056-21 request {data!r} is not /?[address]!")
        address = body[2:-1]
        if not _ADDRESS.fullmatch(address):
            raise DecodeError(
                f"IEC 62056-21 request {data!r}: device address {address!r} is not "
                f"up to {MAX_ADDRESS} letters and digits"
            )
        return cls(address)


@dataclass(slots=True, frozen=True)
class Identification:
    """``/XXXZ\\Wident`` CR LF: who the meter is and the baud rate it proposes.

    ``enhanced`` is the enhanced identification character after ``\\`` (None: the message
    has none); ``"2"`` (the default) means mode E, HDLC available.
    """

    manufacturer: str
    baud_char: str
    identification: str
    enhanced: str | None = MODE_E_MARKER

    def __post_init__(self) -> None:
        if not _MANUFACTURER.fullmatch(self.manufacturer):
            raise ValueError(f"manufacturer {self.manufacturer!r}: give three letters")
        if len(self.baud_char) != 1 or not self.baud_char.isalnum() or not self.baud_char.isascii():
            raise ValueError(f"baud character {self.baud_char!r}: give one letter or digit")
        if self.enhanced is not None and (len(self.enhanced) != 1 or not self.enhanced.isdigit()):
            raise ValueError(f"enhanced identification {self.enhanced!r}: give one digit")
        if not _IDENT.fullmatch(self.identification) or self.identification.startswith("\\"):
            raise ValueError(
                f"identification {self.identification!r}: give up to {MAX_IDENTIFICATION} "
                "printable characters other than / and !, not starting with \\"
            )

    @property
    def mode_e(self) -> bool:
        """True when the meter announces HDLC (``\\2``)."""
        return self.enhanced == MODE_E_MARKER

    @property
    def baudrate(self) -> int | None:
        """The proposed baud rate (None for a character outside the mode C/E table)."""
        return BAUD_RATES.get(self.baud_char)

    @property
    def reaction_time_s(self) -> float:
        """How long the meter needs before it can hear the next message."""
        return SHORT_REACTION_TIME_S if self.manufacturer[2].islower() else REACTION_TIME_S

    def encode(self) -> bytes:
        marker = "" if self.enhanced is None else "\\" + self.enhanced
        text = f"/{self.manufacturer}{self.baud_char}{marker}{self.identification}"
        return text.encode("ascii") + CRLF

    @classmethod
    def decode(cls, data: bytes) -> Identification:
        body = _line(data, "identification")
        if len(body) < 5 or body[0] != "/":
            raise DecodeError(
                f"IEC 62056-21 identification {data!r} is not /XXXZ[\\W]identification"
            )
        manufacturer, char, rest = body[1:4], body[4], body[5:]
        if not _MANUFACTURER.fullmatch(manufacturer):
            raise DecodeError(
                f"IEC 62056-21 identification {data!r}: manufacturer {manufacturer!r} "
                "is not three letters"
            )
        if not (char.isalnum() and char.isascii()):
            raise DecodeError(
                f"IEC 62056-21 identification {data!r}: baud character {char!r} "
                "is not a letter or digit"
            )
        enhanced: str | None = None
        if rest.startswith("\\"):
            if len(rest) < 2 or not rest[1].isdigit():
                raise DecodeError(
                    f"IEC 62056-21 identification {data!r}: \\ not followed by a digit"
                )
            enhanced, rest = rest[1], rest[2:]
        try:
            return cls(manufacturer, char, rest, enhanced)
        except ValueError as exc:
            raise DecodeError(f"IEC 62056-21 identification {data!r}: {exc}") from None


@dataclass(slots=True, frozen=True)
class OptionSelect:
    """``ACK V Z Y`` CR LF: protocol control ``V``, baud ``Z``, mode ``Y``."""

    protocol: str
    baud_char: str
    mode: str

    def __post_init__(self) -> None:
        for name in ("protocol", "baud_char", "mode"):
            value = getattr(self, name)
            if len(value) != 1 or not value.isdigit() or not value.isascii():
                raise ValueError(f"option select {name} {value!r}: give one digit")

    @classmethod
    def hdlc(cls, baud: str) -> OptionSelect:
        """The acknowledgement that switches to HDLC at baud character ``baud``."""
        return cls(HDLC_PROTOCOL, baud, BINARY_MODE)

    @property
    def selects_hdlc(self) -> bool:
        return self.protocol == HDLC_PROTOCOL and self.mode == BINARY_MODE

    @property
    def baudrate(self) -> int | None:
        return BAUD_RATES.get(self.baud_char)

    def encode(self) -> bytes:
        return bytes((ACK,)) + f"{self.protocol}{self.baud_char}{self.mode}".encode() + CRLF

    @classmethod
    def decode(cls, data: bytes) -> OptionSelect:
        body = _line(data, "acknowledgement")
        if len(body) != 4 or body[0] != chr(ACK):
            raise DecodeError(f"IEC 62056-21 acknowledgement {data!r} is not ACK V Z Y CR LF")
        try:
            return cls(body[1], body[2], body[3])
        except ValueError as exc:
            raise DecodeError(f"IEC 62056-21 acknowledgement {data!r}: {exc}") from None


class _Lines:
    """Cut a byte stream into CR LF terminated lines of at most :data:`MAX_LINE` bytes."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Complete lines so far; DecodeError (buffer dropped) for a line that is too long."""
        self._buffer += data
        lines = []
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                break
            lines.append(bytes(self._buffer[: end + 1]))
            del self._buffer[: end + 1]
        if len(self._buffer) > MAX_LINE:
            head = bytes(self._buffer[:MAX_LINE])
            self._buffer.clear()
            raise DecodeError(f"IEC 62056-21: no CR LF within {MAX_LINE} bytes: {head!r}...")
        return lines

    def clear(self) -> None:
        self._buffer.clear()


class _ClientState(enum.Enum):
    IDLE = "idle"
    AWAIT_IDENTIFICATION = "await-identification"
    IDENTIFIED = "identified"
    DONE = "done"


class ClientSignOn:
    """The head-end side: ``request()``, feed ``receive_data`` until it returns the
    identification, wait its reaction time, ``acknowledge()``, then switch to ``baudrate``.

    Raises :class:`DecodeError` for a malformed identification and :class:`SignOnError` for
    a well-formed one that does not offer mode E at a baud rate of the table.
    """

    def __init__(self, device_address: str = "") -> None:
        self.request_message = SignOnRequest(device_address)
        self.identification: Identification | None = None
        self._state = _ClientState.IDLE
        self._lines = _Lines()

    @property
    def baudrate(self) -> int:
        """The baud rate of the HDLC that follows (after :meth:`acknowledge`)."""
        ident = self.identification
        if self._state is not _ClientState.DONE or ident is None or ident.baudrate is None:
            raise SignOnError("IEC 62056-21: no baud rate agreed yet")
        return ident.baudrate

    def request(self) -> bytes:
        """The request message; (re)starts the sign-on."""
        self._state = _ClientState.AWAIT_IDENTIFICATION
        self._lines.clear()
        self.identification = None
        return self.request_message.encode()

    def receive_data(self, data: bytes) -> Identification | None:
        """The identification once a whole line has come, else None."""
        if self._state is not _ClientState.AWAIT_IDENTIFICATION:
            raise SignOnError(f"IEC 62056-21: bytes {data[:16]!r} when not awaiting them")
        # Line noise while the meter wakes, and the echo of our own request on a half-duplex
        # line, are not the identification.
        own = self.request_message.encode()
        for line in self._lines.feed(data):
            line = line.lstrip(b"\x00\r\n")
            if not line or line == own:
                continue
            ident = Identification.decode(line)
            if not ident.mode_e:
                raise SignOnError(
                    f"IEC 62056-21 identification {line!r} does not offer mode E (HDLC, \\2)"
                )
            if ident.baudrate is None:
                raise SignOnError(
                    f"IEC 62056-21 identification {line!r}: baud character "
                    f"{ident.baud_char!r} is not one of {''.join(BAUD_RATES)}"
                )
            self.identification = ident
            self._state = _ClientState.IDENTIFIED
            return ident
        return None

    def acknowledge(self) -> bytes:
        """``ACK 2 Z 2`` CR LF with the proposed baud; HDLC follows at :attr:`baudrate`."""
        if self._state is not _ClientState.IDENTIFIED or self.identification is None:
            raise SignOnError("IEC 62056-21: acknowledgement before an identification")
        self._state = _ClientState.DONE
        return OptionSelect.hdlc(self.identification.baud_char).encode()


@dataclass(slots=True, frozen=True)
class SignOnRequested:
    """A request came: answer it with ``MeterSignOn.identify`` or let it go with ``ignore``."""

    device_address: str


@dataclass(slots=True, frozen=True)
class HdlcSelected:
    """The head-end chose HDLC: switch to ``baudrate`` 8N1 and speak HDLC."""

    baudrate: int


@dataclass(slots=True, frozen=True)
class OptionRefused:
    """An acknowledgement the meter does not take (not HDLC, or a faster baud than offered):
    the meter stays at 300 baud, waiting for a new request."""

    option: OptionSelect
    reason: str


MeterEvent = SignOnRequested | HdlcSelected | OptionRefused


class _MeterState(enum.Enum):
    IDLE = "idle"
    REQUESTED = "requested"
    AWAIT_ACK = "await-ack"
    HDLC = "hdlc"


class MeterSignOn:
    """The meter side. Bytes that are not a well-formed message are dropped, as a UART at
    300 baud 7E1 drops what it cannot frame: a meter requiring mode E ignores HDLC here.

    After :class:`HdlcSelected` the caller speaks HDLC; ``reset()`` brings the sign-on back
    (the simulator does so when the HDLC link ends).
    """

    def __init__(self) -> None:
        self._state = _MeterState.IDLE
        self._lines = _Lines()
        self._offered: Identification | None = None

    @property
    def in_hdlc(self) -> bool:
        return self._state is _MeterState.HDLC

    def reset(self) -> None:
        self._state = _MeterState.IDLE
        self._lines.clear()
        self._offered = None

    def receive_data(self, data: bytes) -> list[MeterEvent]:
        """What the bytes asked for; never raises on bad input."""
        if self._state is _MeterState.HDLC:
            return []
        try:
            lines = self._lines.feed(data)
        except DecodeError:
            return []
        events: list[MeterEvent] = []
        for line in lines:
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def _line(self, line: bytes) -> MeterEvent | None:
        start = line.find(b"/")
        if start >= 0:
            try:
                request = SignOnRequest.decode(line[start:])
            except DecodeError:
                return None
            self._state = _MeterState.REQUESTED
            self._offered = None
            return SignOnRequested(request.device_address)
        ack = line.find(bytes((ACK,)))
        if ack < 0 or self._state is not _MeterState.AWAIT_ACK or self._offered is None:
            return None
        try:
            option = OptionSelect.decode(line[ack:])
        except DecodeError:
            return None
        offered = self._offered.baudrate or INITIAL_BAUD
        chosen = option.baudrate
        self.reset()
        if not option.selects_hdlc:
            return OptionRefused(option, "not HDLC (protocol 2, mode 2): only mode E here")
        if chosen is None or chosen > offered:
            return OptionRefused(option, f"baud character {option.baud_char!r} above {offered}")
        self._state = _MeterState.HDLC
        return HdlcSelected(chosen)

    def identify(self, identification: Identification) -> bytes:
        """Answer the pending request with ``identification`` (the bytes to send)."""
        if self._state is not _MeterState.REQUESTED:
            raise SignOnError("IEC 62056-21: identification without a request")
        self._state = _MeterState.AWAIT_ACK
        self._offered = identification
        return identification.encode()

    def ignore(self) -> None:
        """The request was for another meter: wait for the next one."""
        if self._state is _MeterState.REQUESTED:
            self.reset()
