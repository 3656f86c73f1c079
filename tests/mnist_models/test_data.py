"""Tests for mnist_models.data and mnist_models.tables: normalization, Parquet layout, subsets, facts.

Synthetic arrays for the mechanics; the genuine MNIST files for the facts the shared README states.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mnist_models.data import (
    ROW_GROUP_ROWS,
    Split,
    dataset_facts,
    load_split,
    normalize_images,
    stratified_subset,
    write_split_parquet,
)
from mnist_models.datasets import DATASETS
from mnist_models.idx import gunzip, parse_idx
from mnist_models.tables import to_markdown, write_table

# ../shared/datasets/README.md
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
FIRST_TRAIN_LABELS = [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
FIRST_TEST_LABELS = [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


@pytest.fixture
def raw_images(rng) -> np.ndarray:
    images = rng.integers(0, 256, size=(12, 28, 28), dtype=np.uint8)
    images[0] = 0
    images[1] = 255
    return images


@pytest.fixture(scope="module")
def mnist(mnist_dir) -> dict[str, np.ndarray]:
    """The four genuine arrays, parsed with mnist_models.idx."""
    return {
        name: parse_idx(gunzip((mnist_dir / name).read_bytes(), name), name)
        for name in DATASETS["mnist"].filenames
    }


# --------------------------------------------------------------------------- normalization


def test_normalize_gives_float32_in_unit_range(raw_images):
    normalized = normalize_images(raw_images)

    assert normalized.dtype == np.float32
    assert normalized.shape == raw_images.shape
    assert normalized.min() == 0.0 and normalized.max() == 1.0
    np.testing.assert_allclose(normalized, raw_images / 255.0, rtol=1e-6)
    assert raw_images.dtype == np.uint8  # the input is left as it was


@pytest.mark.parametrize(
    "bad",
    [np.zeros((2, 28, 28), dtype=np.float32),  # already normalized
     np.zeros((2, 28, 28, 1), dtype=np.uint8),  # channel axis
     np.zeros((28, 28), dtype=np.uint8)],  # one image without the batch axis
)
def test_normalize_rejects_anything_but_uint8_stacks(bad):
    with pytest.raises(ValueError, match=r"expected uint8 images of shape \(n, rows, columns\)"):
        normalize_images(bad)


# --------------------------------------------------------------------------- Parquet


def test_parquet_schema_is_label_source_index_pixels(tmp_path, raw_images):
    labels = np.arange(12) % 10
    path = write_split_parquet(raw_images, labels, tmp_path / "train.parquet")

    schema = pq.read_schema(path)
    assert schema.names == ["label", "source_index", "pixels"]
    assert schema.field("label").type == pa.uint8()
    assert schema.field("source_index").type == pa.int32()
    pixels = schema.field("pixels").type
    assert pa.types.is_fixed_size_list(pixels)
    assert pixels.list_size == 784
    assert pixels.value_type == pa.float32()
    assert pq.read_metadata(path).num_rows == 12


def test_load_split_round_trip(tmp_path, raw_images):
    labels = np.array([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8])
    write_split_parquet(raw_images, labels, tmp_path / "test.parquet")

    split = load_split(tmp_path / "test.parquet")

    assert split.images.shape == (12, 28, 28, 1)
    assert split.images.dtype == np.float32
    assert len(split) == 12
    np.testing.assert_array_equal(split.images[..., 0], normalize_images(raw_images))
    np.testing.assert_array_equal(split.labels, labels)
    np.testing.assert_array_equal(split.source_index, np.arange(12))


def _old_layout_table(raw_images: np.ndarray, labels: np.ndarray) -> pa.Table:
    """The columns as the first write_split_parquet built them: every field nullable, item named 'item'."""
    pixels = normalize_images(raw_images).reshape(len(raw_images), 784)
    return pa.table({
        "label": pa.array(labels.astype(np.uint8)),
        "source_index": pa.array(np.arange(len(labels), dtype=np.int32)),
        "pixels": pa.FixedSizeListArray.from_arrays(pa.array(pixels.ravel()), 784),
    })


@pytest.fixture
def real_slice(mnist) -> tuple[np.ndarray, np.ndarray]:
    """2,500 genuine test images: two full row groups and a partial one."""
    return mnist["t10k-images-idx3-ubyte.gz"][:2500], mnist["t10k-labels-idx1-ubyte.gz"][:2500]


def test_layout_round_trips_exactly_through_plain_pages(tmp_path, real_slice):
    raw, labels = real_slice
    path = write_split_parquet(raw, labels, tmp_path / "test.parquet")

    table = pq.read_table(path)
    assert table.column_names == ["label", "source_index", "pixels"]
    assert table.schema.field("label").type == pa.uint8()
    assert table.schema.field("source_index").type == pa.int32()
    assert table.schema.field("pixels").type == pa.list_(pa.field("element", pa.float32(), nullable=False), 784)
    np.testing.assert_array_equal(table.column("label").to_numpy(), labels)
    np.testing.assert_array_equal(table.column("source_index").to_numpy(), np.arange(2500))
    stored = np.stack(table.column("pixels").to_numpy(zero_copy_only=False))
    np.testing.assert_array_equal(stored, normalize_images(raw).reshape(2500, 784))  # bit for bit

    metadata = pq.read_metadata(path)
    assert [metadata.row_group(index).num_rows for index in range(metadata.num_row_groups)] == [
        ROW_GROUP_ROWS, ROW_GROUP_ROWS, 2500 - 2 * ROW_GROUP_ROWS]
    pixel_chunk = metadata.row_group(0).column(2)
    assert pixel_chunk.path_in_schema == "pixels.list.element"
    assert pixel_chunk.compression == "UNCOMPRESSED"
    assert not pixel_chunk.is_stats_set
    assert not any("DICTIONARY" in encoding for encoding in pixel_chunk.encodings)
    assert metadata.row_group(0).column(0).is_stats_set  # labels keep their statistics


def test_load_split_of_several_row_groups(tmp_path, real_slice):
    raw, labels = real_slice
    split = load_split(write_split_parquet(raw, labels, tmp_path / "test.parquet"))

    assert split.images.shape == (2500, 28, 28, 1) and split.images.dtype == np.float32
    assert split.labels.dtype == np.uint8 and split.source_index.dtype == np.int32
    np.testing.assert_array_equal(split.images[..., 0], normalize_images(raw))
    np.testing.assert_array_equal(split.labels, labels)
    np.testing.assert_array_equal(split.source_index, np.arange(2500))


@pytest.mark.parametrize(
    "write_options",
    [{},  # pyarrow's defaults: snappy, dictionary pages, statistics, one row group
     {"compression": "zstd", "row_group_size": 2500},  # the first write_split_parquet
     {"compression": "zstd", "row_group_size": 700}],  # nullable items over several row groups
    ids=["pyarrow-defaults", "zstd-one-row-group", "zstd-row-groups-of-700"],
)
def test_files_of_the_old_layout_load_identically(tmp_path, real_slice, write_options):
    raw, labels = real_slice
    pq.write_table(_old_layout_table(raw, labels), tmp_path / "old.parquet", **write_options)
    new = load_split(write_split_parquet(raw, labels, tmp_path / "new.parquet"))

    old = load_split(tmp_path / "old.parquet")

    for name in ("images", "labels", "source_index"):
        old_array, new_array = getattr(old, name), getattr(new, name)
        assert (old_array.dtype, old_array.shape) == (new_array.dtype, new_array.shape), name
        np.testing.assert_array_equal(old_array, new_array, err_msg=name)


def test_loaded_arrays_outlive_the_file_they_came_from(tmp_path, real_slice):
    raw, labels = real_slice
    path = write_split_parquet(raw, labels, tmp_path / "test.parquet")
    split = load_split(path)

    # Reading memory-maps the file: arrays already loaded must not change or fault when the data stage rewrites it.
    write_split_parquet(255 - raw, labels, path)
    path.unlink()

    np.testing.assert_array_equal(split.images[..., 0], normalize_images(raw))
    np.testing.assert_array_equal(split.labels, labels)


def test_load_split_of_an_empty_split(tmp_path):
    path = write_split_parquet(np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.uint8), tmp_path / "empty.parquet")

    split = load_split(path)

    assert split.images.shape == (0, 28, 28, 1) and split.images.dtype == np.float32
    assert len(split) == 0


def test_write_leaves_no_temporary_files(tmp_path, raw_images):
    write_split_parquet(raw_images, np.zeros(12, dtype=np.uint8), tmp_path / "train.parquet")

    assert [path.name for path in tmp_path.iterdir()] == ["train.parquet"]


def test_write_rejects_label_count_mismatch(tmp_path, raw_images):
    with pytest.raises(ValueError, match="12 images but 11 labels"):
        write_split_parquet(raw_images, np.zeros(11, dtype=np.uint8), tmp_path / "train.parquet")
    assert not (tmp_path / "train.parquet").exists()


def test_write_rejects_images_that_are_not_28_by_28(tmp_path):
    with pytest.raises(ValueError, match="729 pixels each; expected 28x28 = 784"):
        write_split_parquet(np.zeros((3, 27, 27), np.uint8), np.zeros(3, np.uint8), tmp_path / "x.parquet")
    assert list(tmp_path.iterdir()) == []


def test_load_split_of_missing_file_says_which_stage_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="train.parquet does not exist; run the data stage"):
        load_split(tmp_path / "train.parquet")


# --------------------------------------------------------------------------- stratified subsets


@pytest.fixture
def unbalanced_split(rng) -> Split:
    """997 images whose classes have very different sizes (10 to 190)."""
    labels = rng.permutation(np.repeat(np.arange(10), [10, 190, 35, 120, 77, 150, 45, 101, 89, 180]))
    images = np.zeros((len(labels), 28, 28, 1), dtype=np.float32)
    images[:, 0, 0, 0] = np.arange(len(labels))  # each image remembers where it came from
    return Split(images, labels.astype(np.uint8), np.arange(len(labels), dtype=np.int32))


@pytest.mark.parametrize("size", [1, 10, 137, 500, 996])
def test_subset_keeps_class_proportions(unbalanced_split, size):
    subset = stratified_subset(unbalanced_split, size, seed=0)

    assert len(subset) == size
    full_counts = np.bincount(unbalanced_split.labels, minlength=10)
    subset_counts = np.bincount(subset.labels, minlength=10)
    expected = full_counts / full_counts.sum() * size
    assert np.all(np.abs(subset_counts - expected) <= 1), (subset_counts, expected)


def test_subset_rows_stay_together(unbalanced_split):
    subset = stratified_subset(unbalanced_split, 200, seed=3)

    assert len(np.unique(subset.source_index)) == 200
    np.testing.assert_array_equal(subset.labels, unbalanced_split.labels[subset.source_index])
    np.testing.assert_array_equal(subset.images[:, 0, 0, 0], subset.source_index)


def test_subset_is_reproducible_per_seed(unbalanced_split):
    first = stratified_subset(unbalanced_split, 200, seed=42)
    again = stratified_subset(unbalanced_split, 200, seed=42)
    other = stratified_subset(unbalanced_split, 200, seed=43)

    np.testing.assert_array_equal(first.source_index, again.source_index)
    assert not np.array_equal(first.source_index, other.source_index)


@pytest.mark.parametrize("size", [None, 997, 5000])
def test_subset_of_whole_split_or_more_is_the_split(unbalanced_split, size):
    assert len(stratified_subset(unbalanced_split, size, seed=0)) == 997


@pytest.mark.parametrize("size", [0, -5])
def test_subset_size_below_one_is_rejected(unbalanced_split, size):
    with pytest.raises(ValueError, match=f"at least 1, got {size}"):
        stratified_subset(unbalanced_split, size, seed=0)


# --------------------------------------------------------------------------- the genuine data


def test_real_files_have_the_published_shapes(mnist):
    assert mnist["train-images-idx3-ubyte.gz"].shape == (60000, 28, 28)
    assert mnist["train-labels-idx1-ubyte.gz"].shape == (60000,)
    assert mnist["t10k-images-idx3-ubyte.gz"].shape == (10000, 28, 28)
    assert mnist["t10k-labels-idx1-ubyte.gz"].shape == (10000,)
    assert mnist["train-images-idx3-ubyte.gz"].dtype == np.uint8


def test_real_label_counts_and_first_labels(mnist):
    train_labels, test_labels = mnist["train-labels-idx1-ubyte.gz"], mnist["t10k-labels-idx1-ubyte.gz"]

    assert np.bincount(train_labels).tolist() == TRAIN_COUNTS
    assert np.bincount(test_labels).tolist() == TEST_COUNTS
    assert train_labels[:10].tolist() == FIRST_TRAIN_LABELS
    assert test_labels[:10].tolist() == FIRST_TEST_LABELS


def test_real_mean_train_pixel(mnist):
    raw_train = mnist["train-images-idx3-ubyte.gz"]

    assert round(float(raw_train.mean()), 3) == 33.318
    assert float(normalize_images(raw_train[:1000]).max()) == 1.0


def test_real_subset_keeps_class_proportions(mnist, tmp_path):
    raw, labels = mnist["t10k-images-idx3-ubyte.gz"][:2000], mnist["t10k-labels-idx1-ubyte.gz"][:2000]
    split = load_split(write_split_parquet(raw, labels, tmp_path / "test.parquet"))

    subset = stratified_subset(split, 300, seed=42)

    expected = np.bincount(labels, minlength=10) / 2000 * 300
    assert np.all(np.abs(np.bincount(subset.labels, minlength=10) - expected) <= 1)
    np.testing.assert_array_equal(subset.images[..., 0], raw[subset.source_index] / np.float32(255))


def test_dataset_facts_of_the_real_data(mnist):
    facts = dataset_facts(
        mnist["train-images-idx3-ubyte.gz"], mnist["train-labels-idx1-ubyte.gz"],
        mnist["t10k-images-idx3-ubyte.gz"], mnist["t10k-labels-idx1-ubyte.gz"],
    ).set_index("fact")

    assert list(facts.columns) == ["train", "test", "total"]
    assert facts.loc["images"].tolist() == ["60000", "10000", "70000"]
    assert facts.loc["image shape (rows x columns)"].tolist() == ["28x28", "28x28", "28x28"]
    assert facts.loc["raw pixel mean", "train"] == "33.318"
    assert facts.loc["raw pixel min"].tolist() == ["0", "0", "0"]
    assert facts.loc["raw pixel max"].tolist() == ["255", "255", "255"]
    assert facts.loc["label set", "total"] == "0 1 2 3 4 5 6 7 8 9"
    for label in range(10):
        row = facts.loc[f"images of label {label}"]
        assert row.tolist() == [str(TRAIN_COUNTS[label]), str(TEST_COUNTS[label]),
                                str(TRAIN_COUNTS[label] + TEST_COUNTS[label])]


def test_dataset_facts_of_a_tiny_data_set():
    train = np.array([[[0, 255]], [[10, 20]], [[30, 40]]], dtype=np.uint8)  # three 1x2 images
    test = np.array([[[100, 100]]], dtype=np.uint8)

    facts = dataset_facts(train, np.array([1, 1, 3]), test, np.array([2])).set_index("fact")

    assert facts.loc["images"].tolist() == ["3", "1", "4"]
    assert facts.loc["fraction of all images"].tolist() == ["0.7500", "0.2500", "1.0000"]
    assert facts.loc["raw pixel mean"].tolist() == ["59.167", "100.000", "69.375"]
    assert facts.loc["label set"].tolist() == ["1 3", "2", "1 2 3"]
    assert facts.loc["images of label 1"].tolist() == ["2", "0", "2"]
    assert facts.loc["images of label 2"].tolist() == ["0", "1", "1"]
    assert "images of label 0" not in facts.index


# --------------------------------------------------------------------------- tables


def test_write_table_writes_parquet_csv_and_markdown(tmp_path):
    table = pd.DataFrame({"model": ["dnn", "convnet|v2"], "accuracy": [0.97531, 0.99]})

    paths = write_table(table, tmp_path / "tables", "results")

    assert {fmt: path.name for fmt, path in paths.items()} == {
        "parquet": "results.parquet", "csv": "results.csv", "md": "results.md"}
    pd.testing.assert_frame_equal(pd.read_parquet(paths["parquet"]), table)
    pd.testing.assert_frame_equal(pd.read_csv(paths["csv"]), table)
    assert paths["md"].read_text().splitlines() == [
        "| model | accuracy |",
        "|---|---|",
        "| dnn | 0.9753 |",
        "| convnet\\|v2 | 0.99 |",
    ]
    assert sorted(path.name for path in (tmp_path / "tables").iterdir()) == [
        "results.csv", "results.md", "results.parquet"]


def test_to_markdown_of_facts_has_one_row_per_fact(mnist):
    facts = dataset_facts(
        mnist["t10k-images-idx3-ubyte.gz"][:50], mnist["t10k-labels-idx1-ubyte.gz"][:50],
        mnist["t10k-images-idx3-ubyte.gz"][50:60], mnist["t10k-labels-idx1-ubyte.gz"][50:60],
    )

    lines = to_markdown(facts).splitlines()

    assert lines[0] == "| fact | train | test | total |"
    assert len(lines) == 2 + len(facts)
    assert "| images | 50 | 10 | 60 |" in lines
