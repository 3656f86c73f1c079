"""Unit tests for mnist_models.idx: strict IDX parsing and gzip unwrapping (with its size cap) on hand-built bytes."""

from __future__ import annotations

import gzip
import io
import struct
import zlib

import numpy as np
import pytest

from mnist_models.idx import MAX_UNCOMPRESSED_BYTES, gunzip, iter_gunzip, parse_idx


def _idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """Hand-build an IDX file: two zero bytes, type code, ndim, big-endian sizes, then the data."""
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


@pytest.fixture
def images() -> np.ndarray:
    return np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4) * 10


@pytest.fixture
def labels() -> np.ndarray:
    return np.array([7, 2, 1, 0, 4], dtype=np.uint8)


# --------------------------------------------------------------------------- good files


def test_parse_images_gives_declared_shape_and_pixels(images):
    data = _idx_bytes(images)
    assert data[:4] == b"\x00\x00\x08\x03"

    parsed = parse_idx(data)

    assert parsed.dtype == np.uint8
    assert parsed.shape == (2, 3, 4)
    np.testing.assert_array_equal(parsed, images)


def test_parse_labels_gives_one_dimensional_vector(labels):
    parsed = parse_idx(_idx_bytes(labels))

    assert parsed.shape == (5,)
    assert parsed.tolist() == [7, 2, 1, 0, 4]


def test_parse_big_endian_int32_data():
    values = np.array([[1, -2], [70000, -70000]], dtype=">i4")

    parsed = parse_idx(_idx_bytes(values, type_code=0x0C))

    assert parsed.tolist() == [[1, -2], [70000, -70000]]


def test_gzip_round_trip_then_parse(images):
    compressed = gzip.compress(_idx_bytes(images))

    np.testing.assert_array_equal(parse_idx(gunzip(compressed)), images)


# --------------------------------------------------------------------------- bad files


def test_truncated_data_is_rejected_with_sizes(images):
    data = _idx_bytes(images)[:-1]  # one pixel short

    with pytest.raises(ValueError, match=r"train-images .* 39 bytes .*shape \(2, 3, 4\).*truncated"):
        parse_idx(data, name="train-images")


def test_trailing_bytes_are_rejected(labels):
    with pytest.raises(ValueError, match="truncated or corrupt"):
        parse_idx(_idx_bytes(labels) + b"\x00")


@pytest.mark.parametrize(
    "magic",
    [b"\x08\x03\x00\x00",  # little-endian magic read the wrong way round
     b"\x00\x00\x07\x03",  # unknown data type
     b"\x00\x00\x08\x00",  # zero dimensions
     b"\x1f\x8b\x08\x00"],  # still gzip-compressed
)
def test_wrong_magic_number_is_rejected(magic, images):
    data = magic + _idx_bytes(images)[4:]

    with pytest.raises(ValueError, match=f"labels.bin has magic number 0x{magic.hex()}; expected an IDX magic"):
        parse_idx(data, name="labels.bin")


def test_header_only_file_is_rejected(images):
    header_only = _idx_bytes(images)[:16]  # magic + three sizes, no pixels

    with pytest.raises(ValueError, match=r"16 bytes but its header declares shape \(2, 3, 4\)"):
        parse_idx(header_only)


def test_file_ending_inside_header_is_rejected(images):
    with pytest.raises(ValueError, match="ends inside its header: 10 bytes, header needs 16"):
        parse_idx(_idx_bytes(images)[:10])


@pytest.mark.parametrize("length", [0, 3])
def test_file_shorter_than_magic_is_rejected(length):
    with pytest.raises(ValueError, match=f"is {length} bytes long; an IDX file has at least a 4-byte header"):
        parse_idx(b"\x00" * length)


def test_truncated_gzip_is_rejected_with_clear_message(images):
    compressed = gzip.compress(_idx_bytes(images))

    with pytest.raises(ValueError, match="t10k.gz is not a complete gzip file .*cut short"):
        gunzip(compressed[: len(compressed) // 2], name="t10k.gz")


def test_non_gzip_bytes_are_rejected(images):
    with pytest.raises(ValueError, match="not a complete gzip file"):
        gunzip(_idx_bytes(images))


def test_gzip_with_corrupt_checksum_is_rejected(images):
    compressed = bytearray(gzip.compress(_idx_bytes(images)))
    compressed[-8] ^= 0xFF  # the CRC-32 of the trailer

    with pytest.raises(ValueError, match="not a complete gzip file"):
        gunzip(bytes(compressed))


def _gzipped_zeros(size: int) -> bytes:
    """`size` zero bytes gzipped without holding them whole: what a decompression bomb is made of."""
    compressor, zeros, parts = zlib.compressobj(9, zlib.DEFLATED, 31), bytes(2**20), []
    for start in range(0, size, len(zeros)):
        parts.append(compressor.compress(zeros[: min(len(zeros), size - start)]))
    return b"".join(parts) + compressor.flush()


def test_a_gzip_that_inflates_past_the_cap_is_rejected_naming_file_and_cap():
    bomb = _gzipped_zeros(MAX_UNCOMPRESSED_BYTES + 1)
    assert len(bomb) < MAX_UNCOMPRESSED_BYTES // 500

    with pytest.raises(ValueError) as caught:
        gunzip(bomb, name="train-images-idx3-ubyte.gz")
    assert str(caught.value).startswith(
        f"train-images-idx3-ubyte.gz inflates to more than {MAX_UNCOMPRESSED_BYTES:,} bytes; expected an IDX file "
        "below that limit")


def test_a_gzip_exactly_at_the_cap_is_accepted():
    assert gunzip(_gzipped_zeros(5000), max_bytes=5000) == bytes(5000)
    with pytest.raises(ValueError, match="bomb.gz inflates to more than 4,999 bytes"):
        gunzip(_gzipped_zeros(5000), name="bomb.gz", max_bytes=4999)


def test_inflating_as_a_stream_gives_the_content_in_bounded_chunks(images):
    content = _idx_bytes(np.tile(images, (50_000, 1, 1)))  # 1.2 MB: more than one chunk
    chunks = list(iter_gunzip(io.BytesIO(gzip.compress(content)), name="t10k.gz"))

    assert b"".join(chunks) == content
    assert len(chunks) > 1 and max(map(len, chunks)) <= 2**20
