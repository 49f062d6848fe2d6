"""``/metrics`` over real HTTP, parsed with prometheus-client's own parser.

The service's telemetry is driven the way the collection code drives it (sessions started
and ended), jobs are submitted to the durable queue, a collection day is stored, and each
scrape must show exactly that.
"""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, date, datetime, timedelta

import pytest
from conftest import ApiService
from http_service import running_app
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from app.api import create_app
from app.api.kpi import KpiCache
from app.api.routes import ROUTERS
from app.report import collection_day, judged_on
from collector.telemetry import Telemetry
from storage import jobs
from storage.records import IntervalRead, MeterRecord

#: What issue 12 asks /metrics to show, by family name.
FAMILIES = {
    "hes_sessions_in_flight": "gauge",
    "hes_sessions": "counter",  # by outcome and error class
    "hes_round_trips": "counter",
    "hes_link_bytes": "counter",
    "hes_job_queue_depth": "gauge",
    "hes_schedule_lag_seconds": "gauge",
    "hes_link_busy_seconds": "counter",
    "hes_collection_success_ratio": "gauge",
    "hes_mqtt_spool_depth": "gauge",
}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def scrape(service: ApiService, token: str | None = None) -> dict[str, list[Sample]]:
    with service.client(token) as http:
        r = http.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = text_string_to_metric_families(r.text)
    out = {}
    for f in families:
        assert f.name not in out
        out[f.name] = f.samples
        if f.name in FAMILIES:
            assert f.type == FAMILIES[f.name], f.name
    return out


def value(samples: list[Sample], name: str, **labels: str) -> float:
    found = [s.value for s in samples if s.name == name and s.labels == labels]
    assert len(found) == 1, (name, labels, samples)
    return found[0]


def test_the_families_issue_12_names_are_there(api_service: ApiService) -> None:
    got = scrape(api_service)
    assert set(FAMILIES) <= set(got)


def test_sessions_round_trips_bytes_and_link_busy_time(api_service: ApiService) -> None:
    clock = FakeClock()
    telemetry = Telemetry(clock=clock)
    api_service.ctx.telemetry = telemetry
    bus = telemetry.session_started("bus-7", "M1", "collect", shared_line=True)
    gprs = telemetry.session_started("M2", "M2", "collect", shared_line=False)
    open_one = telemetry.session_started("M3", "M3", "read", shared_line=False)
    got = scrape(api_service)
    assert value(got["hes_sessions_in_flight"], "hes_sessions_in_flight") == 3
    clock.now += 2.5
    telemetry.session_ended(bus, "failed", "timeout", round_trips=4, bytes_tx=100, bytes_rx=1000)
    clock.now += 1.0
    telemetry.session_ended(gprs, "ok", round_trips=6, bytes_tx=50, bytes_rx=500)
    got = scrape(api_service)
    assert value(got["hes_sessions_in_flight"], "hes_sessions_in_flight") == 1
    sessions = got["hes_sessions"]
    assert value(sessions, "hes_sessions_total", outcome="failed", error_class="timeout") == 1
    assert value(sessions, "hes_sessions_total", outcome="ok", error_class="") == 1
    assert value(got["hes_round_trips"], "hes_round_trips_total") == 10
    assert value(got["hes_link_bytes"], "hes_link_bytes_total", direction="tx") == 150
    assert value(got["hes_link_bytes"], "hes_link_bytes_total", direction="rx") == 1500
    busy = got["hes_link_busy_seconds"]
    assert value(busy, "hes_link_busy_seconds_total", link="bus-7") == 2.5
    assert value(busy, "hes_link_busy_seconds_total", link="gprs") == 3.5  # summed, not per meter
    telemetry.session_ended(open_one, "ok")
    assert value(scrape(api_service)["hes_sessions_in_flight"], "hes_sessions_in_flight") == 0


def test_queue_depth_is_counted_on_scrape(api_service: ApiService) -> None:
    db = api_service.db
    read = jobs.JobRequest("read", meters=["M1"], requested_by="t")
    first, _ = jobs.submit(db, read)
    jobs.submit(db, jobs.JobRequest("read", meters=["M2"], requested_by="t"))
    jobs.submit(db, jobs.JobRequest("collect", {"day": "2024-03-10"}, requested_by="t"))
    depth = scrape(api_service)["hes_job_queue_depth"]
    assert value(depth, "hes_job_queue_depth", kind="read") == 2
    assert value(depth, "hes_job_queue_depth", kind="collect") == 1
    jobs.cancel(db, first.id)
    claimed = jobs.claim_next(db, kinds=["collect"])
    assert claimed is not None
    depth = scrape(api_service)["hes_job_queue_depth"]
    assert value(depth, "hes_job_queue_depth", kind="read") == 1
    assert value(depth, "hes_job_queue_depth", kind="collect") == 0  # gone to 0, not stale


def store_day(service: ApiService, meter_id: str) -> date:
    """A whole collection day of ``meter_id`` on the plan's channels; returns the day."""
    plan = service.ctx.plan
    day = collection_day(plan)
    channels, period_s = judged_on(plan)
    start = datetime.combine(day, datetime.min.time(), UTC)
    q = timedelta(seconds=period_s)
    service.db.insert_interval_reads(
        IntervalRead(meter_id, ch, start + k * q, k, 0, 0) for ch in channels for k in range(96)
    )
    return day


def add_meters(service: ApiService, *ids: str) -> None:
    service.db.upsert_meters(
        [MeterRecord(m, "tcp", "h", 4059, None, None, 1, 16, "none", m) for m in ids]
    )


def ratio_of(got: dict[str, list[Sample]]) -> float:
    return value(got["hes_collection_success_ratio"], "hes_collection_success_ratio")


def test_success_ratio_of_the_collection_day_is_cached(api_service: ApiService) -> None:
    add_meters(api_service, "A", "B")
    day = store_day(api_service, "A")
    assert ratio_of(scrape(api_service)) == 0.5
    store_day(api_service, "B")
    if collection_day(api_service.ctx.plan) == day:  # not across midnight meanwhile
        # the app's cache holds the figure for 30 s: at most one daily report per 30 s
        assert ratio_of(scrape(api_service)) == 0.5


def test_success_ratio_follows_the_data(api_service: ApiService) -> None:
    """The same context served with a cache that keeps nothing: each scrape is a report."""
    assert math.isnan(ratio_of(scrape(api_service)))  # no meter expected: no data, not 0
    app = create_app(api_service.ctx, ROUTERS)
    app.state.kpi = KpiCache(ttl_s=0.0)
    with running_app(app) as url:
        fresh = ApiService(url, api_service.ctx, api_service.db, "", "")
        add_meters(api_service, "A", "B", "C", "D")
        assert ratio_of(scrape(fresh)) == 0.0
        store_day(api_service, "A")
        assert ratio_of(scrape(fresh)) == 0.25
        store_day(api_service, "B")
        store_day(api_service, "C")
        assert ratio_of(scrape(fresh)) == 0.75


def test_metrics_need_a_reader_token_unless_the_status_is_public(api_service: ApiService) -> None:
    api_service.ctx.public_status = False
    with api_service.client() as http:
        r = http.get("/metrics")
    assert r.status_code == 401 and r.json()["error"] == "unauthenticated"
    with api_service.client("hes_wrong") as http:
        assert http.get("/metrics").status_code == 401
    assert "hes_sessions_in_flight" in scrape(api_service, api_service.reader_token)


async def test_kpi_cache_computes_once_per_ttl() -> None:
    clock = FakeClock()
    cache = KpiCache(ttl_s=30.0, history_ttl_s=300.0, clock=clock)
    calls = 0

    async def compute() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        return calls

    results = await asyncio.gather(*(cache._get("k", 30.0, compute) for _ in range(5)))
    assert calls == 1 and {r.value for r in results} == {1}  # the others waited for it
    clock.now += 29.0
    assert (await cache._get("k", 30.0, compute)).value == 1
    clock.now += 1.0
    assert (await cache._get("k", 30.0, compute)).value == 2

    # a failure is not cached
    async def boom() -> int:
        raise RuntimeError("down")

    clock.now += 31.0
    with pytest.raises(RuntimeError):
        await cache._get("k", 30.0, boom)
    assert (await cache._get("k", 30.0, compute)).value == 3


def test_openmetrics_when_the_scraper_asks_for_it(api_service: ApiService) -> None:
    from prometheus_client.openmetrics.parser import (
        text_string_to_metric_families as openmetrics_families,
    )

    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    with api_service.client() as http:
        r = http.get("/metrics", headers={"Accept": accept})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    assert r.text.endswith("# EOF\n")
    names = {f.name for f in openmetrics_families(r.text)}
    assert set(FAMILIES) <= names
