"""Shared fixtures: the real MNIST files beside the repository, and one Prefect test harness."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPOSITORY.parent / "shared" / "datasets"
MNIST_DIR = SHARED_DATASETS / "mnist"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The genuine MNIST IDX files in ../shared/datasets/mnist."""
    if not (MNIST_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.fail(f"expected the MNIST IDX files in {MNIST_DIR} (see the README)")
    return MNIST_DIR


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect server and database for every flow test of the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def mnist_mirror(mnist_dir, monkeypatch) -> Path:
    """Point MNIST_MIRROR at the local copy, as CI and offline runs do."""
    monkeypatch.setenv("MNIST_MIRROR", str(mnist_dir))
    return mnist_dir


@pytest.fixture(scope="session")
def small_splits(mnist_dir, tmp_path_factory) -> dict[str, Path]:
    """Parquet splits of real MNIST, cut small: 2,000 training and 1,000 test images."""
    from mnist_models.data import write_split_parquet
    from mnist_models.idx import gunzip, parse_idx

    def read(name: str):
        return parse_idx(gunzip((mnist_dir / name).read_bytes()))

    directory = tmp_path_factory.mktemp("small-splits")
    train = write_split_parquet(read("train-images-idx3-ubyte.gz")[:2000], read("train-labels-idx1-ubyte.gz")[:2000],
                                directory / "train.parquet")
    test = write_split_parquet(read("t10k-images-idx3-ubyte.gz")[:1000], read("t10k-labels-idx1-ubyte.gz")[:1000],
                               directory / "test.parquet")
    return {"train": train, "test": test}
