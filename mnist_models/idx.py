"""Strict reading of IDX files (the MNIST container format) and of their gzip wrappers."""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np

# The largest MNIST-like file (train images) is 47,040,016 bytes uncompressed; a gzip that inflates past
# this is not one of ours, or is a decompression bomb (200 MB of zeros gzip to 200 KB).
MAX_UNCOMPRESSED_BYTES = 64 * 2**20
CHUNK_BYTES = 2**20

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
           0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def iter_gunzip(stream: BinaryIO, name: str = "file", max_bytes: int = MAX_UNCOMPRESSED_BYTES) -> Iterator[bytes]:
    """Inflate a gzip stream chunk by chunk; ValueError if it is cut short, not gzip, or inflates past `max_bytes`."""
    inflated = 0
    try:
        with gzip.GzipFile(fileobj=stream, mode="rb") as unzipped:
            while chunk := unzipped.read(CHUNK_BYTES):
                inflated += len(chunk)
                if inflated > max_bytes:
                    raise ValueError(
                        f"{name} inflates to more than {max_bytes:,} bytes; expected an IDX file below that limit "
                        "(the largest MNIST-like file is 47 MB): this is not one, or a decompression bomb"
                    )
                yield chunk
    except (EOFError, OSError, zlib.error) as error:
        raise ValueError(
            f"{name} is not a complete gzip file ({error}); expected a .gz IDX file, "
            "the download may have been cut short"
        ) from error


def gunzip(data: bytes, name: str = "file", max_bytes: int = MAX_UNCOMPRESSED_BYTES) -> bytes:
    """Decompress gzip bytes, raising ValueError when they are truncated, not gzip, or inflate past `max_bytes`."""
    return b"".join(iter_gunzip(io.BytesIO(data), name, max_bytes))


def parse_idx(data: bytes, name: str = "IDX data") -> np.ndarray:
    """Parse uncompressed IDX bytes into an array, checking magic number, dimensions and length."""
    if len(data) < 4:
        raise ValueError(f"{name} is {len(data)} bytes long; an IDX file has at least a 4-byte header")
    zero_high, zero_low, type_code, ndim = data[0], data[1], data[2], data[3]
    if zero_high or zero_low or type_code not in _DTYPES or ndim == 0:
        raise ValueError(
            f"{name} has magic number 0x{data[:4].hex()}; expected an IDX magic number "
            "0x0000TTNN (TT = data type 08..0E, NN = number of dimensions), e.g. 0x00000803 for images"
        )
    header_length = 4 + 4 * ndim
    if len(data) < header_length:
        raise ValueError(f"{name} ends inside its header: {len(data)} bytes, header needs {header_length}")
    shape = tuple(int(size) for size in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_DTYPES[type_code])
    expected_length = header_length + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected_length:
        raise ValueError(
            f"{name} is {len(data):,} bytes but its header declares shape {shape} "
            f"({expected_length:,} bytes); the file is truncated or corrupt"
        )
    return np.frombuffer(data, dtype=dtype, offset=header_length).reshape(shape)
