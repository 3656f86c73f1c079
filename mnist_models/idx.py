"""Strict reading of IDX files (the MNIST container format) and of their gzip wrappers."""

from __future__ import annotations

import gzip
import zlib

import numpy as np

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
           0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def gunzip(data: bytes, name: str = "file") -> bytes:
    """Decompress gzip bytes, raising ValueError when they are truncated or not gzip at all."""
    try:
        return gzip.decompress(data)
    except (EOFError, OSError, zlib.error) as error:
        raise ValueError(
            f"{name} is not a complete gzip file ({error}); expected a .gz IDX file, "
            "the download may have been cut short"
        ) from error


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
