"""``/api/reports`` over real HTTP: the daily report and the history, judged on the plan.

The built-in plan (four channels, UTC) is what the served context holds, so the figures
here are the ones ``hes report`` prints for the same database.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from conftest import ApiService

from collector.plan import load_plan
from storage.records import Attempt, IntervalRead, MeterRecord

CHANNELS = ["1.0.1.8.0.255", "1.0.2.8.0.255", "1.0.3.8.0.255", "1.0.4.8.0.255"]
DAY = date(2024, 3, 10)
T0 = datetime(2024, 3, 10, tzinfo=UTC)
Q = timedelta(minutes=15)
H = timedelta(hours=1)


def meter(mid: str, area: str, link: str, installed: date | None = None) -> MeterRecord:
    return MeterRecord(
        mid, "tcp", "10.0.0.1", 4059, None, None, 1, 16, "none", link, area, installed_on=installed
    )


def whole_day(mid: str, day: date = DAY) -> list[IntervalRead]:
    t0 = datetime.combine(day, datetime.min.time(), UTC)
    return [IntervalRead(mid, ch, t0 + k * Q, k, 0, 0) for ch in CHANNELS for k in range(96)]


def attempt(mid: str, at: datetime, outcome: str, cls: str | None = None) -> Attempt:
    day = at.date()
    return Attempt(mid, f"run-{at:%d%H}", day, at, at + Q, outcome, cls, cls and f"{cls} of {mid}")


@pytest.fixture
def fleet(api_service: ApiService) -> ApiService:
    """On DAY: A1 ok first time, A2 ok on the retry, B1 failed, B2 never tried, C1 installed
    the day after (not expected). The day before: A1 and A2 complete, nothing else."""
    db = api_service.db
    db.upsert_meters(
        [
            meter("A1", "north", "bus1"),
            meter("A2", "north", "bus1"),
            meter("B1", "south", "B1"),
            meter("B2", "south", "B2"),
            meter("C1", "east", "C1", installed=DAY + timedelta(days=1)),
        ]
    )
    for day in (DAY - timedelta(days=1), DAY):
        db.insert_interval_reads(whole_day("A1", day) + whole_day("A2", day))
    db.record_attempts(
        [
            attempt("A1", T0 + H, "ok"),
            attempt("A2", T0 + H, "failed", "timeout"),
            attempt("A2", T0 + 2 * H, "ok"),
            attempt("B1", T0 + H, "failed", "timeout"),
            attempt("B1", T0 + 3 * H, "failed", "authentication_failed"),
        ]
    )
    return api_service


def test_daily_report(fleet: ApiService) -> None:
    with fleet.reader() as http:
        r = http.get("/api/reports/daily", params={"day": DAY.isoformat(), "worst": 1})
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["day"] == "2024-03-10" and data["channels"] == CHANNELS
    assert (data["expected_meters"], data["not_expected_meters"]) == (4, 1)
    assert (data["complete_meters"], data["failed_meters"], data["not_collected_meters"]) == (
        2,
        1,
        1,
    )
    assert data["success_rate"] == 0.5 and data["first_pass_rate"] == 0.25
    assert data["by_area"]["north"]["success_rate"] == 1.0
    assert data["by_area"]["north"]["first_pass_rate"] == 0.5
    assert data["by_area"]["south"]["failed"] == 1
    assert data["by_area"]["south"]["not_collected"] == 1
    assert data["by_area"]["east"]["not_expected"] == 1
    assert data["by_area"]["east"]["success_rate"] is None
    assert set(data["by_link"]) == {"B1", "B2"}  # links with an incomplete meter
    assert len(data["worst_meters"]) == 1
    # the same figures as the CLI's report for the same plan
    assert data == fleet.db.daily_report(DAY, CHANNELS, worst=1)


def test_daily_report_last_error_of_the_worst_meters(fleet: ApiService) -> None:
    with fleet.reader() as http:
        data = http.get("/api/reports/daily", params={"day": DAY.isoformat()}).json()
    worst = {w["meter_id"]: w for w in data["worst_meters"]}
    assert worst["B1"]["last_error_class"] == "authentication_failed"
    assert worst["B1"]["last_error"] == "authentication_failed of B1"
    assert worst["B2"]["last_outcome"] == "not_collected"


def test_daily_report_default_day_is_yesterday_in_the_plan_zone(api_service: ApiService) -> None:
    yesterday = datetime.now(load_plan().tz).date() - timedelta(days=1)
    with api_service.reader() as http:
        data = http.get("/api/reports/daily").json()
    # the day may turn between the two clocks: either is the collection day of a moment
    assert data["day"] in (yesterday.isoformat(), (yesterday + timedelta(days=1)).isoformat())
    assert data["expected_meters"] == 0 and data["success_rate"] is None


def test_history(fleet: ApiService) -> None:
    with fleet.reader() as http:
        r = http.get("/api/reports/history", params={"days": 3, "to": DAY.isoformat()})
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["to"] == "2024-03-10" and data["days"] == 3 and data["timezone"] == "UTC"
    rows = data["history"]
    assert [row["day"] for row in rows] == ["2024-03-08", "2024-03-09", "2024-03-10"]
    assert rows[0] == {
        "day": "2024-03-08",
        "success_rate": 0.0,
        "first_pass_rate": 0.0,
        "complete": 0,
        "expected": 4,
        "failed": 0,
        "not_collected": 4,
        "not_expected": 1,
    }
    # the day before: complete without a session of its own, so final 50 %, first pass 0
    assert (rows[1]["success_rate"], rows[1]["first_pass_rate"]) == (0.5, 0.0)
    assert (rows[2]["success_rate"], rows[2]["first_pass_rate"]) == (0.5, 0.25)


def test_history_without_meters_is_no_data(api_service: ApiService) -> None:
    with api_service.reader() as http:
        rows = http.get("/api/reports/history", params={"days": 2, "to": "2024-03-10"}).json()
    assert [(r["success_rate"], r["first_pass_rate"]) for r in rows["history"]] == [
        (None, None),
        (None, None),
    ]


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/api/reports/daily", {"day": "2024-13-01"}, "query.day"),
        ("/api/reports/daily", {"day": "yesterday"}, "query.day"),
        ("/api/reports/daily", {"day": "2999-01-01"}, "query.day"),
        ("/api/reports/daily", {"worst": "-1"}, "query.worst"),
        ("/api/reports/daily", {"worst": "many"}, "query.worst"),
        ("/api/reports/daily", {"worst": "1001"}, "query.worst"),
        ("/api/reports/history", {"days": "0"}, "query.days"),
        ("/api/reports/history", {"days": "93"}, "query.days"),
        ("/api/reports/history", {"to": "2024-02-30"}, "query.to"),
        ("/api/reports/history", {"to": "2999-01-01"}, "query.to"),
    ],
)
def test_bad_input_names_the_field(
    api_service: ApiService, path: str, params: dict[str, str], field: str
) -> None:
    with api_service.reader() as http:
        r = http.get(path, params=params)
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["error"] == "bad_request" and body["field"] == field
    assert field in body["message"]


@pytest.mark.parametrize("path", ["/api/reports/daily", "/api/reports/history"])
def test_a_token_is_needed(api_service: ApiService, path: str) -> None:
    with api_service.client() as http:
        r = http.get(path)
    assert r.status_code == 401
    assert r.json()["error"] == "unauthenticated"
    with api_service.client("hes_not-a-token") as http:
        assert http.get(path).status_code == 401
    with api_service.operator() as http:  # operator includes reader
        assert (
            http.get(path, params={"day": "2024-03-10"} if "daily" in path else {}).status_code
            == 200
        )
