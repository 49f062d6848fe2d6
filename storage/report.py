"""Daily collection report: the figures behind the 99.99 % success-rate claim.

Which meters a day is judged on: a meter is *expected* on ``day`` when it is enabled
(``meters.enabled``: the operator's switch) and installed (``meters.installed_on`` is NULL or
on or before ``day``); every other meter is *not expected* that day, counted apart and never
as a failure. Rates are over expected meters only, and None when no meter is expected.

Two rates per day:

* ``success_rate`` (final): the share of expected meters *complete* now, after every re-read:
  no interval of ``day`` missing on any of the judged channels (``missing_counts``, which
  takes read coverage into account).
* ``first_pass_rate``: the share of expected meters whose day was complete after their first
  session. Precisely, a meter passes first time when (1) its earliest read attempt recorded
  for ``day`` (``read_attempts`` with that ``day``, ordered by ``started`` then ``id``) has
  outcome ``ok``, (2) no other attempt was recorded for ``day`` (a second one means the first
  left something to read again: an ``ok`` session with ranges still missing is retried), and
  (3) the meter is complete now. So ``first_pass_rate <= success_rate`` always, and the gap
  between them is what retries and re-reads recovered.

An incomplete expected meter is *failed* when some session tried the day (an attempt exists)
and *not collected* when none did: unreachable meters versus a collector that never ran.

Built from a handful of grouped queries whatever the fleet size: completeness per meter
(``missing_counts`` of :class:`storage.handle.DatabaseHandle`), attempts grouped by outcome and
error class, the first and last attempt of each meter (window functions: at most two rows per
meter), and the not-expected meters counted per area in SQL. Nothing holds more than one
entry per meter in Python.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, timedelta, tzinfo
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, and_, func, not_, or_, select

from storage import schema
from storage.gaps import day_window, expected_epochs
from storage.handle import DatabaseHandle


class DayRate(NamedTuple):
    """One day of the success-rate history, as :func:`daily_report` counts it.

    The rates are None when no meter was expected that day (no data).
    """

    day: date
    success_rate: float | None
    first_pass_rate: float | None
    complete: int
    expected: int
    failed: int
    not_collected: int
    not_expected: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (the day as YYYY-MM-DD)."""
        out = self._asdict()
        out["day"] = self.day.isoformat()
        return out


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def expected_on(day: date) -> ColumnElement[bool]:
    """SQL condition: the meter is expected on ``day`` (enabled, and installed by then)."""
    m = schema.meters
    return and_(m.c.enabled.is_(True), or_(m.c.installed_on.is_(None), m.c.installed_on <= day))


class _Meter(NamedTuple):
    """What the report knows of one expected meter."""

    group: str
    missing: int
    tried: bool
    first_pass: bool


def _group_stats(
    meters: Iterable[_Meter], not_expected: Mapping[str, int] | None = None
) -> dict[str, dict[str, Any]]:
    """Counts and rates per group key (area or link; None becomes "")."""
    counts: dict[str, Counter[str]] = {}
    for m in meters:
        c = counts.setdefault(m.group, Counter())
        c["expected"] += 1
        c["first_pass"] += m.first_pass
        if m.missing:
            c["incomplete"] += 1
            c["failed" if m.tried else "not_collected"] += 1
            c["intervals_missing"] += m.missing
    for key, n in (not_expected or {}).items():
        counts.setdefault(key, Counter())["not_expected"] += n
    out: dict[str, dict[str, Any]] = {}
    for key in sorted(counts):
        c = counts[key]
        complete = c["expected"] - c["incomplete"]
        out[key] = {
            "expected": c["expected"],
            "not_expected": c["not_expected"],
            "complete": complete,
            "incomplete": c["incomplete"],
            "failed": c["failed"],
            "not_collected": c["not_collected"],
            "first_pass": c["first_pass"],
            "intervals_missing": c["intervals_missing"],
            "success_rate": _rate(complete, c["expected"]),
            "first_pass_rate": _rate(c["first_pass"], c["expected"]),
        }
    return out


def _first_and_last_attempts(
    db: DatabaseHandle, day: date
) -> tuple[dict[str, tuple[str, int]], dict[str, tuple[str, str | None, str | None]]]:
    """Per meter with attempts on ``day``: (first outcome, number of attempts) and the last
    attempt's (outcome, error class, error). One query, at most two rows per meter."""
    a = schema.read_attempts
    ranked = (
        select(
            a.c.meter_id,
            a.c.outcome,
            a.c.error_class,
            a.c.error,
            func.row_number()
            .over(partition_by=a.c.meter_id, order_by=(a.c.started, a.c.id))
            .label("first_rank"),
            func.row_number()
            .over(partition_by=a.c.meter_id, order_by=(a.c.started.desc(), a.c.id.desc()))
            .label("last_rank"),
            func.count().over(partition_by=a.c.meter_id).label("n"),
        )
        .where(a.c.day == day)
        .subquery()
    )
    rows = db.execute_read(
        select(
            ranked.c.meter_id,
            ranked.c.outcome,
            ranked.c.error_class,
            ranked.c.error,
            ranked.c.first_rank,
            ranked.c.last_rank,
            ranked.c.n,
        ).where(or_(ranked.c.first_rank == 1, ranked.c.last_rank == 1))
    )
    first: dict[str, tuple[str, int]] = {}
    last: dict[str, tuple[str, str | None, str | None]] = {}
    for meter, outcome, cls, error, first_rank, last_rank, n in rows:
        if first_rank == 1:
            first[meter] = (str(outcome), int(n))
        if last_rank == 1:
            last[meter] = (str(outcome), cls, error)
    return first, last


def daily_report(
    db: DatabaseHandle,
    day: date,
    channels: Sequence[str] | None = None,
    *,
    period_s: int = 900,
    tz: tzinfo = UTC,
    worst: int = 10,
) -> dict[str, Any]:
    """Figures of one collection day as a JSON-ready dict (see the module docstring).

    Every expected meter must deliver every interval of ``day`` (midnight to midnight in
    ``tz``) on each of ``channels``. The callers pass the plan's channels; None (judging on
    every channel name stored) is for tests and tools only, since a night on which every read
    failed stores no channel and would look complete. ``by_link`` lists only links with an
    incomplete meter; ``by_area`` every area with a meter, expected or not.
    """
    if channels is None:
        rows = db.execute_read(select(schema.channels.c.channel).distinct())
        channels = sorted(r[0] for r in rows)
    start, end = day_window(day, tz)
    m = schema.meters
    meters = db.execute_read(select(m.c.meter_id, m.c.link_id, m.c.area).where(expected_on(day)))
    not_expected_by_area = {
        (area if area is not None else ""): int(n)
        for area, n in db.execute_read(
            select(m.c.area, func.count()).where(not_(expected_on(day))).group_by(m.c.area)
        )
    }
    missing = db.missing_counts(start, end, channels, period_s, meter_ids=[r[0] for r in meters])
    per_meter = len(expected_epochs(start, end, period_s)) * len(channels)

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
    first, last = _first_and_last_attempts(db, day)

    def judged(meter: str, group: str | None) -> _Meter:
        n_missing = missing.get(meter, 0)
        first_outcome, n_attempts = first.get(meter, ("", 0))
        passed = first_outcome == "ok" and n_attempts == 1 and not n_missing
        return _Meter(group if group is not None else "", n_missing, meter in last, passed)

    by_meter = {r[0]: judged(r[0], r[2]) for r in meters}
    links = {r[0]: r[1] for r in meters}
    incomplete = {k: v.missing for k, v in by_meter.items() if v.missing}
    not_collected = sum(1 for k in incomplete if k not in last)
    first_pass = sum(v.first_pass for v in by_meter.values())
    incomplete_by_class: Counter[str] = Counter()
    for meter in incomplete:
        outcome, cls, _err = last.get(meter, ("", "not_attempted", None))
        incomplete_by_class[cls or ("no_error" if outcome == "ok" else "unknown")] += 1
    by_link = {
        k: v
        for k, v in _group_stats(v._replace(group=links[k]) for k, v in by_meter.items()).items()
        if v["incomplete"]
    }
    expected_meters = len(meters)
    complete = expected_meters - len(incomplete)
    worst_meters = [
        {
            "meter_id": meter,
            "link_id": links.get(meter),
            "area": by_meter[meter].group or None,
            "intervals_missing": n,
            "last_outcome": last.get(meter, ("not_collected", None, None))[0],
            "last_error_class": last.get(meter, ("", None, None))[1],
            "last_error": last.get(meter, ("", None, None))[2],
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
        "not_expected_meters": sum(not_expected_by_area.values()),
        "complete_meters": complete,
        "incomplete_meters": len(incomplete),
        "failed_meters": len(incomplete) - not_collected,
        "not_collected_meters": not_collected,
        "first_pass_meters": first_pass,
        "success_rate": _rate(complete, expected_meters),
        "first_pass_rate": _rate(first_pass, expected_meters),
        "intervals_expected": per_meter * expected_meters,
        "intervals_missing": sum(incomplete.values()),
        "attempts_by_outcome": outcomes,
        "failures_by_error_class": dict(sorted(by_class.items())),
        "incomplete_by_last_error_class": dict(sorted(incomplete_by_class.items())),
        "by_area": _group_stats(by_meter.values(), not_expected_by_area),
        "by_link": by_link,
        "worst_meters": worst_meters,
    }


def day_rate(report: Mapping[str, Any]) -> DayRate:
    """The history row of one :func:`daily_report`."""
    return DayRate(
        date.fromisoformat(report["day"]),
        report["success_rate"],
        report["first_pass_rate"],
        report["complete_meters"],
        report["expected_meters"],
        report["failed_meters"],
        report["not_collected_meters"],
        report["not_expected_meters"],
    )


def success_rates(
    db: DatabaseHandle,
    last_day: date,
    days: int,
    channels: Sequence[str] | None = None,
    *,
    period_s: int = 900,
    tz: tzinfo = UTC,
) -> list[DayRate]:
    """The :class:`DayRate` of the ``days`` days ending with ``last_day``, oldest first (the
    series of ``hes report --plot`` and the status page).

    One :func:`daily_report` per day, so every figure is the daily report's own; a few
    grouped queries per day, fine for the weeks a plot shows.
    """
    if days < 1:
        raise ValueError(f"days must be at least 1, not {days}")
    series: list[DayRate] = []
    for back in range(days - 1, -1, -1):
        day = last_day - timedelta(days=back)
        series.append(day_rate(daily_report(db, day, channels, period_s=period_s, tz=tz, worst=0)))
    return series
