"""Group commit of session results (collector/batching.py) on a real SQLite file."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from collector.batching import Batcher
from storage.database import Database, open_database
from storage.errors import StorageError
from storage.records import Attempt, IntervalRead, MeterRecord, SessionWrite

T0 = datetime(2024, 3, 10, tzinfo=UTC)
Q = timedelta(minutes=15)
CH = "1.0.1.8.0.255"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = open_database(tmp_path / "hes.db")
    try:
        yield database
    finally:
        database.close()


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=2)
    try:
        yield pool
    finally:
        pool.shutdown(wait=True)


def write(i: int, rows: int = 8) -> SessionWrite:
    mid = f"M{i:05d}"
    return SessionWrite(
        [],
        [],
        [IntervalRead(mid, CH, T0 + k * Q, i * 100 + k, 0, 0) for k in range(rows)],
        [],
        Attempt(mid, "run", date(2024, 3, 10), T0, T0, "ok"),
    )


async def test_many_sessions_land_in_few_batches_with_their_own_counts(
    db: Database, executor: ThreadPoolExecutor
) -> None:
    writer = Batcher(db.store_sessions, executor, max_batch=20)
    writer.start()
    counts = await asyncio.gather(*(writer.submit(write(i, rows=i % 5)) for i in range(50)))
    await writer.close()
    assert counts == [i % 5 for i in range(50)]
    assert db.count_interval_values() == sum(i % 5 for i in range(50))
    assert db.count_rows("read_attempts") == 50
    assert 3 <= writer.batches < 50
    assert writer.largest_batch <= 20


async def test_a_cancelled_caller_still_gets_its_reads_stored(
    db: Database, executor: ThreadPoolExecutor
) -> None:
    writer = Batcher(db.store_sessions, executor)
    writer.start()
    task = asyncio.create_task(writer.submit(write(1)))
    await asyncio.sleep(0)  # queued
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await writer.close()  # flushes what is queued
    assert db.count_interval_values() == 8
    assert db.count_rows("read_attempts") == 1


async def test_a_failing_batch_fails_each_of_its_callers_and_the_next_batch_runs(
    db: Database, executor: ThreadPoolExecutor
) -> None:
    db.upsert_meters(
        [MeterRecord("M00001", "tcp", "127.0.0.1", 4059, None, None, 1, 16, "none", "l")]
    )
    calls: list[int] = []

    def store(writes: Sequence[SessionWrite]) -> list[int]:
        calls.append(len(writes))
        if len(calls) == 1:
            db.close()
            raise StorageError("writing failed on the test database: disk gone", transient=True)
        return db.store_sessions(writes)

    writer = Batcher(store, executor, max_batch=2)
    writer.start()
    first = [asyncio.create_task(writer.submit(write(i))) for i in (1, 2)]
    results = await asyncio.gather(*first, return_exceptions=True)
    assert all(isinstance(r, StorageError) and "disk gone" in str(r) for r in results)
    assert await writer.submit(write(3)) == 8  # the writer is still running
    await writer.close()
    assert calls == [2, 1]
    assert db.count_interval_values() == 8


async def test_write_before_start_or_after_close_is_an_error(
    db: Database, executor: ThreadPoolExecutor
) -> None:
    writer = Batcher(db.store_sessions, executor)
    with pytest.raises(RuntimeError, match="not running"):
        await writer.submit(write(1))
    writer.start()
    await writer.close()
    with pytest.raises(RuntimeError, match="not running"):
        await writer.submit(write(1))
    with pytest.raises(ValueError, match="max_batch"):
        Batcher(db.store_sessions, executor, max_batch=0)
