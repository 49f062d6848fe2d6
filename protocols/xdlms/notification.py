"""Data-Notification, the unconfirmed push of a meter (Green Book).

The optional date-time stays raw bytes so its unspecified fields and clock status reach
the push decoder unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocols.axdr import encode_length, read_length
from protocols.enums import ApduTag
from protocols.errors import DecodeError
from protocols.xdlms.descriptors import need


@dataclass(slots=True, frozen=True)
class DataNotification:
    """Pushed data; ``long_invoke_id`` is the 24-bit id without the priority flags."""

    long_invoke_id: int
    date_time: bytes | None
    body: bytes


def build_data_notification(
    long_invoke_id: int, body: bytes, date_time: bytes | None = None
) -> bytes:
    """Data-Notification; ``body`` is the encoded notification Data."""
    if not 0 <= long_invoke_id <= 0xFFFFFF:
        raise ValueError(f"long invoke id {long_invoke_id} outside 24 bits")
    stamp = b"" if date_time is None else date_time
    return (
        bytes((ApduTag.DATA_NOTIFICATION,))
        + long_invoke_id.to_bytes(4, "big")
        + encode_length(len(stamp))
        + stamp
        + body
    )


def decode_data_notification(data: bytes) -> DataNotification:
    need(data, 6, "DataNotification")
    size, pos = read_length(data, 5, "DataNotification date-time")
    end = pos + size
    if end >= len(data):
        raise DecodeError("DataNotification: date-time overruns or body missing")
    stamp = data[pos:end] if size else None
    return DataNotification(int.from_bytes(data[2:5], "big"), stamp, data[end:])
