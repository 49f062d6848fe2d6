"""What a UART set to one baud rate reads from a line driven at another: sans-IO.

A bench with the wrong baud rate does not get silence, it gets bytes that make no frames.
:func:`resample` reproduces that bit by bit, so the simulator can put on a pty what a real
serial port would deliver: the sender's 8N1 characters (start bit 0, eight data bits least
significant first, stop bit 1; the idle line is 1) sampled by a receiver that waits for a
falling edge, then reads each bit in the middle of where it expects it at its own rate.
A character whose stop bit reads 0 (a framing error) is delivered as 0x00, as a Linux tty in
raw mode does without IGNPAR or PARMRK.
"""

from __future__ import annotations

import math

__all__ = ["resample"]

_BITS_PER_CHAR = 10  # 8N1


def _line_bits(data: bytes) -> list[int]:
    bits: list[int] = []
    for byte in data:
        bits.append(0)
        bits.extend((byte >> k) & 1 for k in range(8))
        bits.append(1)
    return bits


def resample(data: bytes, sent_baud: int, read_baud: int) -> bytes:
    """The bytes a receiver at ``read_baud`` reads from ``data`` sent back to back at
    ``sent_baud``; ``data`` itself when the rates are equal."""
    if sent_baud <= 0 or read_baud <= 0:
        raise ValueError(f"baud rates must be above 0, not {sent_baud} and {read_baud}")
    if sent_baud == read_baud:
        return data
    bits = _line_bits(data)
    count = len(bits)

    def level(t: float) -> int:
        """The line at time ``t`` (in seconds from the first start bit); idle after."""
        i = int(t * sent_baud)
        return bits[i] if 0 <= i < count else 1

    out = bytearray()
    i = 0  # sender bit index to look for the next falling edge from
    while i < count:
        if bits[i] != 0 or (i > 0 and bits[i - 1] != 1):
            i += 1
            continue
        start = i / sent_baud
        samples = [level(start + (k + 0.5) / read_baud) for k in range(_BITS_PER_CHAR)]
        if samples[0] == 0:  # a start bit still low at its middle: a character
            value = sum(bit << k for k, bit in enumerate(samples[1:9]))
            out.append(value if samples[9] == 1 else 0)
            resume = start + (_BITS_PER_CHAR - 0.5) / read_baud
        else:  # a glitch: the receiver goes back to waiting for an edge
            resume = start + 0.5 / read_baud
        i = max(i + 1, math.ceil(resume * sent_baud))
    return bytes(out)
