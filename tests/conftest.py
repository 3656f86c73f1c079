"""Shared fixtures (the real MNIST files beside the repository, one Prefect test harness) and the test tiers."""

from __future__ import annotations

import os
import re
import socket
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPOSITORY.parent / "shared" / "datasets"
MNIST_DIR = SHARED_DATASETS / "mnist"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

TESTS = Path(__file__).resolve().parent
# Every test gets one tier, by where it lives (first match; everything else is `unit`); a test elsewhere
# that starts the Prefect test harness runs flows, so it is `flow` too.
TIERS = {"flows/test_deployment.py": "deployment", "flows/test_service.py": "deployment",
         "flows/test_ui.py": "deployment", "mnist_models/test_report_browser.py": "browser", "flows/": "flow"}
# The library's and the tasks' training entry points: a test reaching one, even in a script it runs, trains.
TRAINERS = frozenset({"train_run", "train_lineage", "train_model"})
CALL = re.compile(r"\b(" + "|".join(sorted(TRAINERS)) + r")(?:\.fn)?\(")  # a call in a script, not a word in prose


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its tier, and `training` where it or a fixture it uses trains a model."""
    for item in items:
        where = item.path.relative_to(TESTS).as_posix()
        tier = next((tier for prefix, tier in TIERS.items() if where.startswith(prefix)), "unit")
        item.add_marker("flow" if tier == "unit" and "prefect_harness" in item.fixturenames else tier)
        if _trains(item):
            item.add_marker("training")


def _trains(item: pytest.Item) -> bool:
    """Whether the test, a fixture it uses, or a helper or script from tests/ they use trains a model."""
    functions = [getattr(item, "function", None)]
    for definitions in item._fixtureinfo.name2fixturedefs.values():  # every fixture the test uses, however indirectly
        functions += [definition.func for definition in definitions]
    names: set[str] = set()
    seen: set[types.CodeType] = set()
    for function in functions:
        names |= _names_used(function, seen)
    return bool(names & TRAINERS) or ("fit" in names and not names.isdisjoint({"keras", "build_model"}))


def _names_used(function: Callable | None, seen: set[types.CodeType]) -> set[str]:
    """The names `function` uses, with those of the helpers from tests/ it calls and the trainers its scripts call."""
    code = getattr(function, "__code__", None)
    if code is None or code in seen or not getattr(function, "__module__", "").startswith("tests"):
        return set()
    seen.add(code)
    names, texts = _code_names(code)
    for name in list(names):
        used = function.__globals__.get(name)
        if isinstance(used, str):
            texts.append(used)  # a script the test runs in a child process
        else:
            names |= _names_used(used, seen)
    return names | {called for text in texts for called in CALL.findall(text)}


def _code_names(code: types.CodeType) -> tuple[set[str], list[str]]:
    """The names `code` and the functions nested in it refer to, and their string constants."""
    names, texts = set(code.co_names), [constant for constant in code.co_consts if isinstance(constant, str)]
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            nested_names, nested_texts = _code_names(constant)
            names, texts = names | nested_names, texts + nested_texts
    return names, texts


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


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A localhost port that refuses connections: bound but not listening, and held for the whole test, so that
    neither the kernel (a test server's port 0) nor another process (a parallel test) is handed it meanwhile."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        yield holder.getsockname()[1]
