"""``/api/jobs`` and the one-meter commands over real HTTP: submit (idempotent by key),
get, list, cancel; the operator role; an audit entry for every change, refusals included."""

from __future__ import annotations

from typing import Any, get_args

import httpx
import pytest
from conftest import ApiService

from app.api.jobs import Kind, State
from storage import access, jobs
from storage.records import MeterRecord


def meter(meter_id: str) -> MeterRecord:
    return MeterRecord(meter_id, "tcp", "10.0.0.1", 4059, None, None, 1, 16, "none", meter_id)


@pytest.fixture
def api(api_service: ApiService) -> ApiService:
    api_service.db.upsert_meters([meter("M1"), meter("M2"), meter("M3")])
    return api_service


def submit(
    api: ApiService, body: Any, key: str | None = None, token: str | None = None
) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key is not None else {}
    with api.client(token or api.operator_token) as http:
        return http.post("/api/jobs", json=body, headers=headers)


def trail(api: ApiService) -> list[tuple[str, str, str | None, int | None]]:
    """(actor, action, target, status) of the audit trail, oldest first."""
    return [(e.actor, e.action, e.target, e.status) for e in access.audit_entries(api.db)][::-1]


def test_the_api_s_kinds_and_states_are_storage_s() -> None:
    assert get_args(Kind) == jobs.KINDS
    assert get_args(State) == jobs.STATES


def test_submit_queues_a_job_for_the_token(api: ApiService) -> None:
    r = submit(api, {"kind": "collect", "params": {"day": "2026-03-10"}})
    assert r.status_code == 201, r.text
    job = r.json()
    assert r.headers["location"] == f"/api/jobs/{job['id']}"
    assert {k: job[k] for k in ("kind", "state", "origin", "requested_by", "priority")} == {
        "kind": "collect",
        "state": "queued",
        "origin": "api",
        "requested_by": "prepayment",
        "priority": jobs.ON_DEMAND,
    }
    assert (job["params"], job["meters"]) == ({"day": "2026-03-10"}, None)
    stored = jobs.get(api.db, job["id"])
    assert stored is not None and stored.as_dict() == job
    assert trail(api) == [("prepayment", "jobs.submit", str(job["id"]), 201)]
    (entry,) = access.audit_entries(api.db)
    assert entry.detail["kind"] == "collect"
    assert entry.detail["created"] is True


def test_a_retry_with_the_same_key_is_the_same_job_and_another_request_is_409(
    api: ApiService,
) -> None:
    body = {"kind": "disconnect", "meters": ["M1"]}
    first = submit(api, body, key="billing-7781")
    again = submit(api, body, key="billing-7781")
    other = submit(api, {"kind": "disconnect", "meters": ["M2"]}, key="billing-7781")
    assert (first.status_code, again.status_code, other.status_code) == (201, 200, 409)
    assert again.json() == first.json()
    assert first.json()["idempotency_key"] == "billing-7781"
    assert len(jobs.list_jobs(api.db)) == 1
    assert other.json()["error"] == "idempotency_conflict"
    assert other.json()["field"] == "header.Idempotency-Key"
    assert [s for *_, s in trail(api)] == [201, 200, 409]
    conflict = access.audit_entries(api.db)[0]
    assert conflict.error is not None and "billing-7781" in conflict.error


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"kind": "teleport"}, "body.kind", ""),
        ({}, "body.kind", ""),
        ({"kind": "collect"}, "body.params.day", "params.day"),
        ({"kind": "collect", "params": {"day": "10.3.2026"}}, "body.params.day", "not a date"),
        ({"kind": "events", "params": {"hours": 3}}, "body.params.hours", "no parameter"),
        ({"kind": "read"}, "body.meters", "needs the meters"),
        ({"kind": "firmware", "params": {"image": "/f", "identifier": "V2"}}, "body.meters", ""),
        (
            {"kind": "firmware", "meters": ["M1"], "params": {"identifier": "V2"}},
            "body.params.image",
            "params.image",
        ),
        ({"kind": "read", "meters": []}, "body.meters", "non-empty"),
        ({"kind": "read", "meters": ["M1", "NOPE", "GONE"]}, "body.meters.1", "'NOPE', 'GONE'"),
        ({"kind": "events", "colour": "red"}, "body.colour", ""),
        (
            {
                "kind": "read",
                "meters": ["M1"],
                "params": {"profile": {"from": "2026-03-10T00:00Z", "to": "2026-03-09T00:00Z"}},
            },
            "body.params.profile.to",
            "after",
        ),
    ],
)
def test_bad_submissions_are_400_naming_the_field_and_audited(
    api: ApiService, body: dict[str, Any], field: str, says: str
) -> None:
    r = submit(api, body)
    assert r.status_code == 400, r.text
    assert r.json()["field"] == field
    assert says in r.json()["message"]
    assert jobs.list_jobs(api.db) == []
    assert trail(api) == [("prepayment", "jobs.submit", None, 400)]


def test_a_bad_idempotency_key_is_400(api: ApiService) -> None:
    r = submit(api, {"kind": "events"}, key="k" * 129)
    assert (r.status_code, r.json()["field"]) == (400, "header.Idempotency-Key")


def test_a_body_that_is_not_json_is_400(api: ApiService) -> None:
    with api.operator() as http:
        r = http.post(
            "/api/jobs", content=b"{kind: events", headers={"Content-Type": "application/json"}
        )
    assert r.status_code == 400
    assert r.json()["field"].startswith("body")


def test_a_reader_may_not_submit_and_the_refusal_is_audited(api: ApiService) -> None:
    r = submit(api, {"kind": "disconnect", "meters": ["M1"]}, token=api.reader_token)
    assert r.status_code == 403
    assert r.json()["error"] == "forbidden"
    assert jobs.list_jobs(api.db) == []
    assert trail(api) == [("billing-reader", "jobs.submit", None, 403)]


def test_submitting_needs_a_live_token(api: ApiService) -> None:
    with api.client() as http:
        assert http.post("/api/jobs", json={"kind": "events"}).status_code == 401
    r = submit(api, {"kind": "events"}, token="hes_forged")
    assert r.status_code == 401
    assert trail(api) == []


def test_get_and_list(api: ApiService) -> None:
    ids = [
        submit(api, {"kind": "events"}).json()["id"],
        submit(api, {"kind": "clock_sync", "meters": ["M1"]}).json()["id"],
        submit(api, {"kind": "events", "meters": ["M2"]}).json()["id"],
    ]
    claimed = jobs.claim_next(api.db)
    assert claimed is not None
    with api.reader() as http:
        one = http.get(f"/api/jobs/{ids[1]}").json()
        every = http.get("/api/jobs").json()
        events = http.get("/api/jobs", params={"kind": "events"}).json()
        queued = http.get("/api/jobs", params={"state": "queued", "limit": 1}).json()
        second = http.get("/api/jobs", params={"state": "queued", "limit": 1, "offset": 1}).json()
        running = http.get("/api/jobs", params={"state": "running"}).json()
    assert (one["kind"], one["meters"]) == ("clock_sync", ["M1"])
    assert [j["id"] for j in every["items"]] == ids[::-1]
    assert every["total"] == 3
    assert [j["id"] for j in events["items"]] == [ids[2], ids[0]]
    assert queued["total"] == 2
    assert [j["id"] for j in queued["items"] + second["items"]] == [
        i for i in ids[::-1] if i != claimed.id
    ]
    assert [j["id"] for j in running["items"]] == [claimed.id]


@pytest.mark.parametrize(
    ("path", "params", "status", "field"),
    [
        ("/api/jobs/999", {}, 404, "path.job_id"),
        ("/api/jobs/abc", {}, 400, "path.job_id"),
        ("/api/jobs/0", {}, 400, "path.job_id"),
        ("/api/jobs", {"state": "sleeping"}, 400, "query.state"),
        ("/api/jobs", {"kind": "teleport"}, 400, "query.kind"),
        ("/api/jobs", {"limit": "0"}, 400, "query.limit"),
        ("/api/jobs", {"offset": "x"}, 400, "query.offset"),
    ],
)
def test_bad_job_reads(
    api: ApiService, path: str, params: dict[str, str], status: int, field: str
) -> None:
    with api.reader() as http:
        r = http.get(path, params=params)
    assert r.status_code == status
    assert r.json()["field"] == field


def test_cancel(api: ApiService) -> None:
    done, running, queued = (submit(api, {"kind": "events"}).json()["id"] for _ in range(3))
    # the runner claims the oldest two and finishes the first
    assert [getattr(jobs.claim_next(api.db), "id", None) for _ in range(2)] == [done, running]
    jobs.finish(api.db, done, "done")
    with api.operator() as http:
        c1 = http.post(f"/api/jobs/{queued}/cancel")
        c1_again = http.post(f"/api/jobs/{queued}/cancel")
        c2 = http.post(f"/api/jobs/{running}/cancel")
        c3 = http.post(f"/api/jobs/{done}/cancel")
        c4 = http.post("/api/jobs/999/cancel")
    assert (c1.status_code, c1.json()["state"]) == (200, "cancelled")
    assert (c1_again.status_code, c1_again.json()["state"]) == (200, "cancelled")
    assert (c2.status_code, c2.json()["state"], c2.json()["cancel_requested"]) == (
        200,
        "running",
        True,
    )
    assert (c3.status_code, c3.json()["error"]) == (409, "job_finished")
    assert c4.status_code == 404
    assert [(a, t, s) for _, a, t, s in trail(api)][-5:] == [
        ("jobs.cancel", str(queued), 200),
        ("jobs.cancel", str(queued), 200),
        ("jobs.cancel", str(running), 200),
        ("jobs.cancel", str(done), 409),
        ("jobs.cancel", "999", 404),
    ]


def test_a_reader_may_not_cancel(api: ApiService) -> None:
    job = submit(api, {"kind": "events"}).json()["id"]
    with api.reader() as http:
        r = http.post(f"/api/jobs/{job}/cancel")
    assert r.status_code == 403
    stored = jobs.get(api.db, job)
    assert stored is not None and stored.state == "queued"
    assert trail(api)[-1] == ("billing-reader", "jobs.cancel", str(job), 403)


@pytest.mark.parametrize(
    ("path", "kind"),
    [("disconnect", "disconnect"), ("reconnect", "reconnect"), ("clock-sync", "clock_sync")],
)
def test_a_command_queues_its_job_for_one_meter(api: ApiService, path: str, kind: str) -> None:
    with api.operator() as http:
        r = http.post(f"/api/meters/M2/{path}", headers={"Idempotency-Key": f"{path}-1"})
        again = http.post(f"/api/meters/M2/{path}", headers={"Idempotency-Key": f"{path}-1"})
    assert r.status_code == 201
    assert (r.json()["kind"], r.json()["meters"], r.json()["params"]) == (kind, ["M2"], {})
    assert again.status_code == 200
    assert again.json()["id"] == r.json()["id"]
    assert trail(api) == [
        ("prepayment", f"meters.{kind}", "M2", 201),
        ("prepayment", f"meters.{kind}", "M2", 200),
    ]


def test_a_reconnect_under_the_disconnect_s_key_is_409(api: ApiService) -> None:
    with api.operator() as http:
        assert http.post("/api/meters/M1/disconnect", headers={"Idempotency-Key": "k1"}).is_success
        r = http.post("/api/meters/M1/reconnect", headers={"Idempotency-Key": "k1"})
    assert r.status_code == 409
    assert [j.kind for j in jobs.list_jobs(api.db)] == ["disconnect"]


def test_read_now_with_a_profile_range(api: ApiService) -> None:
    profile = {"from": "2026-03-10T08:00:00+08:00", "to": "2026-03-10T12:00:00Z"}
    with api.operator() as http:
        plain = http.post("/api/meters/M3/read")
        ranged = http.post("/api/meters/M3/read", json={"registers": False, "profile": profile})
        backwards = http.post(
            "/api/meters/M3/read",
            json={"profile": {"from": "2026-03-10T12:00Z", "to": "2026-03-10T11:00Z"}},
        )
        naive = http.post(
            "/api/meters/M3/read", json={"profile": {"from": "2026-03-10T12:00", "to": "x"}}
        )
    assert (plain.status_code, plain.json()["kind"], plain.json()["params"]) == (201, "read", {})
    assert ranged.json()["params"] == {
        "registers": False,
        "profile": {"from": "2026-03-10T00:00:00+00:00", "to": "2026-03-10T12:00:00+00:00"},
    }
    assert (backwards.status_code, backwards.json()["field"]) == (400, "body.profile.to")
    assert (naive.status_code, naive.json()["field"]) == (400, "body.profile.from")


@pytest.mark.parametrize("path", ["disconnect", "reconnect", "clock-sync", "read"])
def test_a_command_to_an_unknown_meter_is_404(api: ApiService, path: str) -> None:
    with api.operator() as http:
        r = http.post(f"/api/meters/NOPE/{path}")
    assert r.status_code == 404
    assert (r.json()["field"], "'NOPE'" in r.json()["message"]) == ("path.meter_id", True)
    assert jobs.list_jobs(api.db) == []
    assert trail(api)[-1][2:] == ("NOPE", 404)


@pytest.mark.parametrize("path", ["disconnect", "reconnect", "clock-sync", "read"])
def test_a_reader_is_refused_a_command_and_it_is_audited(api: ApiService, path: str) -> None:
    with api.reader() as http:
        r = http.post(f"/api/meters/M1/{path}", headers={"Idempotency-Key": "x"})
    assert r.status_code == 403
    assert "'operator'" in r.json()["message"]
    assert jobs.list_jobs(api.db) == []
    (entry,) = access.audit_entries(api.db)
    assert (entry.actor, entry.target, entry.status) == ("billing-reader", "M1", 403)
    assert entry.action.startswith("meters.")


def test_a_reader_is_refused_before_the_body_is_judged(api: ApiService) -> None:
    r = submit(api, {"kind": "teleport"}, token=api.reader_token)
    assert r.status_code == 403
    assert trail(api) == [("billing-reader", "jobs.submit", None, 403)]
