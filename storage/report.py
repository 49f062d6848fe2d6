"""Daily collection report: the figures behind the 99.99 % success-rate claim.

Built from a handful of grouped queries whatever the fleet size: completeness per meter
(``missing_counts`` of :class:`storage.handle.DatabaseHandle`), attempts grouped by error
class, and the last attempt of each meter for the day.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, date, timedelta, tzinfo
from typing import Any

from sqlalchemy import and_, func, select

from storage import schema
from storage.gaps import day_window, expected_epochs
from storage.handle import DatabaseHandle


def _group_stats(
    names: dict[str, str | None], missing: dict[str, int]
) -> dict[str, dict[str, Any]]:
    expected: Counter[str] = Counter()
    incomplete: Counter[str] = Counter()
    gaps: Counter[str] = Counter()
    for meter, group in names.items():
        key = group if group is not None else ""
        expected[key] += 1
        if missing.get(meter, 0):
            incomplete[key] += 1
            gaps[key] += missing[meter]
    return {
        key: {
            "expected": expected[key],
            "complete": expected[key] - incomplete[key],
            "incomplete": incomplete[key],
            "intervals_missing": gaps[key],
            "success_rate": (expected[key] - incomplete[key]) / expected[key],
        }
        for key in sorted(expected)
    }


def daily_report(
    db: DatabaseHandle,
    day: date,
    channels: Sequence[str] | None = None,
    *,
    period_s: int = 900,
    tz: tzinfo = UTC,
    worst: int = 10,
) -> dict[str, Any]:
    """Figures of one collection day as a JSON-ready dict.

    Every meter of the inventory is expected to deliver every interval of ``day``
    (midnight to midnight in ``tz``) on each of ``channels`` (default: every channel
    name in the channels table). ``by_link`` lists only links with an incomplete meter.
    """
    if channels is None:
        rows = db.execute_read(select(schema.channels.c.channel).distinct())
        channels = sorted(r[0] for r in rows)
    start, end = day_window(day, tz)
    m = schema.meters
    meters = db.execute_read(select(m.c.meter_id, m.c.link_id, m.c.area))
    missing = db.missing_counts(start, end, channels, period_s, meter_ids=[r[0] for r in meters])
    per_meter = len(expected_epochs(start, end, period_s)) * len(channels)
    expected_meters = len(meters)
    incomplete = {k: v for k, v in missing.items() if v}
    complete = expected_meters - len(incomplete)

    a = schema.read_attempts
    by_class = {
        (cls or "unknown"): int(n)
        for cls, n in db.execute_read(
            select(a.c.error_class, func.count())
            .where(a.c.day == day, a.c.outcome != "ok")
            .group_by(a.c.error_class)
        )
    }
    outcomes = {
        str(o): int(n)
        for o, n in db.execute_read(
            select(a.c.outcome, func.count()).where(a.c.day == day).group_by(a.c.outcome)
        )
    }
    last = (
        select(a.c.meter_id, func.max(a.c.started).label("started"))
        .where(a.c.day == day)
        .group_by(a.c.meter_id)
        .subquery()
    )
    last_rows = db.execute_read(
        select(a.c.meter_id, a.c.outcome, a.c.error_class, a.c.error).join(
            last, and_(a.c.meter_id == last.c.meter_id, a.c.started == last.c.started)
        )
    )
    last_by_meter = {r[0]: (r[1], r[2], r[3]) for r in last_rows}
    # "Not collected" (no session tried the day) is a different fault from "failed" (sessions
    # tried and the data is still missing): a stopped collector versus unreachable meters.
    not_collected = sum(1 for meter in incomplete if meter not in last_by_meter)
    incomplete_by_class: Counter[str] = Counter()
    for meter in incomplete:
        outcome, cls, _err = last_by_meter.get(meter, (None, "not_attempted", None))
        incomplete_by_class[cls or ("no_error" if outcome == "ok" else "unknown")] += 1

    links = {r[0]: r[1] for r in meters}
    by_link = {k: v for k, v in _group_stats(links, incomplete).items() if v["incomplete"]}
    worst_meters = [
        {
            "meter_id": meter,
            "link_id": links.get(meter),
            "intervals_missing": n,
            "last_outcome": last_by_meter.get(meter, ("not_collected", None, None))[0],
            "last_error_class": last_by_meter.get(meter, (None, None, None))[1],
            "last_error": last_by_meter.get(meter, (None, None, None))[2],
        }
        for meter, n in sorted(incomplete.items(), key=lambda kv: (-kv[1], kv[0]))[:worst]
    ]
    return {
        "day": day.isoformat(),
        "window_start": start.isoformat(),
        "window_end": end.isoformat(),
        "channels": list(channels),
        "period_s": period_s,
        "expected_meters": expected_meters,
        "complete_meters": complete,
        "incomplete_meters": len(incomplete),
        "failed_meters": len(incomplete) - not_collected,
        "not_collected_meters": not_collected,
        "success_rate": complete / expected_meters if expected_meters else None,
        "intervals_expected": per_meter * expected_meters,
        "intervals_missing": sum(incomplete.values()),
        "attempts_by_outcome": outcomes,
        "failures_by_error_class": dict(sorted(by_class.items())),
        "incomplete_by_last_error_class": dict(sorted(incomplete_by_class.items())),
        "by_area": _group_stats({r[0]: r[2] for r in meters}, incomplete),
        "by_link": by_link,
        "worst_meters": worst_meters,
    }


def success_rates(
    db: DatabaseHandle,
    last_day: date,
    days: int,
    channels: Sequence[str] | None = None,
    *,
    period_s: int = 900,
    tz: tzinfo = UTC,
) -> list[tuple[date, float | None, int, int]]:
    """``(day, success_rate, complete_meters, expected_meters)`` of the ``days`` days ending
    with ``last_day``, oldest first (the series of ``hes report --plot``).

    One :func:`daily_report` per day, so every figure is the daily report's own; a few
    grouped queries per day, fine for the weeks a plot shows.
    """
    if days < 1:
        raise ValueError(f"days must be at least 1, not {days}")
    series: list[tuple[date, float | None, int, int]] = []
    for back in range(days - 1, -1, -1):
        day = last_day - timedelta(days=back)
        r = daily_report(db, day, channels, period_s=period_s, tz=tz, worst=0)
        series.append((day, r["success_rate"], r["complete_meters"], r["expected_meters"]))
    return series
