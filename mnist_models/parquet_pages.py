"""Read a Parquet column of fixed-size float lists straight from its data pages into one NumPy array.

Arrow decodes a list column by expanding one repetition and one definition level per value (47
million of each for MNIST's training pixels), which costs several times the copy of the values
themselves. In a file written as `data.write_split_parquet` writes it (uncompressed, PLAIN-encoded,
no nulls) every data page ends with its values as raw little-endian float32, so they can be read into
place with one `readinto` per page. Each page is checked before its values are taken: header parsed
(Thrift compact protocol), PLAIN encoding, no nulls (the definition levels are one run at the maximum
level, or the v2 header counts no nulls), and the page's size equal to its level sections plus exactly
its values. Anything else (compression, dictionary pages, nulls, another type) returns None, and the
caller reads the file through Arrow instead.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

_PAGE_HEADER_PROBE = 256  # bytes read to parse one page header (ours take about 20)
_DATA_PAGE, _DICTIONARY_PAGE, _DATA_PAGE_V2 = 0, 2, 3
_PLAIN, _RLE = 0, 3


class _Unreadable(Exception):
    """The page is not one this reader takes values from directly."""


def read_float_lists(path: str | os.PathLike[str], column: str, size: int) -> np.ndarray | None:
    """The values of `column` (a fixed_size_list<float32>[size]) as a (rows, size) array, or None when the
    file is laid out in a way this reader does not take (then read it with Arrow)."""
    path = Path(path)
    parquet = pq.ParquetFile(path)
    field = parquet.schema_arrow.field(column)
    if not (pa.types.is_fixed_size_list(field.type) and field.type.list_size == size
            and field.type.value_type == pa.float32()):
        return None
    leaf = [index for index in range(parquet.metadata.num_columns)
            if parquet.schema.column(index).path.split(".")[0] == column]
    if len(leaf) != 1:
        return None
    leaf_schema = parquet.schema.column(leaf[0])
    levels = (leaf_schema.max_repetition_level, leaf_schema.max_definition_level)
    rows = parquet.metadata.num_rows
    values = np.empty(rows * size, dtype=np.float32)
    filled = 0
    try:
        with open(path, "rb", buffering=0) as file:
            for group in range(parquet.metadata.num_row_groups):
                chunk = parquet.metadata.row_group(group).column(leaf[0])
                if (chunk.compression != "UNCOMPRESSED" or chunk.physical_type != "FLOAT"
                        or chunk.dictionary_page_offset is not None):
                    return None
                filled = _read_chunk(file, chunk.data_page_offset, chunk.total_compressed_size, chunk.num_values,
                                     levels, values, filled)
    except (_Unreadable, OSError, struct.error, IndexError):
        return None
    return values.reshape(rows, size) if filled == values.size else None


def _read_chunk(file, offset: int, length: int, expected: int, levels: tuple[int, int], values: np.ndarray,
                filled: int) -> int:
    """Copy one column chunk's values into `values` from index `filled`; return the new fill count."""
    end, seen = offset + length, 0
    target = memoryview(values).cast("B")
    while offset < end:
        header = os.pread(file.fileno(), _PAGE_HEADER_PROBE, offset)
        page, header_length = _parse_page_header(header)
        data = offset + header_length
        if page["type"] not in (_DATA_PAGE, _DATA_PAGE_V2):
            raise _Unreadable(f"page type {page['type']}")
        count = page["num_values"]
        values_start = _values_start(file, page, data, count, levels)
        if data + page["compressed_page_size"] - values_start != 4 * count or filled + count > values.size:
            raise _Unreadable("page size is not its levels plus exactly its values")
        file.seek(values_start)
        if file.readinto(target[4 * filled: 4 * (filled + count)]) != 4 * count:
            raise _Unreadable("short read")
        filled, seen, offset = filled + count, seen + count, data + page["compressed_page_size"]
    if seen != expected:
        raise _Unreadable(f"{seen} values in pages, {expected} in the chunk's metadata")
    return filled


def _values_start(file, page: dict, data: int, count: int, levels: tuple[int, int]) -> int:
    """Where the page's PLAIN values begin, after checking that it holds no nulls."""
    max_repetition, max_definition = levels
    if page["type"] == _DATA_PAGE_V2:
        if (page["encoding"] != _PLAIN or page.get("num_nulls") != 0
                or page["uncompressed_page_size"] != page["compressed_page_size"]):
            raise _Unreadable("v2 page not plain, with nulls or compressed")
        return data + page["repetition_levels_byte_length"] + page["definition_levels_byte_length"]
    if page["encoding"] != _PLAIN or page["uncompressed_page_size"] != page["compressed_page_size"]:
        raise _Unreadable("page not plain or compressed")
    position = data
    if max_repetition > 0:
        (length,) = struct.unpack("<I", os.pread(file.fileno(), 4, position))
        position += 4 + length
    if max_definition > 0:
        (length,) = struct.unpack("<I", os.pread(file.fileno(), 4, position))
        _check_all_at(os.pread(file.fileno(), length, position + 4), max_definition, count)
        position += 4 + length
    return position


def _check_all_at(encoded: bytes, level: int, count: int) -> None:
    """Raise unless the RLE/bit-packed hybrid `encoded` holds exactly `count` levels, all equal to `level`."""
    width = (level.bit_length() + 7) // 8
    position, total = 0, 0
    while position < len(encoded):
        header, position = _varint(encoded, position)
        if header & 1:
            raise _Unreadable("bit-packed definition levels (some value is not at the maximum level)")
        if int.from_bytes(encoded[position:position + width], "little") != level:
            raise _Unreadable("a run of definition levels below the maximum: nulls")
        total, position = total + (header >> 1), position + width
    if total != count:
        raise _Unreadable(f"{total} definition levels for {count} values")


# --------------------------------------------------------------------------- Thrift compact protocol

_PAGE_HEADER_FIELDS = {1: "type", 2: "uncompressed_page_size", 3: "compressed_page_size", 4: "crc"}
_DATA_PAGE_FIELDS = {1: "num_values", 2: "encoding", 3: "definition_level_encoding", 4: "repetition_level_encoding"}
_DATA_PAGE_V2_FIELDS = {1: "num_values", 2: "num_nulls", 3: "num_rows", 4: "encoding",
                        5: "definition_levels_byte_length", 6: "repetition_levels_byte_length", 7: "is_compressed"}


def _parse_page_header(buffer: bytes) -> tuple[dict, int]:
    """A PageHeader's integer fields (and its data page header's), and the header's length in bytes."""
    page: dict = {}

    def data_page(names: dict[int, str]):
        def field(number: int, kind: int, position: int) -> int:
            if number in names and kind == 5:
                page[names[number]], position = _zigzag(buffer, position)
                return position
            if number in names and kind in (1, 2):  # a boolean, held in the field header
                page[names[number]] = kind == 1
                return position
            return _skip(buffer, position, kind)
        return field

    def header_field(number: int, kind: int, position: int) -> int:
        if number in _PAGE_HEADER_FIELDS and kind == 5:
            page[_PAGE_HEADER_FIELDS[number]], position = _zigzag(buffer, position)
            return position
        if number in (5, 8) and kind == 12:
            return _walk_struct(buffer, position, data_page(_DATA_PAGE_FIELDS if number == 5 else _DATA_PAGE_V2_FIELDS))
        return _skip(buffer, position, kind)

    length = _walk_struct(buffer, 0, header_field)
    if not {"type", "compressed_page_size", "uncompressed_page_size", "num_values", "encoding"} <= set(page):
        raise _Unreadable("page header not understood")
    return page, length


def _walk_struct(buffer: bytes, position: int, field) -> int:
    """Call `field(number, type, position)` for each field of the struct at `position` (it returns the position
    after the field's value); return the position after the struct's stop byte."""
    number = 0
    while True:
        byte = buffer[position]
        position += 1
        if byte == 0:
            return position
        delta, kind = byte >> 4, byte & 0x0F
        if delta:
            number += delta
        else:
            number, position = _zigzag(buffer, position)
        position = field(number, kind, position)


def _skip(buffer: bytes, position: int, kind: int) -> int:
    """Position after a value of compact type `kind`."""
    if kind in (1, 2):  # a struct field's boolean lives in its field header
        return position
    if kind == 3:
        return position + 1
    if kind in (4, 5, 6):
        return _varint(buffer, position)[1]
    if kind == 7:
        return position + 8
    if kind == 8:
        length, position = _varint(buffer, position)
        return position + length
    if kind in (9, 10):
        size, element = buffer[position] >> 4, buffer[position] & 0x0F
        position += 1
        if size == 15:
            size, position = _varint(buffer, position)
        for _ in range(size):
            position = position + 1 if element in (1, 2) else _skip(buffer, position, element)
        return position
    if kind == 12:
        return _walk_struct(buffer, position, lambda number, inner, at: _skip(buffer, at, inner))
    raise _Unreadable(f"compact type {kind}")


def _varint(buffer: bytes, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buffer[position]
        result |= (byte & 0x7F) << shift
        position += 1
        if not byte & 0x80:
            return result, position
        shift += 7


def _zigzag(buffer: bytes, position: int) -> tuple[int, int]:
    value, position = _varint(buffer, position)
    return (value >> 1) ^ -(value & 1), position
