"""A real HTTP server for API tests: uvicorn on a free loopback port, in a thread of its own.

:func:`open_api_service` (conftest's ``api_service`` fixture) builds a
:class:`~app.api.ServiceContext` over a fresh SQLite database (the built-in plan, a job
queue, telemetry), makes one reader and one operator token, and serves
:func:`app.api.create_app` with every router of :data:`app.api.routes.ROUTERS`; tests talk
to it with httpx as any client would.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI

from app.api import ServiceContext, create_app
from app.api.routes import ROUTERS
from collector.job_queue import JobQueue
from collector.plan import load_plan
from collector.telemetry import Telemetry
from storage import access
from storage.database import Database, open_database


@contextmanager
def running_app(app: FastAPI, timeout_s: float = 10.0) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 (a free port); yields the base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test HTTP server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout_s)


@dataclass
class ApiService:
    """A served API with its context and two tokens."""

    url: str
    ctx: ServiceContext
    db: Database
    reader_token: str
    operator_token: str

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10.0)

    def reader(self) -> httpx.Client:
        return self.client(self.reader_token)

    def operator(self) -> httpx.Client:
        return self.client(self.operator_token)


@contextmanager
def open_api_service(tmp_path: Path) -> Iterator[ApiService]:
    """A served API over a fresh database in ``tmp_path``, closed on exit."""
    db = open_database(tmp_path / "hes.db")
    ctx = ServiceContext(db=db, plan=load_plan(), queue=JobQueue(db), telemetry=Telemetry())
    reader = access.create_token(db, "billing-reader", "reader")
    operator = access.create_token(db, "prepayment", "operator")
    try:
        with running_app(create_app(ctx, ROUTERS)) as url:
            yield ApiService(url, ctx, db, reader, operator)
    finally:
        ctx.executor.shutdown(wait=True)
        db.close()
