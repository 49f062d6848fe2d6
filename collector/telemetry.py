"""What the running service tells about itself: Prometheus metrics and the live sessions.

One :class:`Telemetry` per service, with a registry of its own (not prometheus-client's
global one, so two services in one test process do not share counters). The collection
code reports each session's start and end here; the service sets the gauges it owns
(queue depth, schedule lag, today's success rate, the MQTT spool) from its own loop;
``/metrics`` renders :attr:`Telemetry.registry` and the status page reads
:meth:`Telemetry.in_flight`.

Per-link busy time is labelled by link for shared lines (RS-485 buses and terminal-server
ports: a few thousand at most) and summed under ``link="gprs"`` for meters that are their
own link, so a 200,000-meter fleet does not make 200,000 time series.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

GPRS_LINK = "gprs"


@dataclass(frozen=True, slots=True)
class LiveSession:
    """A session in flight, for the status page."""

    link_id: str
    meter_id: str
    job: str
    started: datetime


class Telemetry:
    """The service's metrics and its sessions in flight."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.sessions_in_flight = Gauge(
            "hes_sessions_in_flight", "Meter sessions open now", registry=r
        )
        self.sessions = Counter(
            "hes_sessions",
            "Meter sessions ended, by outcome (ok, partial, failed) and error class",
            ["outcome", "error_class"],
            registry=r,
        )
        self.round_trips = Counter(
            "hes_round_trips", "Request/response exchanges with meters", registry=r
        )
        self.bytes = Counter(
            "hes_link_bytes", "Bytes exchanged with meters", ["direction"], registry=r
        )
        self.session_seconds = Histogram(
            "hes_session_duration_seconds",
            "Length of meter sessions",
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
            registry=r,
        )
        self.link_busy = Counter(
            "hes_link_busy_seconds",
            f"Time links spent in a session (meters that are their own link: link={GPRS_LINK!r})",
            ["link"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "hes_job_queue_depth", "Jobs queued, by kind", ["kind"], registry=r
        )
        self.jobs = Counter(
            "hes_jobs", "Jobs ended, by kind and state", ["kind", "state"], registry=r
        )
        self.schedule_lag = Gauge(
            "hes_schedule_lag_seconds",
            "How late the last run of each schedule started after its tick",
            ["schedule"],
            registry=r,
        )
        self.success_ratio = Gauge(
            "hes_collection_success_ratio",
            "Share of expected meters complete for the current collection day (0-1)",
            registry=r,
        )
        self.mqtt_spool = Gauge(
            "hes_mqtt_spool_depth", "Messages spooled for MQTT, not yet acknowledged", registry=r
        )
        self.alarms = Counter("hes_push_alarms", "Push alarms received and stored", registry=r)
        self._live: dict[int, tuple[LiveSession, float, bool]] = {}
        self._ids = itertools.count(1)
        self._known_kinds: set[str] = set()

    # -- sessions -------------------------------------------------------------------------

    def session_started(self, link_id: str, meter_id: str, job: str, shared_line: bool) -> int:
        """Returns the handle that :meth:`session_ended` takes."""
        handle = next(self._ids)
        live = LiveSession(link_id, meter_id, job, datetime.now(UTC))
        self._live[handle] = (live, self._clock(), shared_line)
        self.sessions_in_flight.inc()
        return handle

    def session_ended(
        self,
        handle: int,
        outcome: str,
        error_class: str | None = None,
        *,
        round_trips: int = 0,
        bytes_tx: int = 0,
        bytes_rx: int = 0,
    ) -> None:
        entry = self._live.pop(handle, None)
        if entry is None:
            return
        live, started, shared = entry
        elapsed = max(0.0, self._clock() - started)
        self.sessions_in_flight.dec()
        self.sessions.labels(outcome, error_class or "").inc()
        self.round_trips.inc(round_trips)
        self.bytes.labels("tx").inc(bytes_tx)
        self.bytes.labels("rx").inc(bytes_rx)
        self.session_seconds.observe(elapsed)
        self.link_busy.labels(live.link_id if shared else GPRS_LINK).inc(elapsed)

    def in_flight(self) -> list[LiveSession]:
        """Sessions open now, oldest first."""
        return sorted((e[0] for e in self._live.values()), key=lambda s: s.started)

    # -- gauges the service sets ----------------------------------------------------------

    def set_queue_depth(self, depth: Mapping[str, int]) -> None:
        """Kinds seen before and absent now go to 0 rather than keep their last value."""
        self._known_kinds |= set(depth)
        for kind in self._known_kinds:
            self.queue_depth.labels(kind).set(depth.get(kind, 0))
