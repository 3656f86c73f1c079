"""What a stage's result depends on, whether a stored result may be reused, and why not.

A stage's *key* is its parameters, the content hashes of its inputs, the code of every project
module it imports (transitively, found by reading import statements; a module counts by its syntax
tree, so comments, docstrings and formatting do not), the major.minor versions of the libraries
that shape its result, and the environment variables that change their numerics. Its *record*
(JSON, under `<artifacts>/.cache/stages/`) stores that key, the content hash of each file it wrote
(relative to the artifacts root), and the stage's result. A stored result is reused only when the
key is equal and every output still has the hash it was written with; otherwise the decision names
what changed.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import os
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from mnist_models.atomic_files import write_text
from mnist_models.hashing import file_sha256
from mnist_models.layout import ArtifactsLayout
from mnist_models.records import Record

PROJECT_PACKAGES = ("mnist_models", "tasks", "flows")
# Libraries whose major.minor version can change a result, by what they shape. A name that is also an
# import package is keyed by the distribution that provides it: `tensorflow-cpu` is not `tensorflow`.
TRAINING_LIBRARIES = ("tensorflow", "keras", "numpy")
ANALYSIS_LIBRARIES = ("numpy", "pandas", "scikit-learn", "scipy")
FIGURE_LIBRARIES = ("matplotlib", "numpy", "scikit-learn")
REPORT_LIBRARIES = ("jinja2", "markdown", "numpy", "scipy")
# Environment variables that change TensorFlow's numerics, with the value TensorFlow takes when one is unset
# or not a boolean (oneDNN's fused kernels round differently; TensorFlow 2.21 turns them on by default on x86).
# Not keyed although it changes numbers: TensorFlow's thread count. With op determinism on, one epoch on
# 2,000 images gives bit-identical dnn weights on 1 and 2 threads but convnet weights up to 3e-3 apart (oneDNN
# on or off; tests/mnist_models/test_stage_closures.py). The flow picks it after planning, from the runs to train.
NUMERICS_ENVIRONMENT = {"TF_ENABLE_ONEDNN_OPTS": "1"}


# --------------------------------------------------------------------------- the code closure


@lru_cache(maxsize=None)
def _package_parent(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    return Path(spec.origin).parent.parent if spec is not None and spec.origin else None


def _module_file(module: str) -> Path | None:
    """The source file of a project module, found on disk without importing anything."""
    parent = _package_parent(module.split(".")[0])
    if parent is None:
        return None
    base = parent.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_modules(path: Path, module: str) -> frozenset[str]:
    """Project modules named by the import statements of one source file (not executed)."""
    stat = path.stat()
    return _parsed_imports(path, module, stat.st_ino, stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=None)
def _parsed_imports(path: Path, module: str, *version: int) -> frozenset[str]:
    """`_imported_modules` of one version of a file: each file is parsed once, whichever closures include it."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")
                base = ".".join(parent[: len(parent) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return frozenset(name for name in found if name.split(".")[0] in PROJECT_PACKAGES)


@lru_cache(maxsize=None)
def _closure(modules: tuple[str, ...]) -> tuple[tuple[str, Path], ...]:
    seen: dict[str, Path] = {}
    pending = list(modules)
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        path = _module_file(module)
        if path is None:
            continue  # a name imported from a module, not a module itself
        seen[module] = path
        parts = module.split(".")
        pending += [".".join(parts[:depth]) for depth in range(1, len(parts))]  # parent packages run first
        pending += sorted(_imported_modules(path, module))
    return tuple(sorted(seen.items()))


def code_closure(*modules: str, entries: Mapping[str, tuple] | None = None) -> dict[str, str]:
    """Relative source path -> hash of the syntax tree of every project module the given modules import, transitively.

    `entries` narrows a registry: for module -> (dict name, key[, keywords]), only that entry of the module's
    top-level dict literal counts (of an entry that is a call, only those keyword arguments), so adding or
    editing another entry, or another field of this one, leaves this closure's hashes as they were.
    """
    entries = entries or {}
    files = {}
    for module, path in _closure(tuple(sorted(modules))):
        relative = path.relative_to(_package_parent(module.split(".")[0]))
        files[relative.as_posix()] = source_hash(path, entries.get(module))
    return files


def source_hash(path: str | os.PathLike[str], entry: tuple | None = None) -> str:
    """SHA-256 of a Python file's syntax tree without docstrings: what runs, not comments or formatting.

    With `entry` (dict name, key[, keywords]), the module's top-level dict literal of that name keeps only that
    key, and a call as its value only those keyword arguments.
    """
    stat = os.stat(path)
    return _tree_hash(Path(path), entry, stat.st_ino, stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=None)
def _tree_hash(path: Path, entry: tuple | None, *version: int) -> str:
    tree = ast.parse(path.read_bytes(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and _has_docstring(node):
            node.body = node.body[1:]
    if entry is not None:
        _narrow_dict(tree, *entry)
    return hashlib.sha256(ast.dump(tree, include_attributes=False).encode()).hexdigest()


def _has_docstring(node: ast.AST) -> bool:
    first = node.body[0] if node.body else None
    return (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str))


def _narrow_dict(tree: ast.Module, name: str, key: str, keywords: tuple[str, ...] | None = None) -> None:
    """Keep only `key` in the top-level dict literal assigned to `name` (a dict built otherwise counts whole), and
    of its value, when that is a call, only the `keywords` arguments."""
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if any(isinstance(target, ast.Name) and target.id == name for target in targets) \
                and isinstance(getattr(node, "value", None), ast.Dict):
            kept = [(k, v) for k, v in zip(node.value.keys, node.value.values)
                    if isinstance(k, ast.Constant) and k.value == key]
            node.value.keys, node.value.values = [k for k, _ in kept], [v for _, v in kept]
            for value in node.value.values:
                if keywords is not None and isinstance(value, ast.Call):
                    value.keywords = [keyword for keyword in value.keywords if keyword.arg in keywords]


def package_files(package: str, *patterns: str) -> dict[str, str]:
    """Relative path -> SHA-256 of a package's data files (templates, style sheets) matching the patterns."""
    parent = _package_parent(package.split(".")[0])
    directory = parent.joinpath(*package.split("."))
    return {path.relative_to(parent).as_posix(): file_sha256(path)
            for pattern in patterns for path in sorted(directory.glob(pattern))}


def library_versions(distributions: Iterable[str]) -> dict[str, str]:
    """Major.minor version of each library, keyed by the distribution that provides it (`tensorflow-cpu`
    for `tensorflow` where that is what is installed); "absent" when none is."""
    versions = {}
    for name in distributions:
        for provider in _providers(name):
            try:
                versions[provider] = ".".join(metadata.version(provider).split(".")[:2])
            except metadata.PackageNotFoundError:
                versions[provider] = "absent"
    return versions


def _providers(name: str) -> list[str]:
    """The installed distributions that provide import package `name`, else `name` itself (scikit-learn)."""
    return sorted({_canonical(distribution)
                   for distribution in _packages_distributions().get(name.replace("-", "_"), ())}) or [name]


@lru_cache(maxsize=1)
def _packages_distributions() -> Mapping[str, list[str]]:
    return metadata.packages_distributions()


def _canonical(distribution: str) -> str:
    """A distribution's name as PyPI normalises it: `tensorflow_cpu` -> `tensorflow-cpu`, `Jinja2` -> `jinja2`."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


def numerics_environment(environment: Mapping[str, str]) -> dict[str, str]:
    """The effective value ("1" or "0") of each variable of NUMERICS_ENVIRONMENT in `environment` (the one the
    training processes inherit), as TensorFlow reads it."""
    effective = {}
    for name, default in NUMERICS_ENVIRONMENT.items():
        value = environment.get(name, "").strip().lower()
        effective[name] = {"1": "1", "true": "1", "0": "0", "false": "0"}.get(value, default)
    return effective


def digest(value: Any) -> str:
    """SHA-256 of a JSON-able value (keys sorted): the content address of parameters or a key."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


# --------------------------------------------------------------------------- keys, records, decisions


class StageKey(Record):
    """Everything a stage's result depends on. No absolute path may enter it."""

    parameters: dict[str, Any] = {}
    inputs: dict[str, str] = {}  # input name -> content hash
    code: dict[str, str] = {}  # relative source path -> hash
    versions: dict[str, str] = {}  # distribution -> major.minor; NUMERICS_ENVIRONMENT variable -> value


class StageRecord(Record):
    """A stage's stored result: its key, the hash of each file it wrote, and what it returned."""

    stage: str
    item: str
    key: StageKey
    outputs: dict[str, str]  # path relative to the artifacts root -> SHA-256
    result: Any = None


class Decision(Record):
    """Whether a stage (for one item: a run, or the stage itself) was reused or recomputed, and why."""

    stage: str
    item: str
    action: Literal["reused", "recomputed"]
    reason: str = Field(description="new, refresh, what changed, or which outputs are missing or modified")


def outputs_problem(outputs: Mapping[str, str], root: Path) -> str | None:
    """None when every output exists with its recorded hash; else which are missing or modified."""
    missing, modified = [], []
    for relative, expected in outputs.items():
        path = root / relative
        if not path.exists():
            missing.append(relative)
        elif file_sha256(path) != expected:
            modified.append(relative)
    parts = []
    if missing:
        parts.append(f"outputs missing ({_shorten(missing)})")
    if modified:
        parts.append(f"outputs modified ({_shorten(modified)})")
    return "; ".join(parts) or None


def key_change(previous: StageKey, current: StageKey) -> str | None:
    """What differs between two keys, in words a user can act on; None when they are equal."""
    changes = []
    parameters = _changed(previous.parameters, current.parameters)
    if parameters:
        changes.append(f"parameters changed ({_shorten(parameters)})")
    inputs = _changed(previous.inputs, current.inputs)
    if inputs:
        changes.append(f"{'data' if inputs == ['data'] else 'inputs'} changed ({_shorten(inputs)})")
    code = _changed(previous.code, current.code)
    if code:
        changes.append(f"code changed ({_shorten(code)})")
    changed = _changed(previous.versions, current.versions)
    for kind, names in (("library version", [name for name in changed if name not in NUMERICS_ENVIRONMENT]),
                        ("environment", [name for name in changed if name in NUMERICS_ENVIRONMENT])):
        described = [f"{name} {previous.versions.get(name, 'absent')} -> {current.versions.get(name, 'absent')}"
                     for name in names]
        if described:
            changes.append(f"{kind} changed ({_shorten(described)})")
    return "; ".join(changes) or None


def decide(stage: str, item: str, key: StageKey, previous: StageRecord | None, root: Path,
           refresh: bool) -> Decision:
    """Reuse `previous` only when not refreshed, its key equals `key` and its outputs are intact."""
    if refresh:
        return Decision(stage=stage, item=item, action="recomputed", reason="--refresh")
    if previous is None:
        return Decision(stage=stage, item=item, action="recomputed", reason="new")
    reason = key_change(previous.key, key) or outputs_problem(previous.outputs, root)
    if reason:
        return Decision(stage=stage, item=item, action="recomputed", reason=reason)
    return Decision(stage=stage, item=item, action="reused", reason="inputs, code and outputs unchanged")


class StageStore:
    """The stage records of one artifacts root, one JSON file per stage and item."""

    def __init__(self, layout: ArtifactsLayout) -> None:
        self.root = layout.root
        self.directory = layout.stages_dir

    def _path(self, stage: str, item: str) -> Path:
        return self.directory / stage / f"{item}.json"

    def load(self, stage: str, item: str) -> StageRecord | None:
        """The stored record, or None when absent or unreadable (then the stage runs again)."""
        try:
            return StageRecord.from_json(self._path(stage, item).read_bytes())
        except (OSError, ValueError):
            return None

    def save(self, stage: str, item: str, key: StageKey, outputs: Iterable[str | os.PathLike[str]],
             result: Any = None) -> StageRecord:
        """Hash each output file (paths under the root) and store the record atomically."""
        hashes = {}
        for output in outputs:
            path = Path(output)
            relative = path.relative_to(self.root) if path.is_absolute() else path
            hashes[relative.as_posix()] = file_sha256(self.root / relative)
        record = StageRecord(stage=stage, item=item, key=key, outputs=hashes, result=result)
        write_text(self._path(stage, item), record.to_json())
        return record


def _changed(previous: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    return sorted(name for name in set(previous) | set(current) if previous.get(name) != current.get(name))


def _shorten(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
