"""A meter's reads over real HTTP: intervals (JSON, CSV), registers, events, outages.

Values are checked against rows stored first with a known raw value, scaler and unit, and
once against a real collection from the simulator and its ground truth.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import ApiService
from test_collector_fleet import CHANNELS, DAY, NOW, Fleet, online_meter_ids, plan_text, truth_rows

from collector.plan import parse_plan
from collector.service import Collector
from simulator import model
from storage import operations
from storage.operations import Outage
from storage.records import Channel, Event, IntervalRead, MeterRecord, RegisterRead

T0 = datetime(2026, 3, 10, tzinfo=UTC)
ENERGY = "1.0.1.8.0.255"
VOLTAGE = "1.0.32.7.0.255"


def meter(meter_id: str) -> MeterRecord:
    return MeterRecord(meter_id, "tcp", "10.0.0.1", 4059, None, None, 1, 16, "none", meter_id)


@pytest.fixture
def stored(api_service: ApiService) -> ApiService:
    """M1 with 8 quarter-hours of energy (scaler -3, Wh) and voltage (scaler -1, V)."""
    db = api_service.db
    db.upsert_meters([meter("M1"), meter("M2")])
    db.upsert_channels(
        [
            Channel("M1", ENERGY, unit=30, scaler=-3, period_s=900),
            Channel("M1", VOLTAGE, unit=35, scaler=-1, period_s=900),
        ]
    )
    db.insert_interval_reads(
        [
            IntervalRead("M1", ENERGY, T0 + timedelta(minutes=15 * i), 1000 + 1234 * i, -3, i % 3)
            for i in range(8)
        ]
        + [IntervalRead("M1", VOLTAGE, T0, 2301, -1, 0)]
    )
    return api_service


def window(hours: float = 2) -> dict[str, str]:
    return {"from": T0.isoformat(), "to": (T0 + timedelta(hours=hours)).isoformat()}


def test_intervals_are_scaled_with_their_unit_and_utc_stamps(stored: ApiService) -> None:
    with stored.reader() as http:
        r = http.get("/api/meters/M1/reads", params={"channel": ENERGY, **window(1)})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["meter_id"], body["channel"], body["unit"], body["unit_code"]) == (
        "M1",
        ENERGY,
        "Wh",
        30,
    )
    assert (body["from"], body["to"]) == ("2026-03-10T00:00:00+00:00", "2026-03-10T01:00:00+00:00")
    assert body["count"] == 4
    assert body["items"] == [
        {"ts": "2026-03-10T00:00:00+00:00", "value": 1.0, "status": 0},
        {"ts": "2026-03-10T00:15:00+00:00", "value": 2.234, "status": 1},
        {"ts": "2026-03-10T00:30:00+00:00", "value": 3.468, "status": 2},
        {"ts": "2026-03-10T00:45:00+00:00", "value": 4.702, "status": 0},
    ]


def test_the_range_is_from_inclusive_to_exclusive_in_any_offset(stored: ApiService) -> None:
    # 08:15 at +08:00 is 00:15 UTC; 09:00 at +08:00 is 01:00 UTC (excluded)
    params = {"channel": ENERGY, "from": "2026-03-10T08:15:00+08:00", "to": "2026-03-10T01:00Z"}
    with stored.reader() as http:
        items = http.get("/api/meters/M1/reads", params=params).json()["items"]
    assert [i["ts"][11:16] for i in items] == ["00:15", "00:30", "00:45"]


def test_intervals_as_csv(stored: ApiService) -> None:
    with stored.reader() as http:
        r = http.get(
            "/api/meters/M1/reads", params={"channel": VOLTAGE, "format": "csv", **window()}
        )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows == [
        ["meter_id", "channel", "ts", "value", "unit", "status"],
        ["M1", VOLTAGE, "2026-03-10T00:00:00+00:00", "230.1", "V", "0"],
    ]
    with stored.reader() as http:
        energy = http.get(
            "/api/meters/M1/reads", params={"channel": ENERGY, "format": "csv", **window()}
        )
    values = [row[3] for row in csv.reader(io.StringIO(energy.text))][1:]
    assert values == ["1.000", "2.234", "3.468", "4.702", "5.936", "7.170", "8.404", "9.638"]


def test_a_meter_without_reads_in_the_range_answers_empty(stored: ApiService) -> None:
    params = {"channel": ENERGY, "from": "2026-04-01T00:00Z", "to": "2026-04-02T00:00Z"}
    with stored.reader() as http:
        body = http.get("/api/meters/M1/reads", params=params).json()
    assert (body["count"], body["items"]) == (0, [])


@pytest.mark.parametrize(
    ("params", "field", "says"),
    [
        ({"from": "2026-03-10T00:00:00", "to": "2026-03-10T01:00Z"}, "query.from", "timezone"),
        ({"from": "yesterday", "to": "2026-03-10T01:00Z"}, "query.from", ""),
        ({"from": "2026-03-10T00:00Z", "to": "2026-02-30T00:00Z"}, "query.to", ""),
        ({"to": "2026-03-10T01:00Z"}, "query.from", "required"),
        ({"from": "2026-03-10T00:00Z"}, "query.to", "required"),
        ({"from": "2026-03-10T01:00Z", "to": "2026-03-10T01:00Z"}, "query.to", "after from"),
        ({"from": "2026-01-01T00:00Z", "to": "2026-02-01T00:00:01Z"}, "query.to", "31 days"),
        ({**window(), "format": "xml"}, "query.format", ""),
        ({**window(), "channel": "9.9.9.9.9.9"}, "query.channel", ENERGY),
    ],
)
def test_bad_read_requests_are_400_naming_the_parameter(
    stored: ApiService, params: dict[str, str], field: str, says: str
) -> None:
    with stored.reader() as http:
        r = http.get("/api/meters/M1/reads", params={"channel": ENERGY, **params})
    assert r.status_code == 400, r.text
    assert r.json()["field"] == field
    assert says in r.json()["message"]


def test_thirty_one_days_is_allowed(stored: ApiService) -> None:
    params = {"channel": ENERGY, "from": "2026-03-01T00:00Z", "to": "2026-04-01T00:00Z"}
    with stored.reader() as http:
        assert http.get("/api/meters/M1/reads", params=params).json()["count"] == 8


def test_the_channel_is_required(stored: ApiService) -> None:
    with stored.reader() as http:
        r = http.get("/api/meters/M1/reads", params=window())
    assert (r.status_code, r.json()["field"]) == (400, "query.channel")


@pytest.mark.parametrize("path", ["reads", "registers", "events", "outages"])
def test_reads_of_an_unknown_meter_are_404(stored: ApiService, path: str) -> None:
    with stored.reader() as http:
        r = http.get(f"/api/meters/NOPE/{path}", params={"channel": ENERGY, **window()})
    assert r.status_code == 404
    assert "'NOPE'" in r.json()["message"]


@pytest.mark.parametrize("path", ["reads", "registers", "events", "outages"])
def test_reads_need_a_token(stored: ApiService, path: str) -> None:
    with stored.client() as http:
        r = http.get(f"/api/meters/M1/{path}", params={"channel": ENERGY, **window()})
    assert r.status_code == 401


def test_registers_newest_per_obis_or_a_range(stored: ApiService) -> None:
    db = stored.db
    day1, day2 = T0, T0 + timedelta(days=1)
    db.insert_register_reads(
        [
            RegisterRead("M1", ENERGY, day1, 5000, 0, 30),
            RegisterRead("M1", ENERGY, day2, 5600, 0, 30, capture_time=day2 - timedelta(hours=1)),
            RegisterRead("M1", "1.0.2.8.0.255", day1, 17, 2, 30),
            RegisterRead("M2", ENERGY, day2 + timedelta(hours=1), 1, 0, 30),
        ]
    )
    with stored.reader() as http:
        latest = http.get("/api/meters/M1/registers").json()["items"]
        ranged = http.get(
            "/api/meters/M1/registers",
            params={"obis": "1-0:1.8.0.255", "from": day1.isoformat(), "to": day2.isoformat()},
        ).json()["items"]
        bad = http.get("/api/meters/M1/registers", params={"obis": "1.8"})
        half = http.get("/api/meters/M1/registers", params={"from": day1.isoformat()})
        none = http.get("/api/meters/M2/registers", params={"obis": "1.0.2.8.0.255"}).json()
    assert latest == [
        {
            "obis": ENERGY,
            "ts": "2026-03-11T00:00:00+00:00",
            "value": 5600,
            "unit": "Wh",
            "unit_code": 30,
            "capture_time": "2026-03-10T23:00:00+00:00",
        },
        {
            "obis": "1.0.2.8.0.255",
            "ts": "2026-03-10T00:00:00+00:00",
            "value": 1700,
            "unit": "Wh",
            "unit_code": 30,
            "capture_time": None,
        },
    ]
    assert [(i["ts"][:10], i["value"]) for i in ranged] == [("2026-03-10", 5000)]
    assert (bad.status_code, bad.json()["field"]) == (400, "query.obis")
    assert (half.status_code, half.json()["field"]) == (400, "query.to")
    assert none["items"] == []


def test_events_in_a_range_of_one_log(stored: ApiService) -> None:
    std, power = "0.0.99.98.0.255", "0.0.99.98.1.255"
    stored.db.insert_events(
        [
            Event("M1", std, T0 + timedelta(hours=1), 47, "clock adjusted"),
            Event("M1", power, T0 + timedelta(hours=2), 1, "power down"),
            Event("M1", power, T0 + timedelta(hours=3), 2, "power up"),
            Event("M1", std, T0 + timedelta(days=3), 48, None),
            Event("M2", std, T0 + timedelta(hours=1), 47, "clock adjusted"),
        ]
    )
    with stored.reader() as http:
        every = http.get("/api/meters/M1/events").json()["items"]
        day = http.get("/api/meters/M1/events", params=window(24)).json()["items"]
        power_only = http.get("/api/meters/M1/events", params={"log": "0-0:99.98.1.255"}).json()
        first = http.get("/api/meters/M1/events", params={"limit": 1}).json()["items"]
        bad = http.get("/api/meters/M1/events", params={"from": "2026-03-10", "to": "2026-03-09"})
    assert [e["code"] for e in every] == [47, 1, 2, 48]
    assert day[0] == {
        "log": std,
        "ts": "2026-03-10T01:00:00+00:00",
        "code": 47,
        "name": "clock adjusted",
    }
    assert [e["code"] for e in day] == [47, 1, 2]
    assert [e["name"] for e in power_only["items"]] == ["power down", "power up"]
    assert [e["code"] for e in first] == [47]
    assert bad.status_code == 400


def test_outages_overlapping_a_range(stored: ApiService) -> None:
    operations.insert_outages(
        stored.db,
        [
            Outage("M1", T0 - timedelta(hours=1), T0 + timedelta(minutes=10)),
            Outage("M1", T0 + timedelta(days=2), T0 + timedelta(days=2, hours=3)),
        ],
    )
    with stored.reader() as http:
        every = http.get("/api/meters/M1/outages").json()["items"]
        day = http.get("/api/meters/M1/outages", params=window(24)).json()["items"]
        empty = http.get("/api/meters/M2/outages").json()["items"]
    assert [o["duration_s"] for o in every] == [4200, 10800]
    assert day == [
        {
            "power_down": "2026-03-09T23:00:00+00:00",
            "power_up": "2026-03-10T00:10:00+00:00",
            "duration_s": 4200,
        }
    ]
    assert empty == []


async def test_a_collected_day_reads_back_as_the_simulator_s_ground_truth(
    api_service: ApiService, tmp_path: Path
) -> None:
    ids = online_meter_ids(3, 1000)
    fleet = Fleet(ids[:2], [ids[2:3]])
    await fleet.start()
    try:
        csv_text = fleet.write_csv(tmp_path / "m.csv").read_text()
        with api_service.operator() as http:
            imported = http.post(
                "/api/meters/import", content=csv_text, headers={"Content-Type": "text/csv"}
            )
        assert imported.json()["inserted"] == 3
        summary = await Collector(api_service.db, parse_plan(plan_text()), DAY, seed=1).run()
        assert summary.stats.complete == 3
    finally:
        await fleet.close()
    start = datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC)
    params = {"from": start.isoformat(), "to": (start + timedelta(days=1)).isoformat()}
    with api_service.reader() as http:
        for sim_id in ids:
            name = Fleet.name(sim_id)
            truth = truth_rows(sim_id, DAY)
            for k, channel in enumerate(CHANNELS):
                body = http.get(
                    f"/api/meters/{name}/reads", params={"channel": channel, **params}
                ).json()
                assert body["unit"] == ("Wh" if k < 2 else "varh")
                want = [
                    {
                        "ts": datetime.fromtimestamp(row[0], UTC).isoformat(),
                        "value": row[2 + k],
                        "status": row[1],
                    }
                    for row in truth
                ]
                assert body["items"] == want, (name, channel)
            registers = http.get(f"/api/meters/{name}/registers").json()["items"]
            sim = fleet.meter(sim_id)
            regs = model.registers(sim.spec, sim.meter_time(NOW))
            assert {r["obis"]: r["value"] for r in registers} == {
                "1.0.1.8.0.255": regs.active_import,
                "1.0.2.8.0.255": regs.active_export,
                "1.0.3.8.0.255": regs.reactive_import,
                "1.0.4.8.0.255": regs.reactive_export,
            }
