"""``/api/alarms`` and ``/api/audit`` over real HTTP, and the OpenAPI schema of every path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from conftest import ApiService

from storage import access
from storage.operations import PUSH_LOG
from storage.records import Event

T0 = datetime(2026, 3, 10, tzinfo=UTC)


@pytest.fixture
def alarmed(api_service: ApiService) -> ApiService:
    api_service.db.insert_events(
        [
            Event("M1", PUSH_LOG, T0 + timedelta(hours=1), 12, "cover opened"),
            Event("M2", PUSH_LOG, T0 + timedelta(hours=2), 3, "power down"),
            Event("M1", PUSH_LOG, T0 + timedelta(hours=3), 13, "cover closed"),
            Event("M1", PUSH_LOG, T0 + timedelta(days=2), 12, "cover opened"),
            Event("M1", "0.0.99.98.0.255", T0 + timedelta(hours=4), 47, "not pushed"),
        ]
    )
    return api_service


def test_alarms_newest_first(alarmed: ApiService) -> None:
    with alarmed.reader() as http:
        body = http.get("/api/alarms").json()
    assert [(a["meter_id"], a["code"]) for a in body["items"]] == [
        ("M1", 12),
        ("M1", 13),
        ("M2", 3),
        ("M1", 12),
    ]
    assert body["items"][1] == {
        "meter_id": "M1",
        "ts": "2026-03-10T03:00:00+00:00",
        "code": 13,
        "name": "cover closed",
    }


@pytest.mark.parametrize(
    ("params", "codes"),
    [
        ({"meter": "M1"}, [12, 13, 12]),
        ({"meter": "M2"}, [3]),
        ({"meter": "M9"}, []),
        ({"from": "2026-03-10T00:00Z", "to": "2026-03-11T00:00Z"}, [13, 3, 12]),
        ({"from": "2026-03-10T02:00Z"}, [12, 13, 3]),
        ({"to": "2026-03-10T02:00Z"}, [12]),
        ({"limit": "2"}, [12, 13]),
        ({"meter": "M1", "from": "2026-03-10T02:00Z", "limit": "1"}, [12]),
    ],
)
def test_alarm_filters(alarmed: ApiService, params: dict[str, str], codes: list[int]) -> None:
    with alarmed.reader() as http:
        items = http.get("/api/alarms", params=params).json()["items"]
    assert [a["code"] for a in items] == codes


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "query.limit"),
        ({"limit": "5000"}, "query.limit"),
        ({"from": "2026-03-10T00:00"}, "query.from"),
        ({"from": "soon"}, "query.from"),
        ({"from": "2026-03-11T00:00Z", "to": "2026-03-10T00:00Z"}, "query.to"),
    ],
)
def test_bad_alarm_queries(alarmed: ApiService, params: dict[str, str], field: str) -> None:
    with alarmed.reader() as http:
        r = http.get("/api/alarms", params=params)
    assert (r.status_code, r.json()["field"]) == (400, field)


def test_alarms_need_a_token(alarmed: ApiService) -> None:
    with alarmed.client() as http:
        assert http.get("/api/alarms").status_code == 401
    with alarmed.client("hes_forged") as http:
        assert http.get("/api/alarms").status_code == 401


def test_the_audit_trail_pages_newest_first_by_actor(api_service: ApiService) -> None:
    for n in range(3):
        access.audit(api_service.db, "prepayment", "meters.disable", target=f"M{n}", status=200)
    access.audit(api_service.db, "billing-reader", "jobs.submit", status=403, error="no")
    with api_service.operator() as http:
        every = http.get("/api/audit").json()
        mine = http.get("/api/audit", params={"actor": "prepayment", "limit": 2}).json()
        rest = http.get("/api/audit", params={"actor": "prepayment", "offset": 2}).json()
        bad = http.get("/api/audit", params={"limit": "-1"})
    assert every["total"] == 4
    first = every["items"][0]
    assert (first["actor"], first["action"], first["status"], first["error"]) == (
        "billing-reader",
        "jobs.submit",
        403,
        "no",
    )
    assert (mine["total"], [e["target"] for e in mine["items"]]) == (3, ["M2", "M1"])
    assert [e["target"] for e in rest["items"]] == ["M0"]
    assert (bad.status_code, bad.json()["field"]) == (400, "query.limit")


def test_the_audit_trail_is_for_operators(api_service: ApiService) -> None:
    with api_service.reader() as http:
        r = http.get("/api/audit")
    assert r.status_code == 403
    with api_service.client() as http:
        assert http.get("/api/audit").status_code == 401


def test_an_operator_s_changes_read_back_from_the_trail(api_service: ApiService) -> None:
    with api_service.operator() as http:
        http.post("/api/jobs", json={"kind": "events"}, headers={"Idempotency-Key": "a"})
        http.post("/api/jobs", json={"kind": "events"}, headers={"Idempotency-Key": "a"})
        http.post("/api/meters/M404/disable")
        items = http.get("/api/audit").json()["items"]
    assert [(e["action"], e["status"]) for e in items] == [
        ("meters.disable", 404),
        ("jobs.submit", 200),
        ("jobs.submit", 201),
    ]
    assert all(e["actor"] == "prepayment" for e in items)
    assert items[1]["detail"]["idempotency_key"] == "a"


EVERY_OPERATION = {
    ("get", "/api/meters"),
    ("post", "/api/meters/import"),
    ("get", "/api/meters/{meter_id}"),
    ("post", "/api/meters/{meter_id}/enable"),
    ("post", "/api/meters/{meter_id}/disable"),
    ("get", "/api/meters/{meter_id}/reads"),
    ("get", "/api/meters/{meter_id}/registers"),
    ("get", "/api/meters/{meter_id}/events"),
    ("get", "/api/meters/{meter_id}/outages"),
    ("post", "/api/meters/{meter_id}/disconnect"),
    ("post", "/api/meters/{meter_id}/reconnect"),
    ("post", "/api/meters/{meter_id}/clock-sync"),
    ("post", "/api/meters/{meter_id}/read"),
    ("post", "/api/jobs"),
    ("get", "/api/jobs"),
    ("get", "/api/jobs/{job_id}"),
    ("post", "/api/jobs/{job_id}/cancel"),
    ("get", "/api/alarms"),
    ("get", "/api/audit"),
}


def test_the_openapi_schema_lists_every_operation(api_service: ApiService) -> None:
    with api_service.client() as http:
        schema = http.get("/api/openapi.json").json()
    listed = {(method, path) for path, ops in schema["paths"].items() for method in ops}
    assert EVERY_OPERATION <= listed, sorted(EVERY_OPERATION - listed)
    reads = schema["paths"]["/api/meters/{meter_id}/reads"]["get"]
    assert {p["name"] for p in reads["parameters"]} == {
        "meter_id",
        "channel",
        "from",
        "to",
        "format",
    }
    upload = schema["paths"]["/api/meters/import"]["post"]["requestBody"]["content"]
    assert list(upload) == ["text/csv"]
    submit = schema["paths"]["/api/jobs"]["post"]
    assert "Idempotency-Key" in {p["name"] for p in submit["parameters"]}
    assert submit["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "JobSubmission"
    )
