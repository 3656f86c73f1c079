"""Where cache records live and when a cached stage must run again.

Records are kept under `<artifacts>/.cache/prefect` (a saved LocalFileSystem block per artifacts
root), so deleting the artifacts directory forgets the cache too. A record is only trusted while
the files its stage wrote still exist: the flow checks them and refreshes the stage otherwise.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from prefect import Task
from prefect.context import TaskRunContext
from prefect.filesystems import LocalFileSystem

from mnist_models.config import artifacts_paths


def _stable_json(value: Any) -> str:
    def default(item: Any) -> Any:
        if hasattr(item, "model_dump"):
            return item.model_dump(mode="json")
        if hasattr(item, "__dataclass_fields__"):
            return {name: getattr(item, name) for name in item.__dataclass_fields__}
        if isinstance(item, os.PathLike):
            return os.fspath(item)
        # repr() could hold a memory address and silently defeat the cache: refuse instead.
        raise TypeError(f"cannot build a stable cache key from a {type(item).__name__}; "
                        "pass plain values, paths, dataclasses or pydantic models")

    return json.dumps(value, sort_keys=True, default=default)


def _source(item: Any) -> bytes:
    if isinstance(item, str):  # a module named, not imported: hash its file
        spec = importlib.util.find_spec(item)
        if spec is None or spec.origin is None:
            raise ModuleNotFoundError(f"cannot find the source of module {item!r}")
        return Path(spec.origin).read_bytes()
    if inspect.ismodule(item):
        return Path(item.__file__).read_bytes()
    try:
        return inspect.getsource(item).encode()
    except OSError:
        # A task sent to a worker process may carry a copy of its function without source
        # lines; the original is importable by name.
        original = getattr(importlib.import_module(item.__module__), item.__name__)
        return inspect.getsource(getattr(original, "fn", original)).encode()


def source_hash(*items: Any) -> str:
    """SHA-256 over the source of the given modules (objects or dotted names; whole files) or functions."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(_source(item))
    return digest.hexdigest()


def code_cache_key(
    *library_modules: Any, ignore: Iterable[str] = ()
) -> Callable[[TaskRunContext, dict[str, Any]], str]:
    """Cache key function: task name and source + the library code it calls + every input.

    Library modules may be given by dotted name, so that a task module need not import heavy
    libraries (matplotlib, scikit-learn) until its task actually runs.

    `ignore` names inputs that do not change the result (e.g. a thread count).
    """
    ignored = frozenset(ignore)

    def cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
        digest = hashlib.sha256()
        digest.update(context.task.name.encode())
        digest.update(source_hash(context.task.fn, *library_modules).encode())
        relevant = {name: value for name, value in parameters.items() if name not in ignored}
        digest.update(_stable_json(relevant).encode())
        return f"{context.task.name}-{digest.hexdigest()[:32]}"

    return cache_key


def cache_storage(artifacts_dir: str | os.PathLike[str]) -> LocalFileSystem:
    """The saved result-storage block that keeps this artifacts root's cache records beside it."""
    basepath = artifacts_paths(artifacts_dir)["cache"].resolve() / "prefect"
    basepath.mkdir(parents=True, exist_ok=True)
    block = LocalFileSystem(basepath=str(basepath))
    block_name = "mnist-study-cache-" + hashlib.sha256(str(basepath).encode()).hexdigest()[:12]
    block.save(block_name, overwrite=True)
    return block


def with_cache(task: Task, storage: LocalFileSystem, outputs: Iterable[Path] = (), refresh: bool = False) -> Task:
    """`task` caching into `storage`; it runs again when refreshed or when any of its outputs is gone."""
    missing = any(not Path(path).exists() for path in outputs)
    return task.with_options(result_storage=storage, refresh_cache=refresh or missing)
