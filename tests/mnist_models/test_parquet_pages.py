"""The page reader returns Arrow's pixel values bit for bit, or declines a layout it does not read."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mnist_models import data as data_lib
from mnist_models.parquet_pages import read_float_lists


def arrow_pixels(path) -> np.ndarray:
    """The reference: Arrow's decoding of the pixel column."""
    column = pq.read_table(path, columns=["pixels"]).column("pixels").combine_chunks()
    return column.flatten().to_numpy().reshape(len(column), data_lib.IMAGE_SIZE)


@pytest.fixture(scope="module")
def table(small_splits):
    return pq.read_table(small_splits["train"])


def test_the_pipeline_layout_is_read_from_its_pages_exactly(small_splits):
    pixels = read_float_lists(small_splits["train"], "pixels", data_lib.IMAGE_SIZE)
    assert pixels is not None and pixels.shape == (2000, 784) and pixels.dtype == np.float32
    np.testing.assert_array_equal(pixels, arrow_pixels(small_splits["train"]))
    split = data_lib.load_split(small_splits["train"])
    np.testing.assert_array_equal(split.images.reshape(2000, 784), pixels)
    assert split.labels.tolist() == pq.read_table(small_splits["train"])["label"].to_pylist()


@pytest.mark.parametrize("options", [
    {"data_page_size": 20_000},  # many pages per column chunk
    {"data_page_version": "2.0"},
    {"write_statistics": True},  # statistics in every page header
    {"row_group_size": 2000},
    {"row_group_size": 7},  # a short last row group
])
def test_other_plain_uncompressed_layouts_are_read_exactly(table, tmp_path, options):
    path = tmp_path / "split.parquet"
    pq.write_table(table, path, **{**data_lib.PARQUET_WRITE_OPTIONS, **options})
    pixels = read_float_lists(path, "pixels", data_lib.IMAGE_SIZE)
    assert pixels is not None
    np.testing.assert_array_equal(pixels, arrow_pixels(path))


@pytest.mark.parametrize("options", [
    {"compression": "zstd"},
    {"compression": "snappy"},
    {"use_dictionary": True},
])
def test_compressed_or_dictionary_layouts_are_declined_and_load_split_still_reads_them(table, small_splits, tmp_path,
                                                                                      options):
    path = tmp_path / "split.parquet"
    pq.write_table(table, path, **{**data_lib.PARQUET_WRITE_OPTIONS, **options})
    assert read_float_lists(path, "pixels", data_lib.IMAGE_SIZE) is None
    np.testing.assert_array_equal(data_lib.load_split(path).images, data_lib.load_split(small_splits["train"]).images)


def test_a_column_with_a_null_image_is_declined(table, tmp_path):
    pixels = table.column("pixels").combine_chunks()
    validity = np.ones(len(pixels), dtype=bool)
    validity[5] = False
    with_null = pa.FixedSizeListArray.from_arrays(pixels.flatten(), type=pixels.type, mask=pa.array(~validity))
    path = tmp_path / "split.parquet"
    pq.write_table(table.set_column(2, "pixels", with_null), path, **data_lib.PARQUET_WRITE_OPTIONS)
    assert read_float_lists(path, "pixels", data_lib.IMAGE_SIZE) is None


def test_a_column_of_another_type_or_size_is_declined(table, tmp_path):
    path = tmp_path / "split.parquet"
    pq.write_table(table, path, **data_lib.PARQUET_WRITE_OPTIONS)
    assert read_float_lists(path, "pixels", 28) is None
    assert read_float_lists(path, "label", data_lib.IMAGE_SIZE) is None
    doubles = table.set_column(2, "pixels", table.column("pixels").cast(pa.list_(pa.float64(), data_lib.IMAGE_SIZE)))
    pq.write_table(doubles, path, **data_lib.PARQUET_WRITE_OPTIONS)
    assert read_float_lists(path, "pixels", data_lib.IMAGE_SIZE) is None
