"""The file formats of ``hes export``: CSV and Parquet, written batch by batch.

Each writer takes the batches of :func:`storage.export.interval_columns` one at a time and
keeps nothing of a batch once written, so memory stays that of one batch however long the
range. The columns and what they mean are documented in ``docs/export.md`` (the read schema);
the two formats carry the same values: CSV the exact decimal, Parquet the raw integer and
scaler (exact) beside the value as a float64.
"""

from __future__ import annotations

import contextlib
import csv
import queue
import threading
from datetime import datetime, tzinfo
from typing import IO, TYPE_CHECKING, Any, Protocol

from protocols.cosem import scaled_text, unit_text
from storage.export import ExportColumns

# NumPy (like pyarrow) is imported when an export runs, not with every command of the CLI.
if TYPE_CHECKING:
    import numpy.typing as npt

    from storage.interval_arrays import Int64s

FORMATS = ("csv", "parquet")
CSV_COLUMNS = ("meter_id", "channel", "ts", "value", "unit", "status")
#: Version of the read schema (docs/export.md), stored in every Parquet file's metadata.
SCHEMA_VERSION = "1"


class BatchWriter(Protocol):
    """Where the batches of an export go."""

    def write(self, batch: ExportColumns) -> None:
        """Write one batch (in order)."""
        ...

    def close(self) -> None:
        """Finish the file (the Parquet footer); the writer is unusable afterwards."""
        ...


class CsvWriter:
    """Header row, then one line per value: ISO 8601 timestamps in ``zone``, exact decimals."""

    def __init__(self, out: IO[str], zone: tzinfo) -> None:
        self._out = out
        self._csv = csv.writer(out, lineterminator="\n")
        self._csv.writerow(CSV_COLUMNS)
        self._zone = zone
        # Every meter has the same stamps (96 a day) and a handful of units and scalers:
        # each text is made once.
        self._stamps: dict[datetime, str] = {}
        self._units: dict[int | None, str] = {}

    def _stamp(self, ts: datetime) -> str:
        text = self._stamps.get(ts)
        if text is None:
            if len(self._stamps) >= 100_000:
                self._stamps.clear()
            text = self._stamps[ts] = ts.astimezone(self._zone).isoformat()
        return text

    def _unit(self, code: int | None) -> str:
        text = self._units.get(code)
        if text is None:
            text = self._units[code] = unit_text(code) or ""
        return text

    def write(self, batch: ExportColumns) -> None:
        rows = batch.rows()
        stamp = self._stamp
        unit = self._unit
        self._csv.writerows(
            (
                m,
                c,
                stamp(ts),
                scaled_text(v, s),
                unit(u),
                "" if st is None else st,
            )
            for m, c, ts, v, s, st, u in rows
        )

    def close(self) -> None:
        self._out.flush()


def parquet_schema(zone_name: str, metadata: dict[str, str]) -> Any:
    """The Arrow schema of an export (a ``pyarrow.Schema``), with the read schema's metadata."""
    import pyarrow as pa

    text = pa.dictionary(pa.int32(), pa.string())
    return pa.schema(
        [
            pa.field("meter_id", text, nullable=False),
            pa.field("channel", text, nullable=False),
            pa.field("ts", pa.timestamp("ms", tz=zone_name), nullable=False),
            pa.field("value", pa.float64()),
            pa.field("raw", pa.int64()),
            pa.field("scaler", pa.int8(), nullable=False),
            pa.field("unit", pa.string()),
            pa.field("status", pa.int32()),
        ],
        metadata={"hes.read_schema": SCHEMA_VERSION, **metadata},
    )


class _UnitNames(dict[int, str]):
    """Unit code → symbol, an unknown code named as :func:`protocols.cosem.unit_text` does."""

    def __missing__(self, code: int) -> str:
        name = self[code] = unit_text(code) or ""
        return name


#: Columns Parquet dictionary-encodes: few distinct values a row group. ``value`` and ``raw``
#: are not (nearly every value differs: trying a dictionary first costs time and space):
#: ``raw``, a cumulative register in meter, channel and time order, is delta-coded, ``value``
#: plain (BYTE_STREAM_SPLIT would make the file smaller still, but readers downstream such
#: as Spark and Trino read it only recently or not at all).
_DICTIONARY = ["meter_id", "channel", "ts", "scaler", "unit", "status"]
_ENCODING = {"raw": "DELTA_BINARY_PACKED"}


def _millis(micros: Int64s) -> Int64s:
    """Epoch microseconds to milliseconds, truncated toward zero (as Arrow's unsafe cast)."""

    out = micros // 1000
    if len(micros) and micros.min() < 0:
        out += (micros < 0) & (micros % 1000 != 0)
    return out


def _scaled(raw: Int64s, scaler: Int64s) -> npt.NDArray[Any]:
    """``raw * 10**scaler`` as float64: the raw value as the nearest double, times (or, for a
    negative scaler, divided by) the power of ten ``10.0 ** abs(scaler)``."""
    import numpy as np

    floats = raw.astype(np.float64)
    first = int(scaler[0]) if len(scaler) else 0
    distinct = [first] if (scaler == first).all() else np.unique(scaler).tolist()
    for s in distinct:
        power = 10.0 ** abs(s)
        if len(distinct) == 1:
            return floats / power if s < 0 else floats * power
        at = scaler == s
        floats[at] = floats[at] / power if s < 0 else floats[at] * power
    return floats


class ParquetWriter:
    """One row group per batch, through ``pyarrow.parquet.ParquetWriter``.

    ``value`` is ``raw * 10**scaler`` as the nearest float64 (a negative scaler divides by an
    exact power of ten, as :meth:`protocols.cosem.ScalerUnit.apply` does); ``raw`` and
    ``scaler`` keep it exact.

    Encoding and compressing a row group is most of an export's time, and pyarrow does it
    without the GIL, so a thread of the writer's own does it while the caller reads and
    decodes the next batch. One built batch waits at most (memory stays that of three
    batches); a failure of the thread is raised by the next :meth:`write` or by :meth:`close`.
    """

    def __init__(self, out: Any, zone_name: str, metadata: dict[str, str]) -> None:
        import pyarrow.parquet as pq

        self._schema = parquet_schema(zone_name, metadata)
        self._writer = pq.ParquetWriter(
            out,
            self._schema,
            compression="zstd",
            use_dictionary=_DICTIONARY,
            column_encoding=_ENCODING,
        )
        self._units = _UnitNames()
        self._ts_type = self._schema.field("ts").type
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, name="hes-export-parquet", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        """The thread: write what comes until None; after a failure only take (so the caller
        never waits on a full queue) and keep the failure for it."""
        while (record := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._writer.write_batch(record)
                except BaseException as exc:  # handed to the caller's thread
                    self._error = exc

    def _runs(self, batch: ExportColumns) -> tuple[Any, Any, Any]:
        """The meter, channel and unit columns from the batch's runs: each distinct label
        once, then a dictionary index (or the unit's bytes) per run, repeated by its length."""
        import numpy as np
        import pyarrow as pa

        runs = batch.runs
        meters: dict[str, int] = {}
        channels: dict[str, int] = {}
        units: dict[int | None, int] = {}
        sizes = [r[3] for r in runs]
        counts = np.array(sizes, np.int64)
        m_idx = np.array([meters.setdefault(r[0], len(meters)) for r in runs], np.int32)
        c_idx = np.array([channels.setdefault(r[1], len(channels)) for r in runs], np.int32)
        u_run = [units.setdefault(r[2], len(units)) for r in runs]
        names = [b"" if u is None else self._units[u].encode() for u in units]
        unit_bytes = b"".join([names[u] * size for u, size in zip(u_run, sizes, strict=True)])
        unit_len = np.array([len(name) for name in names], np.int32)[u_run]
        unit_null = np.array([u is None for u in units], np.bool_)[u_run]
        meter_col = pa.DictionaryArray.from_arrays(
            pa.array(np.repeat(m_idx, counts)), pa.array(list(meters), pa.string())
        )
        channel_col = pa.DictionaryArray.from_arrays(
            pa.array(np.repeat(c_idx, counts)), pa.array(list(channels), pa.string())
        )
        # The unit strings straight from their buffers: offsets and the repeated bytes.
        length = int(counts.sum())
        offsets = np.zeros(length + 1, np.int32)
        np.cumsum(np.repeat(unit_len, counts), out=offsets[1:])
        valid = None
        if unit_null.any():
            valid = pa.py_buffer(np.packbits(~np.repeat(unit_null, counts), bitorder="little"))
        unit_col = pa.StringArray.from_buffers(
            length, pa.py_buffer(offsets), pa.py_buffer(unit_bytes), valid
        )
        return meter_col, channel_col, unit_col

    def write(self, batch: ExportColumns) -> None:
        import pyarrow as pa

        if not len(batch):
            return
        meter_col, channel_col, unit_col = self._runs(batch)
        columns = [
            meter_col,
            channel_col,
            pa.array(_millis(batch.ts_us), self._ts_type),
            pa.array(_scaled(batch.value, batch.scaler), pa.float64(), mask=batch.value_null),
            pa.array(batch.value, pa.int64(), mask=batch.value_null),
            pa.array(batch.scaler, pa.int8()),
            unit_col,
            pa.array(batch.status, pa.int32(), mask=batch.status_null),
        ]
        if self._error is not None:
            raise self._error
        self._queue.put(pa.RecordBatch.from_arrays(columns, schema=self._schema))

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self._error is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
            raise self._error
        self._writer.close()
