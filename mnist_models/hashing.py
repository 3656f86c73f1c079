"""Content hashes of files: SHA-256 of their bytes, computed once per process for each version of a file."""

from __future__ import annotations

import functools
import hashlib
import os


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """Return the hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes, hashed once per process for each version of the file.

    A version is the file's identity, size and modification and change times: a stage key, an output
    check and a run folder's manifest check that read the same file share one hash.
    """
    status = os.stat(path)
    return _versioned_sha256(str(path), status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns)


@functools.lru_cache(maxsize=8192)
def _versioned_sha256(path: str, inode: int, size: int, mtime_ns: int, ctime_ns: int) -> str:
    return sha256_file(path)
