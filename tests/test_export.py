"""``hes export``: CSV and Parquet against the simulator's ground truth, filters, zones, bad
input, and proof that the export streams (bounded batches, flat memory) on both dialects.

A small fleet is collected once for the module (two days: the collected day and the one
before it, through the real collector over loopback sockets); the streaming tests use
synthetic rows written with ``Database.insert_interval_reads``.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import errno
import io
import re
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_collector_fleet import (
    CHANNELS,
    DAY,
    Fleet,
    online_meter_ids,
    outage_meter_ids,
    plan_text,
    truth_rows,
)
from typer.testing import CliRunner

from app.export import export_reads
from app.export_formats import CsvWriter, ParquetWriter
from cli import app
from collector.inventory import import_inventory
from collector.plan import parse_plan
from collector.service import Collector
from protocols.cosem import unit_text
from simulator import model
from storage.database import Database, open_database
from storage.export import ExportRange, interval_batches
from storage.records import Channel, IntervalRead, MeterRecord

runner = CliRunner()
#: Units of the simulator's four energy channels (A+, A-: Wh; R+, R-: varh).
SIM_UNITS = {"1.0.1.8.0.255": "Wh", "1.0.2.8.0.255": "Wh", "1.0.3.8.0.255": "varh"}
SIM_UNITS["1.0.4.8.0.255"] = "varh"


@dataclass(frozen=True)
class Collected:
    db_path: Path
    tcp_ids: list[int]
    bus_ids: list[int]
    outage_id: int

    @property
    def all_ids(self) -> list[int]:
        return [*self.tcp_ids, *self.bus_ids]


@pytest.fixture(scope="module")
def collected(tmp_path_factory: pytest.TempPathFactory) -> Collected:
    """4 TCP meters (area north, one with an outage on DAY) and a bus of 2 (area south),
    collected for DAY and the day before."""
    path = tmp_path_factory.mktemp("export") / "hes.db"
    outage = outage_meter_ids(1, 5000)
    ids = online_meter_ids(5, 1000)
    fleet = Fleet([*ids[:3], *outage], [ids[3:5]])

    async def collect() -> None:
        db = open_database(path)
        await fleet.start()
        try:
            import_inventory(db, fleet.write_csv(path.parent / "meters.csv"))
            summary = await Collector(db, parse_plan(plan_text(back_days=1)), DAY, seed=1).run()
            assert summary.stats.complete == 6, summary.as_dict()
        finally:
            await fleet.close()
            db.close()

    asyncio.run(collect())
    return Collected(path, fleet.tcp_ids, fleet.buses[0], outage[0])


def truth(sim_ids: list[int], days: list[date]) -> list[tuple[Any, ...]]:
    """(meter, channel, ts, raw, scaler, status, unit) the meters hold, in export order."""
    rows: list[tuple[Any, ...]] = []
    for sim_id in sim_ids:
        for k, channel in enumerate(CHANNELS):
            for day in days:
                for r in truth_rows(sim_id, day):
                    ts = datetime.fromtimestamp(r[0], UTC)
                    rows.append(
                        (Fleet.name(sim_id), channel, ts, r[2 + k], 0, r[1], SIM_UNITS[channel])
                    )
    return sorted(rows, key=lambda r: (r[0], r[1], r[2]))


def export(db: str | Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["export", "--db", str(db), *args])
    if result.exit_code not in (0, 1, 2) or isinstance(result.exception, Exception):
        raise AssertionError(f"hes export crashed: {result.exception!r}\n{result.stderr}")
    return result.exit_code, result.stdout, result.stderr


def parquet_rows(path: Path) -> list[tuple[Any, ...]]:
    table = pq.read_table(path)
    out = []
    for r in table.to_pylist():
        # value is raw * 10**scaler, as the nearest float64
        raw, scaler = r["raw"], r["scaler"]
        if raw is None:
            assert r["value"] is None
        else:
            want = raw / 10 ** (-scaler) if scaler < 0 else float(raw * 10**scaler)
            assert r["value"] == want, r
        out.append((r["meter_id"], r["channel"], r["ts"], raw, scaler, r["status"], r["unit"]))
    return out


def csv_rows(text: str) -> list[dict[str, str]]:
    reader = csv.DictReader(io.StringIO(text))
    assert reader.fieldnames == ["meter_id", "channel", "ts", "value", "unit", "status"]
    return list(reader)


# -- against the simulator's ground truth ------------------------------------------------------


def test_parquet_is_the_ground_truth_value_for_value(collected: Collected, tmp_path: Path) -> None:
    out = tmp_path / "day.parquet"
    code, _, err = export(
        collected.db_path,
        "--from",
        DAY.isoformat(),
        "--to",
        (DAY + timedelta(days=1)).isoformat(),
        "--format",
        "parquet",
        "--out",
        str(out),
    )
    assert code == 0, err
    want = truth(collected.all_ids, [DAY])
    assert f"{len(want)} values of 6 meters" in err
    schema = pq.read_schema(out)
    assert schema.field("meter_id").type == pa.dictionary(pa.int32(), pa.string())
    assert schema.field("channel").type == pa.dictionary(pa.int32(), pa.string())
    assert schema.field("ts").type == pa.timestamp("ms", tz="UTC")
    assert schema.field("value").type == pa.float64()
    assert schema.field("raw").type == pa.int64()
    assert schema.field("scaler").type == pa.int8()
    assert schema.field("unit").type == pa.string()
    assert schema.field("status").type == pa.int32()
    assert schema.metadata[b"hes.read_schema"] == b"1"
    assert schema.metadata[b"hes.ts"].startswith(b"interval end")
    got = parquet_rows(out)
    assert got == want  # every value, timestamp, status and unit, in meter/channel/ts order
    # The outage meter's entries after its outage carry the power-down bit, and some are absent.
    outage_rows = [r for r in got if r[0] == Fleet.name(collected.outage_id)]
    assert len(outage_rows) < 4 * 96
    assert any(r[5] & model.STATUS_POWER_DOWN for r in outage_rows)
    assert not (tmp_path / ".day.parquet.partial").exists()


def test_csv_in_a_zone_is_the_ground_truth(collected: Collected) -> None:
    """--tz Europe/Berlin: the day runs from 23:00 UTC the day before, stamps carry +01:00."""
    code, out, err = export(
        collected.db_path,
        "--from",
        DAY.isoformat(),
        "--to",
        (DAY + timedelta(days=1)).isoformat(),
        "--tz",
        "Europe/Berlin",
    )
    assert code == 0, err
    berlin = ZoneInfo("Europe/Berlin")
    start = datetime(DAY.year, DAY.month, DAY.day, tzinfo=berlin)
    end = start + timedelta(days=1)
    want = [
        r for r in truth(collected.all_ids, [DAY - timedelta(days=1), DAY]) if start <= r[2] < end
    ]
    rows = csv_rows(out)
    assert len(rows) == len(want)
    for row, (meter, channel, ts, raw, _scaler, status, unit) in zip(rows, want, strict=True):
        assert row == {
            "meter_id": meter,
            "channel": channel,
            "ts": ts.astimezone(berlin).isoformat(),
            "value": str(raw),
            "unit": unit,
            "status": str(status),
        }
    assert rows[0]["ts"] == f"{DAY.isoformat()}T00:00:00+01:00"


def test_two_days_and_the_area_filter(collected: Collected, tmp_path: Path) -> None:
    two_days = [DAY - timedelta(days=1), DAY]
    out = tmp_path / "south.parquet"
    code, _, err = export(
        collected.db_path,
        "--from",
        two_days[0].isoformat(),
        "--to",
        f"{DAY + timedelta(days=1)}T00:00Z",
        "--area",
        "south",
        "--format",
        "parquet",
        "--out",
        str(out),
    )
    assert code == 0, err
    assert parquet_rows(out) == truth(collected.bus_ids, two_days)
    code, csv_text, err = export(
        collected.db_path,
        "--from",
        two_days[0].isoformat(),
        "--to",
        (DAY + timedelta(days=1)).isoformat(),
        "--area",
        "north",
    )
    assert code == 0, err
    want = truth(collected.tcp_ids, two_days)
    assert [(r["meter_id"], r["channel"], r["value"]) for r in csv_rows(csv_text)] == [
        (m, c, str(raw)) for m, c, _, raw, *_ in want
    ]


def test_meter_and_channel_filters(collected: Collected) -> None:
    sim_id = collected.tcp_ids[1]
    code, out, err = export(
        collected.db_path,
        "--from",
        f"{DAY}T06:00",
        "--to",
        f"{DAY}T07:00",
        "--meter",
        Fleet.name(sim_id),
        "--channel",
        "1.0.2.8.0.255",
    )
    assert code == 0, err
    rows = csv_rows(out)
    want = [r for r in truth([sim_id], [DAY]) if r[1] == "1.0.2.8.0.255" and 6 <= r[2].hour < 7]
    assert [(r["ts"], r["value"]) for r in rows] == [(w[2].isoformat(), str(w[3])) for w in want]
    assert len(rows) == 4  # 06:00, 06:15, 06:30, 06:45: the end of the range is excluded


def test_an_empty_range_is_a_valid_empty_file_with_a_warning(
    collected: Collected, tmp_path: Path
) -> None:
    out = tmp_path / "empty.parquet"
    code, _, err = export(
        collected.db_path,
        "--from",
        "2020-01-01",
        "--to",
        "2020-01-02",
        "--format",
        "parquet",
        "--out",
        str(out),
    )
    assert code == 0, err
    assert "warning: no interval reads" in err
    table = pq.read_table(out)
    assert table.num_rows == 0
    assert table.schema.field("ts").type == pa.timestamp("ms", tz="UTC")
    code, text, err = export(collected.db_path, "--from", "2020-01-01", "--to", "2020-01-02")
    assert code == 0
    assert text == "meter_id,channel,ts,value,unit,status\n"


def test_parquet_to_stdout(collected: Collected) -> None:
    result = runner.invoke(
        app,
        [
            "export",
            "--db",
            str(collected.db_path),
            "--from",
            f"{DAY}T00:00",
            "--to",
            f"{DAY}T01:00",
            "--format",
            "parquet",
            "--area",
            "south",
        ],
    )
    assert result.exit_code == 0, result.stderr
    table = pq.read_table(pa.BufferReader(result.stdout_bytes))
    assert table.num_rows == 2 * 4 * 4  # 2 meters, 4 channels, 4 stamps


# -- bad input: a clear message and an exit code, never a traceback -------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "2026-03-10", "--to", "2026-03-10"], "is not after --from"),
        (["--from", "2026-03-11", "--to", "2026-03-10"], "is not after --from"),
        (["--from", "yesterday", "--to", "2026-03-10"], "--from 'yesterday' is not an ISO 8601"),
        (["--from", "2026-03-10", "--to", "2026-13-01"], "--to '2026-13-01' is not an ISO 8601"),
        (["--from", "2026-03-10", "--to", "2026-03-11", "--tz", "Mars/Olympus"], "not a time zone"),
        (["--from", "2026-03-10", "--to", "2026-03-11", "--format", "xlsx"], "use csv or parquet"),
        (
            ["--from", "2026-03-10", "--to", "2026-03-11", "--area", "west"],
            "--area 'west': no meter",
        ),
        (["--from", "2026-03-10", "--to", "2026-03-11", "--meter", "NOPE"], "--meter 'NOPE'"),
        (
            ["--from", "2026-03-10", "--to", "2026-03-11", "--out", "/no/such/dir/x.csv"],
            "cannot write",
        ),
        (["--from", "2026-03-10", "--to", "2026-03-11", "--out", "/tmp"], "is a directory"),
        (
            ["--from", "2026-03-10", "--to", "2026-03-11", "--config", "/no/plan.toml"],
            "cannot read",
        ),
    ],
)
def test_bad_input_is_named(collected: Collected, args: list[str], message: str) -> None:
    code, out, err = export(collected.db_path, *args)
    assert code == 2, (out, err)
    assert message in err
    assert "Traceback" not in err


def test_unknown_area_lists_the_known_ones(collected: Collected) -> None:
    code, _, err = export(
        collected.db_path, "--from", "2026-03-10", "--to", "2026-03-11", "--area", "x"
    )
    assert code == 2
    assert "(areas: north, south)" in err


def test_an_unreachable_database_is_exit_1(tmp_path: Path) -> None:
    code, _, err = export(
        "postgresql+psycopg://nobody@127.0.0.1:1/none", "--from", "2026-03-10", "--to", "2026-03-11"
    )
    assert code == 1
    assert "127.0.0.1:1" in err


# -- streaming: bounded batches, flat memory, on synthetic rows -----------------------------

T0 = datetime(2026, 3, 1, tzinfo=UTC)
SYN_CHANNELS = {"1.0.1.8.0.255": (30, -3), "1.0.3.8.0.255": (200, 1)}  # unit code, scaler


def synthetic(db: Database, meters: int, days: int = 2, first: int = 0) -> list[tuple[Any, ...]]:
    """meters x 2 channels x 96 x days rows (scalers -3 and 1, an unknown unit code, null
    values and statuses), written as the collector would; the expected export rows."""
    ids = [f"S{n:05d}" for n in range(first, first + meters)]
    db.upsert_meters(
        [
            MeterRecord(
                m,
                "tcp",
                "127.0.0.1",
                4059,
                None,
                None,
                1,
                16,
                "none",
                f"L-{m}",
                "even" if n % 2 == 0 else "odd",
            )
            for n, m in enumerate(ids, first)
        ]
    )
    db.upsert_channels(Channel(m, c, u, s, 900) for m in ids for c, (u, s) in SYN_CHANNELS.items())
    rows = []
    for n, m in enumerate(ids, first):
        for c, (_unit, scaler) in SYN_CHANNELS.items():
            for k in range(96 * days):
                value = None if k % 97 == 5 else n * 1_000_003 - 7 * k
                status = None if k % 11 == 3 else (0x80 | 0x08) if k % 13 == 0 else 0
                rows.append(
                    IntervalRead(m, c, T0 + timedelta(minutes=15 * k), value, scaler, status)
                )
    db.insert_interval_reads(rows)
    return sorted(
        (
            (r.meter_id, r.channel, r.ts, r.value, r.scaler, r.status, SYN_CHANNELS[r.channel][0])
            for r in rows
        ),
        key=lambda r: (r[0], r[1], r[2]),
    )


def exact(raw: int | None, scaler: int) -> str:
    """raw * 10**scaler written out digit by digit (independently of protocols.cosem)."""
    if raw is None:
        return ""
    if scaler >= 0:
        return str(raw * 10**scaler)
    sign = "-" if raw < 0 else ""
    whole, frac = divmod(abs(raw), 10**-scaler)
    return f"{sign}{whole}.{frac:0{-scaler}d}"


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Database, str]]:
    url = (
        str(tmp_path / "syn.db") if request.param == "sqlite" else request.getfixturevalue("pg_url")
    )
    db = open_database(url)
    yield db, url
    db.close()


def test_batches_are_bounded_and_ordered(any_db: tuple[Database, str]) -> None:
    db, _ = any_db
    want = synthetic(db, 12)  # 4,608 rows
    spec = ExportRange(T0, T0 + timedelta(days=2))
    batches = list(interval_batches(db, spec, batch_rows=700))
    assert [len(b) for b in batches] == [700] * 6 + [len(want) - 6 * 700]
    assert [r for b in batches for r in b] == want
    assert all(r[2].tzinfo is UTC or r[2].utcoffset() == timedelta(0) for b in batches for r in b)
    # filters
    spec = ExportRange(
        T0 + timedelta(hours=1), T0 + timedelta(hours=2), area="odd", channels=("1.0.3.8.0.255",)
    )
    got = [r for b in interval_batches(db, spec, batch_rows=5) for r in b]
    assert got == [
        r
        for r in want
        if int(r[0][1:]) % 2 == 1 and r[1] == "1.0.3.8.0.255" and spec.start <= r[2] < spec.end
    ]


def test_off_grid_entries_merge_in_time_order(any_db: tuple[Database, str]) -> None:
    """Entries off the 15-minute grid (a power-event capture) sit among their channel's day
    rows in time order, and a channel holding only such entries comes in key order; a range
    cutting days in the middle keeps what falls inside, whatever the batch size."""
    db, _ = any_db
    want = synthetic(db, 4)
    ids = [f"S{n:05d}" for n in range(4)]
    db.upsert_channels([Channel(m, "1.0.2.8.0.255", 30, 0, 900) for m in ids[1:3]])
    odd = [
        IntervalRead(ids[1], "1.0.1.8.0.255", T0 + timedelta(minutes=7), 11, -3, 0x80),
        IntervalRead(ids[1], "1.0.1.8.0.255", T0 + timedelta(hours=30, seconds=1), None, -3, None),
        IntervalRead(ids[1], "1.0.2.8.0.255", T0 + timedelta(hours=5, minutes=1), -4, 0, 2),
        IntervalRead(ids[2], "1.0.2.8.0.255", T0 + timedelta(hours=40, minutes=3), 9, 0, None),
        IntervalRead(ids[3], "1.0.3.8.0.255", T0 + timedelta(minutes=44), 5, 1, 0),
    ]
    db.insert_interval_reads(odd)
    units = {**{c: u for c, (u, _s) in SYN_CHANNELS.items()}, "1.0.2.8.0.255": 30}
    want = sorted(
        [*want, *((r.meter_id, r.channel, r.ts, r.value, r.scaler, r.status, units[r.channel])
                  for r in odd)],
        key=lambda r: (r[0], r[1], r[2]),
    )  # fmt: skip
    for start, end in (
        (T0, T0 + timedelta(days=2)),
        (T0 + timedelta(minutes=5), T0 + timedelta(hours=41)),
    ):
        spec = ExportRange(start, end)
        for size in (7, 333, 10_000):
            got = [r for b in interval_batches(db, spec, batch_rows=size) for r in b]
            assert got == [r for r in want if start <= r[2] < end], (start, end, size)


def test_postgres_reads_through_a_server_side_cursor(
    pg_url: str, pg_admin: psycopg.Connection[Any]
) -> None:
    """While the export is between batches, its backend's last statement is a FETCH of one
    batch from a cursor: the server holds the range, the client one batch."""
    db = open_database(pg_url)
    with contextlib.ExitStack() as stack:
        stack.callback(db.close)
        want = synthetic(db, 6)
        batches = interval_batches(db, ExportRange(T0, T0 + timedelta(days=2)), batch_rows=300)
        stack.enter_context(contextlib.closing(batches))
        got = list(next(batches))
        fetches = [
            q
            for (q,) in pg_admin.execute(
                "SELECT query FROM pg_stat_activity WHERE application_name = 'hes' "
                "AND state = 'idle in transaction'"
            )
        ]
        sizes = [int(m.group(1)) for q in fetches if (m := re.match(r"FETCH FORWARD (\d+)", q))]
        assert sizes and max(sizes) <= 300, fetches
        for batch in batches:
            assert len(batch) <= 300
            got.extend(batch)
        assert got == want


def _peak_export_bytes(db: Database, spec: ExportRange, fmt: str, tmp_path: Path) -> int:
    """Peak Python heap while exporting ``spec`` (tracemalloc: counts objects, not time)."""
    sink: Any = open(tmp_path / f"peak.{fmt}", "wb" if fmt == "parquet" else "w")
    with sink:
        writer = ParquetWriter(sink, "UTC", {}) if fmt == "parquet" else CsvWriter(sink, UTC)
        tracemalloc.start()
        try:
            export_reads(db, spec, writer, batch_rows=500)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_memory_stays_flat_as_the_range_grows(
    any_db: tuple[Database, str], fmt: str, tmp_path: Path
) -> None:
    """Four times the rows, the same peak: what an export holds is one batch, not the range.

    Holding the rows would cost ~300 bytes each, so the large export (15,360 rows) would
    peak ~3.5 MB above the small one (3,840 rows); streaming keeps the two within 10 %.
    """
    db, _ = any_db
    synthetic(db, 10)
    small = ExportRange(T0, T0 + timedelta(days=2), meters=tuple(f"S{n:05d}" for n in range(10)))
    synthetic(db, 30, first=10)
    large = ExportRange(T0, T0 + timedelta(days=2))
    _peak_export_bytes(db, small, fmt, tmp_path)  # caches, imports and statements warmed
    peak_small = _peak_export_bytes(db, small, fmt, tmp_path)
    peak_large = _peak_export_bytes(db, large, fmt, tmp_path)
    assert peak_large < peak_small * 1.1 + 64 * 1024, (peak_small, peak_large)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_a_failed_parquet_write_is_raised(tmp_path: Path) -> None:
    """The Parquet writer's thread fails (the device is full): the export raises it, it does
    not end as if written."""
    db = open_database(tmp_path / "syn.db")
    sink = open("/dev/full", "wb")  # closed by hand: its close fails too
    try:
        synthetic(db, 12)
        writer = ParquetWriter(sink, "UTC", {})  # the header fits the file's buffer
        with pytest.raises(OSError) as failed:
            export_reads(db, ExportRange(T0, T0 + timedelta(days=2)), writer, batch_rows=100)
        assert failed.value.errno == errno.ENOSPC
    finally:
        with contextlib.suppress(OSError):
            sink.close()
        db.close()


def test_scaled_values_exact_in_csv_and_parquet(
    any_db: tuple[Database, str], tmp_path: Path
) -> None:
    db, url = any_db
    want = synthetic(db, 3, days=1)
    code, out, err = export(
        url, "--from", T0.isoformat(), "--to", (T0 + timedelta(days=1)).isoformat()
    )
    assert code == 0, err
    rows = csv_rows(out)
    assert len(rows) == len(want)
    for row, (meter, channel, ts, raw, scaler, status, unit) in zip(rows, want, strict=True):
        assert row == {
            "meter_id": meter,
            "channel": channel,
            "ts": ts.isoformat(),
            "value": exact(raw, scaler),
            "unit": unit_text(unit),
            "status": "" if status is None else str(status),
        }
    assert rows[0]["value"] == "0.000" and rows[1]["value"] == "-0.007"
    assert rows[96]["unit"] == "unit 200" and rows[96]["value"] == "0"
    path = tmp_path / "syn.parquet"
    code, _, err = export(
        url,
        "--from",
        T0.isoformat(),
        "--to",
        (T0 + timedelta(days=1)).isoformat(),
        "--format",
        "parquet",
        "--out",
        str(path),
    )
    assert code == 0, err
    got = parquet_rows(path)
    assert got == [(*r[:6], unit_text(r[6])) for r in want]
    assert pq.read_table(path)["value"][97].as_py() == -70.0


def test_an_inventory_meter_without_reads_exports_empty(tmp_path: Path) -> None:
    db = open_database(tmp_path / "hes.db")
    try:
        synthetic(db, 2, days=1)
        db.upsert_meters(
            [MeterRecord("NEW1", "tcp", "127.0.0.1", 4059, None, None, 1, 16, "none", "L-new")]
        )
    finally:
        db.close()
    code, out, err = export(tmp_path / "hes.db", "--from", T0.isoformat(), "--to",
                            (T0 + timedelta(days=1)).isoformat(), "--meter", "NEW1")  # fmt: skip
    assert code == 0, err
    assert "warning: no interval reads" in err and "1 named meters" in err
    assert out == "meter_id,channel,ts,value,unit,status\n"
