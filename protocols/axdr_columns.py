"""An A-XDR array of flat structures of one shape, decoded straight into columns.

Why: a load-profile buffer (Blue Book, profile generic attribute 2) is an array of ~100
structures of the same few fixed-size cells (an octet-string clock, a status, counters), and
its reader wants it by column (the stamps, each channel's values). :mod:`protocols.axdr`
decodes it a row at a time (one ``unpack`` per row, then the rows transposed again); here the
whole array is one NumPy record view, every tag and length octet of every row is checked
against the first row's in one comparison, and each column comes out with one ``tolist``. A
value of any other shape gives None, and the general decoder takes it: the columns are always
those of :func:`protocols.axdr.decode` (hypothesis compares the two).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import numpy.typing as npt

from protocols import axdr
from protocols.errors import DecodeError

#: NumPy type of each struct format character of :mod:`protocols.axdr`'s plain cells (a
#: boolean as its octet: any non-zero octet is True, as ``struct``'s ``?`` reads it).
_NUMPY_TYPE = {"b": "i1", "B": "u1", "?": "u1", "h": ">i2", "H": ">u2", "i": ">i4", "I": ">u4",
               "q": ">i8", "Q": ">u8", "f": ">f4", "d": ">f8"}  # fmt: skip


Record = tuple[np.dtype[Any], "npt.NDArray[np.intp]", "npt.NDArray[np.uint8]", tuple[int, ...]]


@functools.lru_cache(maxsize=256)
def _record(header: tuple[int, ...]) -> Record | None:
    """For a row shape (the tag and length octets of :func:`axdr._row_layout`): the record
    type of its cells, the offsets and values of its tag and length octets, and the booleans'
    cell indexes; None for a shape with an empty octet-string (no cell to view)."""
    n = header[1]
    names, formats, offsets = [], [], []
    check_at, check = [0, 1], [axdr.STRUCTURE, n]
    booleans = []
    pos, k = 2, 2
    for cell in range(n):
        tag = header[k]
        check_at.append(pos)
        check.append(tag)
        names.append(f"c{cell}")
        if tag == axdr.OCTET_STRING:
            length = header[k + 1]
            if not length:
                return None
            check_at.append(pos + 1)
            check.append(length)
            formats.append(f"V{length}")
            offsets.append(pos + 2)
            pos += 2 + length
            k += 2
        else:
            char = axdr._PLAIN_STRUCTS[tag].format[-1]
            formats.append(_NUMPY_TYPE[char])
            offsets.append(pos + 1)
            if tag == axdr.BOOLEAN:
                booleans.append(cell)
            pos += 1 + axdr._PLAIN_STRUCTS[tag].size
            k += 1
    dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": pos})
    return (dtype, np.array(check_at, dtype=np.intp), np.array(check, dtype=np.uint8),
            tuple(booleans))  # fmt: skip


def decode_columns(data: bytes, offset: int = 0) -> tuple[list[tuple[Any, ...]], int] | None:
    """The array at ``offset`` as its columns (one tuple per structure cell, each with as many
    values as the array has elements) and the offset after it; None unless the value there is
    an array of two or more structures of one flat shape (the general decoder takes it then)."""
    end = len(data)
    if offset >= end or data[offset] != axdr.ARRAY:
        return None
    try:
        count, pos = axdr.read_length(data, offset + 1)
    except DecodeError:
        return None
    if count < 2 or pos >= end:
        return None
    layout = axdr._row_layout(data, pos, end)
    if layout is None:
        return None
    size = layout.size
    stop = pos + count * size
    if stop > end:
        return None
    record = _record(layout.header)
    if record is None:
        return None
    dtype, check_at, check, booleans = record
    octets = np.frombuffer(data, dtype=np.uint8, count=count * size, offset=pos)
    if not (octets.reshape(count, size)[:, check_at] == check).all():
        return None
    rows = octets.view(dtype)
    columns: list[tuple[Any, ...]] = []
    for cell, name in enumerate(dtype.names or ()):
        values = rows[name]
        if cell in booleans:
            values = values != 0
        columns.append(tuple(values.tolist()))
    return columns, stop
