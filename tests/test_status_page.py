"""The web status page: ``/api/status`` over real HTTP, and the page in headless chromium.

The browser test drives Debian's chromium with playwright against the served page, then
changes the database and the telemetry behind it and waits for the page to show the change
without a reload (a marker set in the page's window must survive).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import ApiService, _service_missing
from http_service import running_app

from app.api import create_app
from app.api.kpi import KpiCache
from app.api.routes import ROUTERS
from app.api.status import sessions_by_link
from app.report import collection_day, judged_on
from collector.telemetry import LiveSession
from storage import jobs
from storage.operations import PUSH_LOG, CommandRecord, record_command
from storage.records import Attempt, Event, IntervalRead, MeterRecord

CHROMIUM = Path("/usr/bin/chromium")


def add_meter(service: ApiService, mid: str, area: str, link: str | None = None) -> None:
    service.db.upsert_meters(
        [MeterRecord(mid, "tcp", "h", 4059, None, None, 1, 16, "none", link or mid, area)]
    )


def store_day(service: ApiService, mid: str) -> None:
    """A whole collection day of ``mid`` and its one ok session."""
    plan = service.ctx.plan
    day = collection_day(plan)
    channels, period_s = judged_on(plan)
    start = datetime.combine(day, datetime.min.time(), UTC)
    q = timedelta(seconds=period_s)
    service.db.insert_interval_reads(
        IntervalRead(mid, ch, start + k * q, k, 0, 0) for ch in channels for k in range(96)
    )
    attempt(service, mid, "ok")


def attempt(service: ApiService, mid: str, outcome: str, error: str | None = None) -> None:
    day = collection_day(service.ctx.plan)
    at = datetime.now(UTC)
    cls = "timeout" if error else None
    service.db.record_attempts(
        [Attempt(mid, f"run-{mid}-{at:%H%M%S%f}", day, at, at, outcome, cls, error)]
    )


def alarm(service: ApiService, mid: str, at: datetime, code: int, name: str) -> None:
    service.db.insert_events([Event(mid, PUSH_LOG, at, code, name)])


@pytest.fixture
def fleet(api_service: ApiService) -> ApiService:
    """A1 complete on its first session, B1 failed (no answer), C1 never tried."""
    add_meter(api_service, "A1", "north", "bus-1")
    add_meter(api_service, "B1", "south")
    add_meter(api_service, "C1", "south")
    store_day(api_service, "A1")
    attempt(api_service, "B1", "failed", "no answer from B1")
    now = datetime.now(UTC)
    alarm(api_service, "B1", now - timedelta(minutes=5), 40, "terminal cover opened")
    record_command(
        api_service.db,
        CommandRecord("A1", "disconnect", "prepayment", now, now, "ok", output_state=False),
    )
    return api_service


# -- /api/status ------------------------------------------------------------------------------


def test_status_json(fleet: ApiService) -> None:
    fleet.ctx.live = lambda: {"schedules": {"daily": "2024-03-11T00:05:00+00:00"}, "busy": 2}
    session = fleet.ctx.telemetry.session_started("bus-1", "A1", "read", shared_line=True)
    jobs.submit(fleet.db, jobs.JobRequest("reconnect", meters=["A1"], requested_by="prepayment"))
    jobs.submit(fleet.db, jobs.JobRequest("collect", {"day": "2024-03-10"}, requested_by="x"))
    with fleet.client() as http:  # public by default: no token
        r = http.get("/api/status")
    assert r.status_code == 200, r.text
    s = r.json()
    day = s["collection_day"]
    assert day["day"] == collection_day(fleet.ctx.plan).isoformat()
    assert (day["expected"], day["complete"], day["failed"], day["not_collected"]) == (3, 1, 1, 1)
    assert day["success_rate"] == pytest.approx(1 / 3)
    assert day["first_pass_rate"] == pytest.approx(1 / 3)
    assert len(s["history"]) == 14 and s["history"][-1]["day"] == day["day"]
    assert s["history"][-1]["success_rate"] == day["success_rate"]
    assert s["history"][0]["not_collected"] == 3  # 13 days earlier nothing was read
    assert [a["area"] for a in s["areas"]] == ["south", "north"]  # worst first
    failing = {m["meter_id"]: m for m in s["failing_meters"]}
    assert failing["B1"]["last_error"] == "no answer from B1"
    assert failing["C1"]["last_outcome"] == "not_collected"
    assert s["failing_total"] == 2
    assert s["in_flight"]["total"] == 1
    assert s["in_flight"]["by_link"][0]["link_id"] == "bus-1"
    assert s["live"] == {"schedules": {"daily": "2024-03-11T00:05:00+00:00"}, "busy": 2}
    assert s["queue"] == {"depth": {"reconnect": 1, "collect": 1}, "total": 2}
    assert s["nodes"] == {"cluster": False, "items": []}  # one process, no cluster
    assert [a["name"] for a in s["alarms"]] == ["terminal cover opened"]
    assert s["commands"][0]["command"] == "disconnect"
    assert s["commands"][0]["output_state"] is False
    assert [j["kind"] for j in s["command_jobs"]] == ["reconnect"]  # command kinds only
    assert s["service"]["uptime_s"] >= 0 and s["service"]["timezone"] == "UTC"
    fleet.ctx.telemetry.session_ended(session, "ok")


def test_status_lists_are_bounded(api_service: ApiService) -> None:
    t0 = datetime(2024, 3, 10, tzinfo=UTC)
    api_service.db.insert_events(
        Event("M1", PUSH_LOG, t0 + timedelta(seconds=i), i, f"alarm {i}") for i in range(30)
    )
    for i in range(25):
        jobs.submit(
            api_service.db, jobs.JobRequest("disconnect", meters=[f"M{i}"], requested_by="t")
        )
    with api_service.client() as http:
        s = http.get("/api/status").json()
    assert [a["code"] for a in s["alarms"]] == list(range(29, 9, -1))  # newest 20
    assert len(s["command_jobs"]) == 20
    assert s["command_jobs"][0]["meters"] == ["M24"]  # newest first


def test_sessions_in_flight_grouped_and_bounded() -> None:
    t0 = datetime(2024, 3, 10, tzinfo=UTC)
    sessions = [
        LiveSession("bus-1", f"B{i}", "collect", t0 + timedelta(seconds=i)) for i in range(3)
    ]
    sessions += [
        LiveSession(f"G{i}", f"G{i}", "read", t0 + timedelta(seconds=10 + i)) for i in range(5)
    ]
    out = sessions_by_link(sessions, t0 + timedelta(seconds=20), limit=4)
    assert (out["total"], out["links"], out["listed"]) == (8, 6, 4)
    assert out["by_link"][0] == {
        "link_id": "bus-1",
        "sessions": 3,
        "listed": [
            {
                "meter_id": f"B{i}",
                "job": "collect",
                "started": (t0 + timedelta(seconds=i)).isoformat(),
                "age_s": 20.0 - i,
            }
            for i in range(3)
        ],
    }
    assert [g["link_id"] for g in out["by_link"]] == ["bus-1", "G0"]  # the oldest 4 only


def test_status_needs_a_reader_token_unless_public(fleet: ApiService) -> None:
    fleet.ctx.public_status = False
    with fleet.client() as http:
        assert http.get("/api/status").status_code == 401
        page = http.get("/")  # the page itself holds no data: it asks for a token
        assert page.status_code == 200 and 'id="auth"' in page.text
    with fleet.reader() as http:
        assert http.get("/api/status").status_code == 200


def test_the_page_and_its_files_are_served(api_service: ApiService) -> None:
    with api_service.client() as http:
        page = http.get("/")
        js = http.get("/static/status.js")
        css = http.get("/static/status.css")
        missing = http.get("/static/secrets.txt")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/static/status.js"' in page.text
    assert "http" not in page.text.replace("http-equiv", "")  # nothing from elsewhere
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert 'fetch("/api/status"' in js.text
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"


# -- the page in a real browser ---------------------------------------------------------------


@dataclass
class Browser:
    page: Any
    url: str


@pytest.fixture
def browser_on(fleet: ApiService) -> Iterator[Browser]:
    """Headless chromium on the page of ``fleet``'s context, served with a cache that keeps
    nothing (so a change to the database shows at the next poll) and polled twice a second."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        _service_missing(f"playwright is not installed: {exc}")
    if not CHROMIUM.exists():
        _service_missing(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    app = create_app(fleet.ctx, ROUTERS)
    app.state.kpi = KpiCache(ttl_s=0.0, history_ttl_s=0.0)
    with running_app(app) as url, sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        try:
            page = chromium.new_page()
            page.set_default_timeout(15_000)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            yield Browser(page, url)
            assert errors == [], errors
        finally:
            chromium.close()


def cell_texts(page: Any, table: str) -> list[list[str]]:
    return page.eval_on_selector_all(
        f"#{table} tbody tr",
        "rows => rows.map(r => Array.from(r.cells).map(c => c.textContent))",
    )


def test_the_page_shows_the_kpi_and_follows_the_database_without_reload(
    fleet: ApiService, browser_on: Browser
) -> None:
    fleet.ctx.live = lambda: {
        "schedules": [{"name": "default/profile", "last_tick": None, "next_tick": "00:05"}],
        "links_busy": 1,
    }
    page = browser_on.page
    page.goto(f"{browser_on.url}/?every=0.5")
    page.wait_for_function("document.getElementById('final-rate').textContent === '33.333 %'")
    assert page.text_content("#first-pass-rate") == "33.333 %"
    live = dict((row[0], row[1]) for row in cell_texts(page, "live"))
    assert live == {
        "schedules": "name default/profile, last tick -, next tick 00:05",
        "links busy": "1",
    }
    assert page.text_content("#count-not-collected") == "1"
    page.wait_for_selector("#failing td:text-is('B1')")
    failing = {row[0]: row for row in cell_texts(page, "failing")}
    assert failing["B1"][5] == "timeout: no answer from B1"
    assert failing["C1"][4] == "not collected"
    assert [row[0] for row in cell_texts(page, "areas")] == ["south", "north"]
    history = cell_texts(page, "history")
    assert len(history) == 14 and history[0][0] == collection_day(fleet.ctx.plan).isoformat()
    assert "terminal cover opened" in page.text_content("#alarms")
    assert "disconnected" in page.text_content("#commands")
    page.evaluate("window.hesMarker = 42")
    polls = int(page.get_attribute("#refreshed", "data-polls") or 0)

    # a new alarm, a session in flight, a command job, and C1 read in full
    alarm(fleet, "C1", datetime.now(UTC), 43, "magnetic tamper")
    session = fleet.ctx.telemetry.session_started("bus-9", "C1", "read", shared_line=True)
    jobs.submit(fleet.db, jobs.JobRequest("reconnect", meters=["A1"], requested_by="prepayment"))
    page.wait_for_selector("#alarms td:text-is('magnetic tamper')")
    page.wait_for_selector("#in-flight td:text-is('bus-9')")
    page.wait_for_selector("#command-jobs td:text-is('reconnect')")
    assert "C1 (read" in page.text_content("#in-flight")
    store_day(fleet, "C1")
    fleet.ctx.telemetry.session_ended(session, "ok")
    page.wait_for_function("document.getElementById('final-rate').textContent === '66.667 %'")
    page.wait_for_function("!document.getElementById('in-flight').textContent.includes('bus-9')")
    assert [row[0] for row in cell_texts(page, "failing")] == ["B1"]
    assert page.evaluate("window.hesMarker") == 42  # the same document: no reload
    assert int(page.get_attribute("#refreshed", "data-polls") or 0) > polls
    assert page.text_content("#refreshed").startswith("live, updated")


def test_the_page_asks_for_a_token_when_the_status_is_not_public(
    fleet: ApiService, browser_on: Browser
) -> None:
    fleet.ctx.public_status = False
    page = browser_on.page
    page.goto(f"{browser_on.url}/?every=0.5")
    page.wait_for_selector("#auth", state="visible")
    assert page.is_hidden("#content")
    page.fill("#token", "hes_wrong")
    page.click("#auth button")
    page.wait_for_function(
        "document.getElementById('auth-message').textContent.includes('unknown or revoked')"
    )
    page.fill("#token", fleet.reader_token)
    page.click("#auth button")
    page.wait_for_selector("#content", state="visible")
    page.wait_for_function("document.getElementById('final-rate').textContent === '33.333 %'")
    assert page.is_hidden("#auth")
