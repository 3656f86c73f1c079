"""Normalize IDX arrays to Parquet, load them back fast, and describe the data set."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mnist_models import parquet_pages
from mnist_models.atomic_files import atomic_path

IMAGE_SIZE = 28 * 28
# Pixels are never null; a non-nullable item lets Arrow decode the list without building validity bitmaps.
PIXELS_TYPE = pa.list_(pa.field("element", pa.float32(), nullable=False), IMAGE_SIZE)
# Row groups of 1,000 images (3 MB of pixels): Arrow, which rebuilds a list column from per-pixel levels,
# reads such a file fastest (benchmarks/results/load_parquet.md); load_split's own page reader does not mind.
ROW_GROUP_ROWS = 1000
# Plain, uncompressed pixels: decompressing or undoing a dictionary costs more than reading 188 MB from the
# page cache, per-page statistics of pixels serve no query, and each page ends with its values as raw
# float32 (what mnist_models.parquet_pages reads).
PARQUET_WRITE_OPTIONS = {"compression": "none", "use_dictionary": False,
                         "write_statistics": ["label", "source_index"], "row_group_size": ROW_GROUP_ROWS}


@dataclass(frozen=True)
class Split:
    """One split in memory: normalized images (n, 28, 28, 1) float32 in [0, 1], labels, source indices."""

    images: np.ndarray
    labels: np.ndarray
    source_index: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def normalize_images(raw_images: np.ndarray) -> np.ndarray:
    """Scale uint8 images to float32 in [0, 1] by dividing by 255, as the study does."""
    if raw_images.dtype != np.uint8 or raw_images.ndim != 3:
        raise ValueError(
            f"expected uint8 images of shape (n, rows, columns), got {raw_images.dtype} {raw_images.shape}"
        )
    return raw_images.astype(np.float32) / np.float32(255.0)


def write_split_parquet(raw_images: np.ndarray, labels: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Write one split as Parquet: label (uint8), source_index (int32), pixels (784 float32), atomically."""
    if len(raw_images) != len(labels):
        raise ValueError(f"{len(raw_images)} images but {len(labels)} labels; expected one label per image")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(f"labels range {labels.min()}..{labels.max()}; expected values that fit uint8 (0..255)")
    pixels = normalize_images(raw_images).reshape(len(raw_images), raw_images.shape[1] * raw_images.shape[2])
    if pixels.shape[1] != IMAGE_SIZE:
        raise ValueError(f"images have {pixels.shape[1]} pixels each; expected 28x28 = {IMAGE_SIZE}")
    pixel_column = pa.FixedSizeListArray.from_arrays(pa.array(pixels.ravel(), type=pa.float32()), type=PIXELS_TYPE)
    table = pa.table(
        {
            "label": pa.array(labels.astype(np.uint8), type=pa.uint8()),
            "source_index": pa.array(np.arange(len(labels), dtype=np.int32), type=pa.int32()),
            "pixels": pixel_column,
        }
    )
    with atomic_path(path) as temporary:
        pq.write_table(table, temporary, **PARQUET_WRITE_OPTIONS)
    return Path(path)


def load_split(path: str | os.PathLike[str]) -> Split:
    """Load a split written by `write_split_parquet` into arrays shaped (n, 28, 28, 1)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; run the data stage (flows/prepare_data.py) first")
    table = pq.read_table(path, columns=["label", "source_index"], memory_map=True)
    # The pixels straight from their pages into one array (mnist_models.parquet_pages); any other layout (older
    # files, compressed or dictionary-encoded ones) through Arrow's decoder.
    pixels = parquet_pages.read_float_lists(path, "pixels", IMAGE_SIZE)
    if pixels is None:
        pixels = _column_values(pq.read_table(path, columns=["pixels"], memory_map=True, use_threads=True), "pixels")
    return Split(images=pixels.reshape(-1, 28, 28, 1), labels=_column_values(table, "label"),
                 source_index=_column_values(table, "source_index"))


def _column_values(table: pa.Table, name: str) -> np.ndarray:
    """One column as a read-only NumPy view of a single Arrow buffer; list columns give their items."""
    # Joining several row groups' chunks is the one copy; the NumPy view keeps the joined buffer alive.
    column = table.column(name).combine_chunks()
    if pa.types.is_fixed_size_list(column.type):
        column = column.flatten()
    return column.to_numpy(zero_copy_only=False)


def split_size(path: str | os.PathLike[str]) -> int:
    """The number of images in a Parquet split, from its footer (no pixel is read)."""
    return pq.ParquetFile(path).metadata.num_rows


def stratified_subset(split: Split, size: int | None, seed: int) -> Split:
    """Return `size` images drawn with the split's class proportions (the whole split if size is None)."""
    if size is None or size >= len(split):
        return split
    if size < 1:
        raise ValueError(f"subset size must be at least 1, got {size}")
    generator = np.random.default_rng(seed)
    classes, counts = np.unique(split.labels, return_counts=True)
    quotas = np.floor(counts / counts.sum() * size).astype(int)
    # Hand the images lost to rounding to the classes with the largest remainders.
    remainders = counts / counts.sum() * size - quotas
    quotas[np.argsort(-remainders)[: size - quotas.sum()]] += 1
    chosen = np.concatenate(
        [generator.choice(np.flatnonzero(split.labels == label), quota, replace=False)
         for label, quota in zip(classes, quotas)]
    )
    chosen.sort()
    return Split(split.images[chosen], split.labels[chosen], split.source_index[chosen])


def dataset_facts(
    raw_train: np.ndarray, train_labels: np.ndarray, raw_test: np.ndarray, test_labels: np.ndarray
) -> pd.DataFrame:
    """Answer the study's section I questions from the data: one row per fact, per split and overall."""
    splits = {"train": (raw_train, train_labels), "test": (raw_test, test_labels)}
    total_images = len(train_labels) + len(test_labels)
    label_set = np.union1d(np.unique(train_labels), np.unique(test_labels))

    def row(fact: str, values: dict[str, object], total: object) -> dict[str, str]:
        return {"fact": fact, **{name: str(value) for name, value in values.items()}, "total": str(total)}

    def both(function) -> dict[str, object]:
        return {name: function(images, labels) for name, (images, labels) in splits.items()}

    rows = [
        row("images", both(lambda images, labels: len(labels)), total_images),
        row("fraction of all images", both(lambda images, labels: f"{len(labels) / total_images:.4f}"), "1.0000"),
        row("image shape (rows x columns)", both(lambda images, labels: "x".join(map(str, images.shape[1:]))), "28x28"),
        row("channels", both(lambda images, labels: 1 if images.ndim == 3 else images.shape[-1]), 1),
        row("raw pixel dtype", both(lambda images, labels: images.dtype), raw_train.dtype),
        row("raw pixel min", both(lambda images, labels: int(images.min())), int(min(raw_train.min(), raw_test.min()))),
        row("raw pixel max", both(lambda images, labels: int(images.max())), int(max(raw_train.max(), raw_test.max()))),
        row("raw pixel mean", both(lambda images, labels: f"{images.mean():.3f}"),
            f"{(raw_train.sum(dtype=np.int64) + raw_test.sum(dtype=np.int64)) / (raw_train.size + raw_test.size):.3f}"),
        row("normalized pixel min", both(lambda images, labels: f"{images.min() / 255.0:.1f}"), "0.0"),
        row("normalized pixel max", both(lambda images, labels: f"{images.max() / 255.0:.1f}"), "1.0"),
        row("label set", both(lambda images, labels: " ".join(map(str, np.unique(labels)))), " ".join(map(str, label_set))),
    ]
    for label in label_set:
        counts = both(lambda images, labels: int((labels == label).sum()))
        rows.append(row(f"images of label {label}", counts, sum(counts.values())))
    return pd.DataFrame(rows, columns=["fact", "train", "test", "total"])
