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
  for ``day`` (``read_attempts`` with that ``day``, ordered by ``started_us`` then run) has
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

from collections.abc import Mapping, Sequence
from datetime import UTC, date, timedelta, tzinfo
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, Connection, and_, bindparam, func, not_, or_, select, text

from storage import schema
from storage.gaps import day_window, epoch, expected_epochs
from storage.handle import DatabaseHandle
from storage.interval_write import DAY_S
from storage.partitions import day_number


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


_TEMP = ("hes_report_gaps", "hes_report_meters")


def _gaps_table(
    conn: Connection,
    db: DatabaseHandle,
    day: date,
    channels: Sequence[str],
    period_s: int,
    tz: tzinfo,
) -> None:
    """``hes_report_gaps (meter_id, missing)``: the expected meters with a missing interval.

    A window of whole UTC days on the judged period is one grouped SUM of the rows'
    ``missing`` in SQL (a meter or channel without a row counts every slot missing); another
    zone, or a meter with rows of another period, goes through ``missing_counts`` (row by row
    for the rows with a gap) and only its incomplete meters are inserted.
    """
    start, end = day_window(day, tz)
    expected = expected_epochs(start, end, period_s)
    conn.execute(
        text("CREATE TEMP TABLE hes_report_gaps (meter_id VARCHAR(64) PRIMARY KEY, missing BIGINT)")
    )
    ck = schema.interval_channels
    ckeys = [
        int(k) for (k,) in conn.execute(select(ck.c.channel_key).where(ck.c.channel.in_(channels)))
    ]
    whole = (
        DAY_S % period_s == 0
        and epoch(start) % DAY_S == 0
        and epoch(end) % DAY_S == 0
        and len(expected) > 0
    )
    day_arg: Any = day.isoformat() if db.dialect == "sqlite" else day
    if whole and ckeys:
        first, last = epoch(start) // DAY_S, epoch(end) // DAY_S - 1
        slots = DAY_S // period_s
        rows = (last - first + 1) * len(channels)
        on_days = "day = :first" if first == last else "day >= :first AND day <= :last"
        with_rows = text(
            f"""
            INSERT INTO hes_report_gaps (meter_id, missing)
            SELECT k.meter_id, a.gaps + (:rows - a.n) * :slots
                   + CASE WHEN a.odd > 0 THEN 1000000000 ELSE 0 END
            FROM (
                SELECT meter_key,
                       SUM(CASE WHEN period_s = :period THEN missing ELSE 0 END) AS gaps,
                       SUM(CASE WHEN period_s = :period THEN 1 ELSE 0 END) AS n,
                       SUM(CASE WHEN period_s = :period THEN 0 ELSE 1 END) AS odd
                FROM interval_days
                WHERE {on_days} AND channel_key IN :ckeys
                GROUP BY meter_key
            ) a
            JOIN interval_meters k ON k.meter_key = a.meter_key
            JOIN meters m ON m.meter_id = k.meter_id
            WHERE a.gaps + (:rows - a.n) * :slots + a.odd > 0 AND {_EXPECTED}
            """
        ).bindparams(bindparam("ckeys", expanding=True))
        without_rows = text(
            f"""
            INSERT INTO hes_report_gaps (meter_id, missing)
            SELECT m.meter_id, :rows * :slots FROM meters m
            WHERE {_EXPECTED} AND NOT EXISTS (
                SELECT 1 FROM interval_meters k
                JOIN interval_days d ON d.meter_key = k.meter_key
                WHERE k.meter_id = m.meter_id AND d.{on_days.replace(" AND day", " AND d.day")}
                  AND d.channel_key IN :ckeys)
            """
        ).bindparams(bindparam("ckeys", expanding=True))
        values = {"rows": rows, "slots": slots, "period": period_s, "first": first,
                  "last": last, "ckeys": ckeys, "day": day_arg, "yes": True}  # fmt: skip
        conn.execute(with_rows, values)
        conn.execute(without_rows, values)
        odd = [
            str(m)
            for (m,) in conn.execute(
                text("SELECT meter_id FROM hes_report_gaps WHERE missing >= 1000000000")
            )
        ]
        if not odd:
            return
        # meters with rows on another grid: counted stamp by stamp, those few alone
        conn.execute(text("DELETE FROM hes_report_gaps WHERE missing >= 1000000000"))
        missing = db.missing_counts(start, end, channels, period_s, meter_ids=odd)
    else:
        ids = [
            str(m)
            for (m,) in conn.execute(text(f"SELECT m.meter_id FROM meters m WHERE {_EXPECTED}"),
                                     {"day": day_arg, "yes": True})
        ]  # fmt: skip
        missing = db.missing_counts(start, end, channels, period_s, meter_ids=ids)
    gaps = [{"m": m, "n": n} for m, n in missing.items() if n]
    if gaps:
        conn.execute(text("INSERT INTO hes_report_gaps (meter_id, missing) VALUES (:m, :n)"), gaps)


#: SQL condition on ``meters m``: expected on ``:day`` (see :func:`expected_on`).
_EXPECTED = "m.enabled = :yes AND (m.installed_on IS NULL OR m.installed_on <= :day)"

#: One row per expected meter: its missing count and what its attempts of the day say. A
#: meter read once (nearly all) takes its outcome from the grouped row; only meters tried
#: more than once look up their last attempt, the end of their range of the attempts' key
#: (day, meter_key, started_us, run_key). Outcomes are codes: 0 is ``ok``.
_LAST_ATTEMPT = """(
           SELECT r.{column} FROM read_attempts r
           WHERE r.day = :day_number AND r.meter_key = rows.meter_key
           ORDER BY r.started_us DESC, r.run_key DESC LIMIT 1)"""
_METERS_TABLE = f"""
CREATE TEMP TABLE hes_report_meters AS
WITH tried AS (
    SELECT k.meter_id, a.meter_key, a.n, a.outcome, a.error_class, a.error FROM (
        SELECT meter_key, COUNT(*) AS n, MAX(outcome) AS outcome,
               MAX(error_class) AS error_class, MAX(error) AS error
        FROM read_attempts WHERE day = :day_number GROUP BY meter_key
    ) a JOIN interval_meters k ON k.meter_key = a.meter_key
), rows AS (
    SELECT m.meter_id, m.link_id, COALESCE(m.area, '') AS area,
           COALESCE(g.missing, 0) AS missing, g.missing IS NULL AS whole, t.n, t.meter_key,
           t.outcome, t.error_class, t.error
    FROM meters m
    LEFT JOIN hes_report_gaps g ON g.meter_id = m.meter_id
    LEFT JOIN tried t ON t.meter_id = m.meter_id
    WHERE {_EXPECTED}
)
SELECT meter_id, link_id, area, missing,
       CASE WHEN n IS NULL THEN 0 ELSE 1 END AS tried,
       CASE WHEN n = 1 AND outcome = 0 AND whole THEN 1 ELSE 0 END AS first_pass,
       CASE WHEN n = 1 THEN outcome ELSE {_LAST_ATTEMPT.format(column="outcome")}
       END AS last_outcome,
       CASE WHEN n = 1 THEN error_class ELSE {_LAST_ATTEMPT.format(column="error_class")}
       END AS last_class,
       CASE WHEN n = 1 THEN error ELSE {_LAST_ATTEMPT.format(column="error")}
       END AS last_error
FROM rows
"""

_GROUP_COLUMNS = """
    COUNT(*) AS expected,
    SUM(CASE WHEN missing > 0 THEN 1 ELSE 0 END) AS incomplete,
    SUM(CASE WHEN missing > 0 AND tried = 1 THEN 1 ELSE 0 END) AS failed,
    SUM(CASE WHEN missing > 0 AND tried = 0 THEN 1 ELSE 0 END) AS not_collected,
    SUM(first_pass) AS first_pass,
    SUM(missing) AS intervals_missing
"""


def _group_row(counts: Sequence[int], not_expected: int) -> dict[str, Any]:
    """One group's figures from its SQL counts (the order of ``_GROUP_COLUMNS``)."""
    expected, incomplete, failed, not_collected, first_pass, intervals_missing = counts
    complete = expected - incomplete
    return {
        "expected": expected,
        "not_expected": not_expected,
        "complete": complete,
        "incomplete": incomplete,
        "failed": failed,
        "not_collected": not_collected,
        "first_pass": first_pass,
        "intervals_missing": intervals_missing,
        "success_rate": _rate(complete, expected),
        "first_pass_rate": _rate(first_pass, expected),
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
    per_meter = len(expected_epochs(start, end, period_s)) * len(channels)
    day_arg: Any = day.isoformat() if db.dialect == "sqlite" else day
    params = {"day": day_arg, "day_number": day_number(day), "yes": True}
    a = schema.read_attempts
    m = schema.meters
    with db.reading() as conn:
        for name in _TEMP:
            conn.execute(text(f"DROP TABLE IF EXISTS {_temp(db.dialect)}{name}"))
        _gaps_table(conn, db, day, channels, period_s, tz)
        conn.execute(text(_METERS_TABLE), params)
        not_expected_by_area = {
            (area if area is not None else ""): int(n)
            for area, n in conn.execute(
                select(m.c.area, func.count()).where(not_(expected_on(day))).group_by(m.c.area)
            )
        }
        by_area_rows = {
            str(area): [int(v or 0) for v in rest]
            for area, *rest in conn.execute(
                text(f"SELECT area, {_GROUP_COLUMNS} FROM hes_report_meters GROUP BY area")
            )
        }
        by_link = {
            str(link): _group_row([int(v or 0) for v in rest], 0)
            for link, *rest in conn.execute(
                text(
                    f"SELECT link_id, {_GROUP_COLUMNS} FROM hes_report_meters WHERE link_id IN "
                    "(SELECT link_id FROM hes_report_meters WHERE missing > 0) GROUP BY link_id"
                )
            )
        }
        incomplete_by_class = {
            str(cls): int(n)
            for cls, n in conn.execute(
                text(
                    "SELECT CASE WHEN tried = 0 THEN 'not_attempted' "
                    "WHEN COALESCE(last_class, '') <> '' THEN last_class "
                    "WHEN last_outcome = 0 THEN 'no_error' ELSE 'unknown' END AS cls, "
                    "COUNT(*) FROM hes_report_meters WHERE missing > 0 GROUP BY 1"
                )
            )
        }
        worst_meters = [
            {
                "meter_id": meter,
                "link_id": link,
                "area": area or None,
                "intervals_missing": int(n),
                "last_outcome": schema.OUTCOMES[int(outcome)] if tried else "not_collected",
                "last_error_class": cls,
                "last_error": error,
            }
            for meter, link, area, n, tried, outcome, cls, error in conn.execute(
                text(
                    "SELECT meter_id, link_id, area, missing, tried, last_outcome, last_class, "
                    "last_error FROM hes_report_meters WHERE missing > 0 "
                    f"ORDER BY missing DESC, meter_id{_BYTES_ORDER[db.dialect]} LIMIT :worst"
                ),
                {"worst": worst},
            )
        ]
        by_class = {
            (cls or "unknown"): int(n)
            for cls, n in conn.execute(
                select(a.c.error_class, func.count())
                .where(a.c.day == day_number(day), a.c.outcome != "ok")
                .group_by(a.c.error_class)
            )
        }
        outcomes = {
            str(o): int(n)
            for o, n in conn.execute(
                select(a.c.outcome, func.count())
                .where(a.c.day == day_number(day))
                .group_by(a.c.outcome)
            )
        }
    by_link = dict(sorted(by_link.items()))
    by_area = {
        key: _group_row(by_area_rows.get(key, [0] * 6), not_expected_by_area.get(key, 0))
        for key in sorted({*by_area_rows, *not_expected_by_area})
    }
    totals = [sum(col) for col in zip(*by_area_rows.values(), strict=True)] or [0] * 6
    expected_meters, incomplete, failed, not_collected, first_pass, intervals_missing = totals
    complete = expected_meters - incomplete
    return {
        "day": day.isoformat(),
        "window_start": start.isoformat(),
        "window_end": end.isoformat(),
        "channels": list(channels),
        "period_s": period_s,
        "expected_meters": expected_meters,
        "not_expected_meters": sum(not_expected_by_area.values()),
        "complete_meters": complete,
        "incomplete_meters": incomplete,
        "failed_meters": failed,
        "not_collected_meters": not_collected,
        "first_pass_meters": first_pass,
        "success_rate": _rate(complete, expected_meters),
        "first_pass_rate": _rate(first_pass, expected_meters),
        "intervals_expected": per_meter * expected_meters,
        "intervals_missing": intervals_missing,
        "attempts_by_outcome": outcomes,
        "failures_by_error_class": dict(sorted(by_class.items())),
        "incomplete_by_last_error_class": dict(sorted(incomplete_by_class.items())),
        "by_area": by_area,
        "by_link": by_link,
        "worst_meters": worst_meters,
    }


#: Ties of the worst meters in code-point order on both dialects (as Python sorts).
_BYTES_ORDER = {"sqlite": "", "postgresql": ' COLLATE "C"'}


def _temp(dialect: str) -> str:
    return "temp." if dialect == "sqlite" else "pg_temp."


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
