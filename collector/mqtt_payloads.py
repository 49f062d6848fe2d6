"""What hes publishes over MQTT: one JSON payload per meter and kind, and its topic.

Apart from the outbox (``collector.mqtt``) because the collector's parts that build messages
(recorder, events, push) need only this, not the broker client: the payload schema is
documented in docs/mqtt.md, and ``SCHEMA_VERSION`` changes when it does.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any, Literal

from storage.records import Event, IntervalRead, RegisterRead

#: Payload schema version carried in every message as ``"schema"``.
SCHEMA_VERSION = 1
#: The per-meter topic kinds (``<prefix>/<meter>/<kind>``).
Kind = Literal["profile", "registers", "events", "alarm"]
KINDS: tuple[str, ...] = ("profile", "registers", "events", "alarm")


def iso_utc(ts: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``; a naive datetime is taken to be UTC already."""
    ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    return ts.isoformat().replace("+00:00", "Z")


def _jsonable(obj: Any, where: str) -> Any:
    """Plain JSON types from what the collector holds (datetimes, NamedTuples, bytes...)."""
    if obj is None or isinstance(obj, (str, bool, int)):
        return obj
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise ValueError(f"MQTT payload {where}: {obj!r} is not valid JSON")
        return obj
    if isinstance(obj, enum.Enum):
        return _jsonable(obj.value, where)
    if isinstance(obj, datetime):
        return iso_utc(obj)
    if isinstance(obj, date):
        return obj.isoformat()
    if isinstance(obj, (Decimal, Fraction)):
        return int(obj) if obj == int(obj) else float(obj)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj).hex()
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            if not isinstance(key, str):
                raise TypeError(f"MQTT payload {where}: key {key!r} is not a string")
            out[key] = _jsonable(value, f"{where}.{key}")
        return out
    if isinstance(obj, tuple) and hasattr(obj, "_asdict"):
        return _jsonable(obj._asdict(), where)
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    raise TypeError(f"MQTT payload {where}: {type(obj).__name__} is not JSON-serialisable")


def encode_payload(payload: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON; datetimes as ISO 8601 UTC. Bad content raises naming the field."""
    if not isinstance(payload, Mapping):
        raise TypeError(f"MQTT payload must be a dict, got {type(payload).__name__}")
    data = _jsonable(payload, "payload")
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _scaled(raw: int | None, scaler: int) -> int | float | None:
    """raw * 10**scaler: exact ints for scaler >= 0, the nearest float otherwise."""
    if raw is None:
        return None
    if scaler >= 0:
        return raw * 10**scaler
    return float(Fraction(raw, 10**-scaler))


def _envelope(meter_id: str, kind: str, extra: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"schema": SCHEMA_VERSION, "meter_id": meter_id, "kind": kind}
    out.update({k: v for k, v in extra.items() if v is not None})
    return out


def profile_payload(meter_id: str, reads: Iterable[IntervalRead], **extra: Any) -> dict[str, Any]:
    """``hes/<meter>/profile``: load-profile intervals, sorted by channel then time."""
    intervals = [
        {
            "channel": r.channel,
            "ts": r.ts,
            "raw": r.value,
            "scaler": r.scaler,
            "value": _scaled(r.value, r.scaler),
            "status": r.status,
        }
        for r in sorted(reads, key=lambda r: (r.channel, r.ts))
    ]
    return _envelope(meter_id, "profile", {**extra, "intervals": intervals})


def registers_payload(meter_id: str, reads: Iterable[RegisterRead], **extra: Any) -> dict[str, Any]:
    """``hes/<meter>/registers``: register values with their scaler, unit and capture time."""
    registers = [
        {
            "obis": r.obis,
            "ts": r.ts,
            "raw": r.value,
            "scaler": r.scaler,
            "value": _scaled(r.value, r.scaler),
            "unit": r.unit,
            "capture_time": r.capture_time,
        }
        for r in reads
    ]
    return _envelope(meter_id, "registers", {**extra, "registers": registers})


def events_payload(meter_id: str, events: Iterable[Event], **extra: Any) -> dict[str, Any]:
    """``hes/<meter>/events``: event-log entries, oldest first."""
    entries = [
        {"log_obis": e.log_obis, "ts": e.ts, "code": e.code, "name": e.name}
        for e in sorted(events, key=lambda e: (e.ts, e.log_obis, e.code))
    ]
    return _envelope(meter_id, "events", {**extra, "events": entries})


def alarm_payload(
    meter_id: str, ts: datetime, code: int, name: str | None = None, **extra: Any
) -> dict[str, Any]:
    """``hes/<meter>/alarm``: one pushed alarm (DataNotification) as it arrived."""
    return _envelope(meter_id, "alarm", {**extra, "ts": ts, "code": code, "name": name})


def meter_topic(meter_id: str, kind: str) -> str:
    """``<meter>/<kind>`` (relative to the outbox prefix); rejects ids that would break topics."""
    if kind not in KINDS:
        raise ValueError(f"MQTT topic kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if not meter_id or any(c in meter_id for c in "/+#\0"):
        raise ValueError(f"meter id {meter_id!r} cannot be an MQTT topic level (/, +, # or empty)")
    return f"{meter_id}/{kind}"
