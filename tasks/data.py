"""Data-stage tasks: download and verify the IDX files, normalize them to Parquet, describe them."""

from __future__ import annotations

import hashlib
from pathlib import Path

from prefect import get_run_logger, task
from prefect.states import Failed

from mnist_models import data as data_lib
from mnist_models import download as download_lib
from mnist_models import idx as idx_lib
from mnist_models import tables
from mnist_models.io import sha256_file, write_bytes
from tasks.caching import code_cache_key


def _read_idx(path: str | Path):
    path = Path(path)
    return idx_lib.parse_idx(idx_lib.gunzip(path.read_bytes(), name=str(path)), name=str(path))


@task
def verify_idx(path: str, expected_md5: str) -> bool:
    """Check a raw file already on disk against its published checksum (False when absent or bad)."""
    path = Path(path)
    if not path.exists():
        return False
    try:
        download_lib.verify_content(path.read_bytes(), path.name, expected_md5, str(path))
    except ValueError as error:
        get_run_logger().warning(f"{error}; downloading it again")
        return False
    return True


@task(cache_key_fn=code_cache_key(download_lib, idx_lib), persist_result=True)
def download_idx(filename: str, expected_md5: str, mirrors: list[str], raw_dir: str) -> dict:
    """Fetch one IDX file from the first mirror that serves a verified copy and store it in raw_dir."""
    logger = get_run_logger()
    try:
        verified = download_lib.fetch_verified(filename, expected_md5, mirrors, log=logger.info)
    except (download_lib.MirrorsExhaustedError, ValueError) as error:
        # An expected outcome (bad mirror, bad file), not a bug: fail with the message alone.
        return Failed(message=str(error))
    path = write_bytes(Path(raw_dir) / filename, verified.compressed)
    return {"path": str(path), "source": verified.source, "md5": verified.md5, "sha256": verified.sha256}


@task(cache_key_fn=code_cache_key(data_lib, idx_lib), persist_result=True)
def normalize_split(images_path: str, labels_path: str, content_hash: str, output_path: str) -> dict:
    """Normalize one split (pixels / 255, float32) and write it as Parquet."""
    images, labels = _read_idx(images_path), _read_idx(labels_path)
    path = data_lib.write_split_parquet(images, labels, output_path)
    get_run_logger().info(f"wrote {len(labels):,} images to {path}")
    return {"path": str(path), "rows": int(len(labels)), "sha256": sha256_file(path)}


@task(cache_key_fn=code_cache_key(data_lib, tables), persist_result=True)
def write_dataset_facts(raw_paths: dict[str, str], content_hash: str, tables_dir: str) -> str:
    """Write the dataset_facts table (the study's section I, answered from the data)."""
    arrays = {name: _read_idx(path) for name, path in raw_paths.items()}
    facts = data_lib.dataset_facts(
        arrays["train-images-idx3-ubyte.gz"], arrays["train-labels-idx1-ubyte.gz"],
        arrays["t10k-images-idx3-ubyte.gz"], arrays["t10k-labels-idx1-ubyte.gz"],
    )
    return str(tables.write_table(facts, tables_dir, "dataset_facts")["parquet"])


@task(cache_key_fn=code_cache_key("mnist_models.plots"), persist_result=True)
def render_first_images(train_path: str, content_hash: str, figure_path: str) -> str:
    """Render the first 25 normalized training images with their labels (study figure 1.1)."""
    from mnist_models import plots

    split = data_lib.load_split(train_path)
    figure = plots.plot_first_images(split.images[:25], split.labels[:25])
    return str(plots.save_figure(figure, figure_path))


def content_hash(file_hashes: dict[str, str]) -> str:
    """One hash for a data set: SHA-256 over its files' names and uncompressed-content hashes."""
    digest = hashlib.sha256()
    for name in sorted(file_hashes):
        digest.update(f"{name}:{file_hashes[name]}\n".encode())
    return digest.hexdigest()
