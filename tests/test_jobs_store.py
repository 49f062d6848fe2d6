"""storage.jobs and storage.access on SQLite and the real PostgreSQL: idempotent submission,
one winner per claim, recovery after a crash, hashed tokens with roles, the audit trail."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from storage import access, jobs
from storage.database import Database, open_database
from storage.jobs import IdempotencyConflict, JobError, JobRequest

T0 = datetime(2026, 11, 22, 0, 5, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        url = str(tmp_path / "hes.db")
    else:
        url = request.getfixturevalue("pg_url")
    with open_database(url) as database:
        yield database


def test_submit_and_get(db: Database) -> None:
    job, created = jobs.submit(db, JobRequest("read", {"registers": True}, ["M1", "M2"]), T0)
    assert created and job.state == "queued" and job.progress_total == 2
    again = jobs.get(db, job.id)
    assert again == job
    assert again is not None and again.created_at == T0 and again.params == {"registers": True}
    assert jobs.get(db, job.id + 1000) is None


def test_idempotency_key_returns_the_first_job(db: Database) -> None:
    req = JobRequest("disconnect", {}, ["M1"], idempotency_key="bill-42", requested_by="billing")
    first, created = jobs.submit(db, req)
    second, created_again = jobs.submit(db, req)
    assert created and not created_again and second.id == first.id
    assert len(jobs.list_jobs(db)) == 1
    with pytest.raises(IdempotencyConflict) as err:
        jobs.submit(db, JobRequest("reconnect", {}, ["M1"], idempotency_key="bill-42"))
    assert err.value.field == "idempotency_key" and str(first.id) in str(err.value)


def test_a_schedule_tick_is_one_job(db: Database) -> None:
    req = JobRequest(
        "collect",
        {"day": "2026-11-21"},
        origin="schedule",
        schedule="residential/profile",
        tick=T0,
        priority=jobs.SCHEDULED,
    )
    a, made = jobs.submit(db, req)
    b, made_again = jobs.submit(db, req)
    assert made and not made_again and a.id == b.id
    assert jobs.last_tick(db, "residential/profile") == T0
    assert jobs.last_tick(db, "other") is None


def test_bad_requests_name_the_field(db: Database) -> None:
    with pytest.raises(JobError) as err:
        jobs.submit(db, JobRequest("dance"))
    assert err.value.field == "kind"
    with pytest.raises(JobError) as err:
        jobs.submit(db, JobRequest("read", meters=[]))
    assert err.value.field == "meters"
    with pytest.raises(JobError) as err:
        jobs.submit(db, JobRequest("read", {"x": object()}, ["M1"]))
    assert err.value.field == "params"


@pytest.mark.parametrize(
    ("kind", "params", "meters", "field"),
    [
        ("read", {"what": 1}, ["M1"], "params.what"),
        ("read", {"registers": "yes"}, ["M1"], "params.registers"),
        ("read", {}, None, "meters"),
        ("disconnect", {}, None, "meters"),
        ("collect", {}, None, "params.day"),
        ("collect", {"day": "21.11.2026"}, None, "params.day"),
        ("read", {"profile": {"from": "2026-11-21T00:00Z"}}, ["M1"], "params.profile.to"),
        (
            "read",
            {"profile": {"from": "2026-11-21T00:00", "to": "x"}},
            ["M1"],
            "params.profile.from",
        ),
        (
            "read",
            {"profile": {"from": "2026-11-21T01:00Z", "to": "2026-11-21T00:00Z"}},
            ["M1"],
            "params.profile.to",
        ),
        ("read", {"profile": {"from": "a", "to": "b", "step": 1}}, ["M1"], "params.profile.step"),
        ("read", {"clock": True}, ["M1"], "params.clock"),
        ("collect", {"day": "2026-11-21", "until": "noon"}, None, "params.until"),
    ],
)
def test_params_are_checked_per_kind(
    db: Database, kind: str, params: dict[str, object], meters: list[str] | None, field: str
) -> None:
    with pytest.raises(JobError) as err:
        jobs.submit(db, JobRequest(kind, params, meters))
    assert err.value.field == field


def test_claim_order_priority_then_age_and_not_before(db: Database) -> None:
    bg, _ = jobs.submit(
        db, JobRequest("collect", {"day": "2026-11-21"}, origin="schedule", priority=jobs.SCHEDULED)
    )
    later, _ = jobs.submit(
        db, JobRequest("read", meters=["M1"], not_before=T0 + timedelta(hours=1))
    )
    urgent, _ = jobs.submit(db, JobRequest("disconnect", meters=["M2"]))
    assert jobs.next_start(db) == T0 + timedelta(hours=1)
    first = jobs.claim_next(db, T0)
    assert first is not None and first.id == urgent.id and first.state == "running"
    assert first.attempts == 1 and first.started_at == T0
    second = jobs.claim_next(db, T0)
    assert second is not None and second.id == bg.id
    assert jobs.claim_next(db, T0) is None  # `later` is not due
    third = jobs.claim_next(db, T0 + timedelta(hours=2))
    assert third is not None and third.id == later.id
    assert jobs.queue_depth(db) == {}


def test_concurrent_claims_never_share_a_job(db: Database) -> None:
    for _ in range(40):
        jobs.submit(db, JobRequest("read", meters=["M1"]))
    won: list[int] = []
    lock = threading.Lock()

    def claimer() -> None:
        while (job := jobs.claim_next(db)) is not None:
            with lock:
                won.append(job.id)

    threads = [threading.Thread(target=claimer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(won) == sorted(set(won)) and len(won) == 40


def test_cancel_finish_and_recover(db: Database) -> None:
    queued, _ = jobs.submit(db, JobRequest("read", meters=["M1"]))
    running, _ = jobs.submit(db, JobRequest("read", meters=["M2"]))
    cancelled = jobs.cancel(db, queued.id)
    assert cancelled is not None and cancelled.state == "cancelled"
    claimed = jobs.claim_next(db)
    assert claimed is not None and claimed.id == running.id
    asked = jobs.cancel(db, running.id)
    assert asked is not None and asked.state == "running" and asked.cancel_requested
    assert jobs.cancel_requested(db, running.id)
    assert jobs.recover(db) == [running.id]  # the process died: back to the queue
    again = jobs.claim_next(db)
    assert again is not None and again.id == running.id and again.attempts == 2
    jobs.progress(db, running.id, 1, 1)
    done = jobs.finish(db, running.id, "done", result={"ok": 1})
    assert done.final and done.result == {"ok": 1} and done.progress_done == 1
    assert jobs.cancel(db, running.id).state == "done"  # type: ignore[union-attr]
    assert jobs.cancel(db, 999_999) is None
    with pytest.raises(ValueError):
        jobs.finish(db, running.id, "running")
    assert [j.id for j in jobs.list_jobs(db, state="cancelled")] == [queued.id]
    assert [j.id for j in jobs.list_jobs(db, kind="read", limit=1)] == [running.id]


def test_tokens_are_hashed_and_carry_a_role(db: Database) -> None:
    secret = access.create_token(db, "billing", "operator")
    reader = access.create_token(db, "ops-dash", "reader")
    stored = db.execute_read(access.api_tokens.select())
    assert all(secret not in str(row) for row in stored)
    token = access.authenticate(db, secret)
    assert token is not None and token.name == "billing" and token.may("operator")
    ro = access.authenticate(db, reader)
    assert ro is not None and ro.may("reader") and not ro.may("operator")
    assert access.authenticate(db, secret + "x") is None
    assert access.authenticate(db, "not-a-token") is None
    with pytest.raises(access.TokenError):
        access.create_token(db, "billing", "reader")
    with pytest.raises(access.TokenError):
        access.create_token(db, "bad name", "reader")
    with pytest.raises(access.TokenError):
        access.create_token(db, "x", "admin")
    access.revoke_token(db, "billing")
    assert access.authenticate(db, secret) is None
    with pytest.raises(access.TokenError):
        access.revoke_token(db, "billing")
    access.create_token(db, "billing", "reader")  # the name is free again
    assert {t.name.split("~")[0] for t in access.tokens(db)} == {"billing", "ops-dash"}


def test_audit_trail(db: Database) -> None:
    access.audit(db, "billing", "job.submit", target="disconnect M1", status=201, detail={"id": 1})
    access.audit(db, "ops", "meter.disable", target="M2", status=404, error="no meter M2")
    entries = access.audit_entries(db)
    assert [e.action for e in entries] == ["meter.disable", "job.submit"]
    assert entries[1].detail == {"id": 1} and entries[0].error == "no meter M2"
    assert [e.actor for e in access.audit_entries(db, actor="billing")] == ["billing"]
    assert entries[0].as_dict()["at"].endswith("+00:00")
