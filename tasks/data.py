"""Data-stage tasks: verify or download the IDX files, normalize them to Parquet, describe them."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.states import Failed

from mnist_models import data as data_lib
from mnist_models import download as download_lib
from mnist_models import idx as idx_lib
from mnist_models import tables
from mnist_models.atomic_files import DiskFullError


def _read_idx(path: Path):
    return idx_lib.parse_idx(idx_lib.gunzip(path.read_bytes(), name=str(path)), name=str(path))


@task(task_run_name="verify {path.name}")
def verify_idx(path: Path, expected_md5: str) -> str | None:
    """SHA-256 of a raw file's content if it is on disk and matches its published checksum, else None."""
    return verified_sha256(path, expected_md5, lambda error: get_run_logger().warning(f"{error}; downloading it again"))


def verified_sha256(path: Path, expected_md5: str, warn=lambda error: None) -> str | None:
    """`verify_idx` outside a flow (the plan): the content's SHA-256, or None when absent or not as published."""
    if not path.exists():
        return None
    try:
        return download_lib.verify_content(path.read_bytes(), path.name, expected_md5, str(path)).sha256
    except ValueError as error:
        warn(error)
        return None


@task(task_run_name="download {filename}")
def download_idx(filename: str, expected_md5: str, mirrors: list[str], path: Path) -> str:
    """Fetch one IDX file from the first mirror that serves a verified copy; return its content's SHA-256."""
    logger = get_run_logger()
    try:
        return download_lib.download_verified(filename, expected_md5, mirrors, path, log=logger.info).sha256
    except (download_lib.MirrorsExhaustedError, ValueError, DiskFullError) as error:
        # An expected outcome (bad mirror, bad file, no room), not a bug: fail with the message alone.
        return Failed(message=str(error))


@task(task_run_name="normalize {output.name}")
def normalize_split(images_path: Path, labels_path: Path, output: Path) -> Path:
    """Normalize one split (pixels / 255, float32) and write it as Parquet."""
    images, labels = _read_idx(images_path), _read_idx(labels_path)
    path = data_lib.write_split_parquet(images, labels, output)
    get_run_logger().info(f"wrote {len(labels):,} images to {path}")
    return path


@task
def write_dataset_facts(raw_paths: dict[str, Path], tables_dir: Path) -> list[Path]:
    """Write the dataset_facts table (the study's section I, answered from the data); return its files."""
    arrays = {name: _read_idx(path) for name, path in raw_paths.items()}
    facts = data_lib.dataset_facts(
        arrays["train-images-idx3-ubyte.gz"], arrays["train-labels-idx1-ubyte.gz"],
        arrays["t10k-images-idx3-ubyte.gz"], arrays["t10k-labels-idx1-ubyte.gz"],
    )
    return list(tables.write_table(facts, tables_dir, "dataset_facts").values())
