"""The file formats of ``hes export``: CSV and Parquet, written batch by batch.

Each writer takes the batches of :func:`storage.export.interval_columns` one at a time and
keeps nothing of a batch once written, so memory stays that of one batch however long the
range. The columns and what they mean are documented in ``docs/export.md`` (the read schema);
the two formats carry the same values: CSV the exact decimal, Parquet the raw integer and
scaler (exact) beside the value as a float64.
"""

from __future__ import annotations

import csv
from datetime import datetime, tzinfo
from typing import IO, Any, Protocol

from protocols.cosem import scaled_text, unit_text
from storage.export import ExportColumns

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
#: are not (nearly every value differs: trying a dictionary first costs time and space), and
#: ``raw``, a cumulative register in meter, channel and time order, is delta-coded.
_DICTIONARY = ["meter_id", "channel", "ts", "scaler", "unit", "status"]
_ENCODING = {"raw": "DELTA_BINARY_PACKED"}


class ParquetWriter:
    """One row group per batch, through ``pyarrow.parquet.ParquetWriter``.

    ``value`` is ``raw * 10**scaler`` as the nearest float64 (a negative scaler divides by an
    exact power of ten, as :meth:`protocols.cosem.ScalerUnit.apply` does); ``raw`` and
    ``scaler`` keep it exact.
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

    def _runs(self, batch: ExportColumns) -> tuple[Any, Any, Any]:
        """The meter, channel and unit columns from the batch's runs: each distinct label
        once, then a dictionary index per run, repeated by the run's length."""
        import numpy as np
        import pyarrow as pa

        meters: dict[str, int] = {}
        channels: dict[str, int] = {}
        units: dict[int | None, int] = {}
        n = len(batch.runs)
        m_idx = np.empty(n, np.int32)
        c_idx = np.empty(n, np.int32)
        u_idx = np.empty(n, np.int32)
        counts = np.empty(n, np.int64)
        for i, (meter, channel, unit, count) in enumerate(batch.runs):
            m_idx[i] = meters.setdefault(meter, len(meters))
            c_idx[i] = channels.setdefault(channel, len(channels))
            u_idx[i] = units.setdefault(unit, len(units))
            counts[i] = count
        names = [None if u is None else self._units[u] for u in units]
        meter_col = pa.DictionaryArray.from_arrays(
            pa.array(np.repeat(m_idx, counts)), pa.array(list(meters), pa.string())
        )
        channel_col = pa.DictionaryArray.from_arrays(
            pa.array(np.repeat(c_idx, counts)), pa.array(list(channels), pa.string())
        )
        unit_col = pa.array(names, pa.string()).take(pa.array(np.repeat(u_idx, counts)))
        return meter_col, channel_col, unit_col

    def write(self, batch: ExportColumns) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        if not len(batch):
            return
        raws = pa.array(batch.value, pa.int64(), mask=batch.value_null)
        scalers = pa.array(batch.scaler, pa.int8())
        floats = raws.cast(pa.float64())
        powers = pc.power(10.0, pc.abs(scalers.cast(pa.float64())))
        value = pc.if_else(
            pc.less(scalers, 0), pc.divide(floats, powers), pc.multiply(floats, powers)
        )
        ts_type = self._schema.field("ts").type
        micros = pa.array(batch.ts_us, pa.timestamp("us", tz=ts_type.tz))
        meter_col, channel_col, unit_col = self._runs(batch)
        columns = [
            meter_col,
            channel_col,
            micros.cast(ts_type, safe=False),
            value,
            raws,
            scalers,
            unit_col,
            pa.array(batch.status, pa.int32(), mask=batch.status_null),
        ]
        self._writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=self._schema))

    def close(self) -> None:
        self._writer.close()
