"""storage.queries on both dialects: the SQL the API's pages and ranges run (SQLite and
PostgreSQL differ in booleans, LIKE and aggregates of timestamps)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from storage import access, jobs, queries
from storage.database import Database, open_database
from storage.jobs import JobRequest
from storage.operations import PUSH_LOG
from storage.queries import MeterFilter
from storage.records import Event, MeterRecord, RegisterRead

T0 = datetime(2026, 3, 10, tzinfo=UTC)


def meter(meter_id: str, area: str, station: str) -> MeterRecord:
    return MeterRecord(
        meter_id,
        "tcp",
        "10.0.0.1",
        4059,
        None,
        None,
        1,
        16,
        "none",
        meter_id,
        area=area,
        station=station,
        installed_on=date(2024, 1, 2),
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    url = (
        str(tmp_path / "hes.db") if request.param == "sqlite" else request.getfixturevalue("pg_url")
    )
    database = open_database(url)
    database.upsert_meters(
        [
            meter("A_1", "north", "S1"),
            meter("A%2", "north", "S2"),
            meter("AB3", "south", "S1"),
            meter("B4", "south", "S2"),
        ]
    )
    database.set_enabled(["AB3"], False)
    yield database
    database.close()


def test_meter_pages_and_filters(db: Database) -> None:
    total, page = queries.meter_page(db, MeterFilter(), limit=2, offset=1)
    assert total == 4
    assert [m.record.meter_id for m in page] == ["AB3", "A_1"]
    assert page[0].enabled is False
    assert page[1].as_dict()["installed_on"] == "2024-01-02"

    def ids(where: MeterFilter) -> list[str]:
        return [m.record.meter_id for m in queries.meter_page(db, where, 100)[1]]

    assert ids(MeterFilter(prefix="A_")) == ["A_1"]  # _ and % are not wildcards
    assert ids(MeterFilter(prefix="A%")) == ["A%2"]
    assert ids(MeterFilter(prefix="A")) == ["A%2", "AB3", "A_1"]
    assert ids(MeterFilter(enabled=False)) == ["AB3"]
    assert ids(MeterFilter(enabled=True, station="S2")) == ["A%2", "B4"]
    assert ids(MeterFilter(area="south", transport="tcp")) == ["AB3", "B4"]
    assert queries.known_meters(db, ["B4", "nope", "A_1"]) == {"B4", "A_1"}
    info = queries.meter_info(db, "B4")
    assert info is not None and info.record == meter("B4", "south", "S2")
    assert queries.meter_info(db, "nope") is None


def test_registers_newest_per_obis_and_ranges(db: Database) -> None:
    db.insert_register_reads(
        [
            RegisterRead("B4", "1.0.1.8.0.255", T0, 10, 0, 30),
            RegisterRead("B4", "1.0.1.8.0.255", T0 + timedelta(days=1), 20, 0, 30),
            RegisterRead("B4", "1.0.2.8.0.255", T0, 5, -1, 30),
            RegisterRead("A_1", "1.0.1.8.0.255", T0 + timedelta(days=5), 99, 0, 30),
        ]
    )
    latest = queries.latest_registers(db, "B4")
    assert [(r.obis, r.value, r.ts) for r in latest] == [
        ("1.0.1.8.0.255", 20, T0 + timedelta(days=1)),
        ("1.0.2.8.0.255", 5, T0),
    ]
    assert [r.value for r in queries.latest_registers(db, "B4", "1.0.2.8.0.255")] == [5]
    ranged = queries.register_reads(db, "B4", T0, T0 + timedelta(days=1))
    assert [r.value for r in ranged] == [10, 5]


def test_events_and_alarms(db: Database) -> None:
    db.insert_events(
        [
            Event("B4", PUSH_LOG, T0 + timedelta(hours=1), 1, "a"),
            Event("A_1", PUSH_LOG, T0 + timedelta(hours=2), 2, "b"),
            Event("B4", "0.0.99.98.0.255", T0 + timedelta(hours=3), 3, "c"),
        ]
    )
    assert [e.code for e in queries.alarms(db, None, None)] == [2, 1]
    assert [e.code for e in queries.alarms(db, T0, T0 + timedelta(hours=2))] == [1]
    assert [e.code for e in queries.alarms(db, None, None, meter_id="B4")] == [1]
    assert [e.code for e in queries.events_of(db, "B4", None, None)] == [1, 3]
    assert [e.code for e in queries.events_of(db, "B4", T0, None, log_obis=PUSH_LOG)] == [1]


def test_job_and_audit_counts(db: Database) -> None:
    for kind in ("events", "events", "clock_sync"):
        jobs.submit(db, JobRequest(kind))
    jobs.claim_next(db)
    assert queries.count_jobs(db) == 3
    assert queries.count_jobs(db, kind="events") == 2
    assert queries.count_jobs(db, state="queued") == 2
    assert queries.count_jobs(db, state="running", kind="events") == 1
    access.audit(db, "a", "x")
    access.audit(db, "b", "x")
    assert (queries.count_audit(db), queries.count_audit(db, actor="b")) == (2, 1)
