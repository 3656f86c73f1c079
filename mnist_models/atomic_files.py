"""Atomic file writing: every output appears under its final name complete, or not at all.

Also what goes with it: a full disk named as such (`DiskFullError`), folders removed so that they leave
their name at once, the cleanup of temporaries dead writers left, and the check that an output folder
can be written at all.

Temporaries are written beside their final name as `.{name}.{pid}@{host}.{random}.{kind}.tmp`: the pid
and host say which process wrote it, so `remove_stale_temporaries` can tell a live writer's work from a
dead one's, and leaves another host's alone (an artifacts folder may be shared across hosts). Kinds:
`new` (being written), `old` (a folder renamed aside while its replacement goes in), `trash` (a folder
being deleted). Outputs get the permissions the process umask allows, as any file it creates would.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})
_DISK_FULL_TEXTS = tuple(os.strerror(code) for code in sorted(_DISK_FULL_ERRNOS))


class DiskFullError(OSError):
    """A write failed because the disk, the quota or the file-size limit is full."""


def is_disk_full(error: BaseException) -> bool:
    """Whether `error` means "no room to write" (ENOSPC, EFBIG, EDQUOT), also when a library kept only the text."""
    if not isinstance(error, OSError):
        return False
    if error.errno is not None:
        return error.errno in _DISK_FULL_ERRNOS
    return any(text in str(error) for text in _DISK_FULL_TEXTS)  # pyarrow raises OSError("... No space left ...")


@contextlib.contextmanager
def translating_disk_full(path: str | os.PathLike[str], bytes_needed: int | None = None) -> Iterator[None]:
    """Turn a disk-full OSError raised in the block into a DiskFullError naming `path` and the bytes needed.

    The size comes from `bytes_needed`, else from the error's `bytes_needed` attribute when the writer
    knew it (a download sets the length its mirror announced).
    """
    try:
        yield
    except DiskFullError:
        raise
    except OSError as error:
        if not is_disk_full(error):
            raise
        bytes_needed = bytes_needed if bytes_needed is not None else getattr(error, "bytes_needed", None)
        size = f" ({bytes_needed:,} bytes needed)" if bytes_needed is not None else ""
        reason = error.strerror or str(error)
        raise DiskFullError(
            f"cannot write {str(path)!r}{size}: {reason}; free space on that disk (or raise the file-size "
            "limit) or choose another --artifacts-dir, then run again"
        ) from error


_HOST_TAG_LENGTH = 32  # keeps a temporary's name well below NAME_MAX (255) whatever the final name


def host_tag() -> str:
    """This host's name as it appears in temporaries and locks: only letters, digits and '-', at most 32 characters."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:_HOST_TAG_LENGTH] or "unknown-host"


def _temporary_affixes(final: Path, kind: str) -> tuple[str, str]:
    """The mkstemp/mkdtemp prefix and suffix of a temporary for `final`: `.{name}.{pid}@{host}.` and `.{kind}.tmp`."""
    return f".{final.name}.{os.getpid()}@{host_tag()}.", f".{kind}.tmp"


def temporary_directory(final: str | os.PathLike[str], kind: str = "new") -> Path:
    """Create an empty folder beside `final`, named as this process's temporary so a later cleanup knows its writer."""
    prefix, suffix = _temporary_affixes(Path(final), kind)
    return Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=Path(final).parent))


def process_umask() -> int:
    """The process umask, read without changing it where the system shows it (Linux: /proc/self/status)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)  # elsewhere: set and restore (another thread creating a file meanwhile gets 022)
    os.umask(umask)
    return umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], bytes_needed: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    A full disk in the block raises DiskFullError naming `path`; the temporary is removed either way.
    """
    final = Path(path)
    with translating_disk_full(final, bytes_needed):
        final.parent.mkdir(parents=True, exist_ok=True)
        prefix, suffix = _temporary_affixes(final, "new")
        handle, temporary = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=final.parent)
        os.close(handle)
        temporary_path = Path(temporary)
        try:
            yield temporary_path
            os.chmod(temporary_path, 0o666 & ~process_umask())  # mkstemp creates 0600, whatever the umask
            os.replace(temporary_path, final)
        finally:
            temporary_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; it replaces `path` only if the block succeeds.

    The old folder is renamed aside, the new one renamed in, then the old one deleted: a crash
    leaves the old or the new folder under `path`, or (between the two renames) the old one aside,
    which `remove_stale_temporaries` puts back.
    """
    final = Path(path)
    with translating_disk_full(final):
        final.parent.mkdir(parents=True, exist_ok=True)
        temporary = temporary_directory(final, "new")
        try:
            yield temporary
            os.chmod(temporary, 0o777 & ~process_umask())  # mkdtemp creates 0700, whatever the umask
            _swap_in(temporary, final)
        finally:
            if temporary.exists():
                shutil.rmtree(temporary, ignore_errors=True)


def _rename_aside(final: Path, kind: str) -> Path:
    """Rename `final` to a new temporary name beside it (kind `old` or `trash`) and return that name."""
    aside = temporary_directory(final, kind)
    try:
        os.rename(final, aside)  # replaces the empty placeholder mkdtemp made to reserve the name
    except OSError:
        os.rmdir(aside)
        raise
    return aside


def _swap_in(new: Path, final: Path) -> None:
    """Rename `final` aside (if it exists), rename `new` onto it, then delete the old folder."""
    try:
        aside = _rename_aside(final, "old")
    except FileNotFoundError:
        os.rename(new, final)
        return
    try:
        os.rename(new, final)
    except OSError:
        os.rename(aside, final)  # put the old folder back before reporting the failure
        raise
    shutil.rmtree(aside, ignore_errors=True)


def remove_directory(path: str | os.PathLike[str]) -> int:
    """Delete a folder so that it leaves its name at once (renamed aside, then deleted); return its bytes."""
    trash = _rename_aside(Path(path), "trash")
    size = directory_bytes(trash)
    shutil.rmtree(trash)
    return size


def directory_bytes(path: str | os.PathLike[str]) -> int:
    """The total size of the files under `path` (links not followed)."""
    return sum(os.lstat(Path(folder) / name).st_size
               for folder, _, names in os.walk(path) for name in names)


_WRITER = re.compile(r"(?P<pid>[0-9]+)(?:@(?P<host>[A-Za-z0-9-]+))?")  # `{pid}@{host}`, or `{pid}` alone


def _parse_temporary(name: str) -> tuple[str, int, str | None, str] | None:
    """(final name, writer pid, writer host or None for a name from before hosts, kind), or None if not ours."""
    if not (name.startswith(".") and name.endswith(".tmp")):
        return None
    parts = name[1:-len(".tmp")].rsplit(".", 3)
    if len(parts) != 4 or parts[3] not in ("new", "old", "trash"):
        return None
    writer = _WRITER.fullmatch(parts[1])
    if writer is None:
        return None
    return parts[0], int(writer["pid"]), writer["host"], parts[3]


def _is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """A killed process not yet reaped by its parent still answers os.kill: it has written its last byte."""
    try:
        return " Z" in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1][:3]
    except (OSError, IndexError):
        return False


def remove_stale_temporaries(directory: str | os.PathLike[str]) -> list[Path]:
    """Clean up after this host's writers that died, anywhere under `directory`; return the temporaries handled.

    A temporary whose writer's pid is no longer alive on this host is deleted, except an old folder renamed
    aside whose final name is now empty: that one is renamed back. A live writer's temporaries, another
    host's (its pids mean nothing here) and anything under a nested artifacts root (a subfolder holding
    its own `.lock`: another run's) are never touched. Names without a host are taken as this host's.
    """
    this_host, handled = host_tag(), []
    for folder, subfolders, names in os.walk(directory):
        subfolders[:] = [name for name in subfolders if not os.path.lexists(os.path.join(folder, name, ".lock"))]
        for name in [*subfolders, *names]:
            parsed = _parse_temporary(name)
            if parsed is None:
                continue
            final_name, pid, host, kind = parsed
            if name in subfolders:
                subfolders.remove(name)  # never walk into a temporary
            if host not in (None, this_host) or _is_alive(pid):
                continue
            temporary, final = Path(folder) / name, Path(folder) / final_name
            if kind == "old" and not final.exists():
                os.rename(temporary, final)
            elif temporary.is_dir() and not temporary.is_symlink():
                shutil.rmtree(temporary)
            else:
                temporary.unlink(missing_ok=True)
            handled.append(temporary)
    return handled


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write bytes atomically and return the final path (DiskFullError if there is no room)."""
    with atomic_path(path, bytes_needed=len(data)) as temporary:
        temporary.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 text atomically and return the final path."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], payload: Any) -> Path:
    """Write JSON (indented, keys sorted) atomically and return the final path."""
    return write_text(path, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def ensure_writable_directory(path: str | os.PathLike[str]) -> Path:
    """Create `path` if needed and prove it is writable, or raise a ValueError that says so."""
    directory = Path(path)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-check-"):
            pass
    except OSError as error:
        raise ValueError(
            f"artifacts directory {str(directory)!r} cannot be written ({error.strerror or error}); "
            "expected a directory this user can create files in (option --artifacts-dir)"
        ) from error
    return directory
