"""One meter's load-profile entries as columns: what a collection session hands to storage.

Why columns: a session reads a meter's day as ~100 entries of a few channels, and storage packs
each channel's values into one day row (:mod:`storage.interval_batch`). Built as one
:class:`~storage.records.IntervalRead` tuple per value, the reads were made by the collector
only to be transposed back into columns by storage: the per-value tuples were a tenth of the
collector's time and the cold first pass over them a quarter of the store's. Here the session
appends its entries as a stamps column, one value column per channel and a status column, and
storage takes the columns as they are. The object is still a ``Sequence[IntervalRead]`` (entry
by entry, each entry's channels in order, as the tuples were), for the consumers that want
rows: the merge of a partial day, the MQTT payload, tests.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import overload

from storage.records import IntervalRead


class IntervalColumns(Sequence[IntervalRead]):
    """The entries of one meter's channels (one scaler each), appended a range at a time."""

    __slots__ = ("channels", "meter_id", "scalers", "stamps", "statuses", "values")

    def __init__(self, meter_id: str, channels: Sequence[str], scalers: Sequence[int]) -> None:
        if len(channels) != len(scalers):
            raise ValueError(f"{len(channels)} channels but {len(scalers)} scalers")
        self.meter_id = meter_id
        self.channels = tuple(channels)
        self.scalers = tuple(scalers)
        self.stamps: list[datetime] = []
        #: one list per channel, aligned with ``stamps`` (None: the meter sent no integer)
        self.values: tuple[list[int | None], ...] = tuple([] for _ in self.channels)
        #: the entries' status column, aligned with ``stamps`` (None: none)
        self.statuses: list[int | None] = []

    def extend(
        self,
        stamps: Sequence[datetime],
        values: Sequence[Sequence[int | None]],
        statuses: Sequence[int | None],
    ) -> None:
        """Append entries: their stamps, one value column per channel, their statuses."""
        n = len(stamps)
        if len(values) != len(self.channels) or len(statuses) != n:
            raise ValueError("columns of different lengths or channel count")
        for column, more in zip(self.values, values, strict=True):
            if len(more) != n:
                raise ValueError("value column of a different length than the stamps")
            column.extend(more)
        self.stamps.extend(stamps)
        self.statuses.extend(statuses)

    def channel(self, j: int) -> IntervalColumns:
        """The entries of channel ``j`` alone (sharing this object's columns)."""
        one = IntervalColumns(self.meter_id, (self.channels[j],), (self.scalers[j],))
        one.stamps = self.stamps
        one.values = (self.values[j],)
        one.statuses = self.statuses
        return one

    def __len__(self) -> int:
        return len(self.stamps) * len(self.channels)

    @overload
    def __getitem__(self, index: int) -> IntervalRead: ...

    @overload
    def __getitem__(self, index: slice) -> list[IntervalRead]: ...

    def __getitem__(self, index: int | slice) -> IntervalRead | list[IntervalRead]:
        if isinstance(index, slice):
            return list(self)[index]
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError("IntervalColumns index out of range")
        entry, j = divmod(index, len(self.channels))
        return IntervalRead(
            self.meter_id,
            self.channels[j],
            self.stamps[entry],
            self.values[j][entry],
            self.scalers[j],
            self.statuses[entry],
        )

    def __iter__(self) -> Iterator[IntervalRead]:
        meter, specs = self.meter_id, list(zip(self.channels, self.scalers, strict=True))
        new_tuple = tuple.__new__
        for ts, status, *values in zip(self.stamps, self.statuses, *self.values, strict=True):
            for (name, scaler), value in zip(specs, values, strict=True):
                yield new_tuple(IntervalRead, (meter, name, ts, value, scaler, status))

    def __repr__(self) -> str:
        return (
            f"IntervalColumns({self.meter_id!r}, {list(self.channels)!r}, "
            f"{len(self.stamps)} entries)"
        )
