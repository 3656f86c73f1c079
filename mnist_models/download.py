"""Fetch IDX files from an ordered list of mirrors and verify them on their uncompressed bytes."""

from __future__ import annotations

import hashlib
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mnist_models.idx import gunzip

SUPPORTED_SCHEMES = ("http", "https", "file")


class ChecksumError(ValueError):
    """A file's uncompressed bytes do not match the published checksum."""


class MirrorsExhaustedError(RuntimeError):
    """No mirror delivered a verified copy of a file."""


@dataclass(frozen=True)
class VerifiedFile:
    """A downloaded file whose uncompressed content matched its published MD5."""

    filename: str
    source: str
    compressed: bytes
    md5: str
    sha256: str


def normalize_mirror(mirror: str) -> str:
    """Return a mirror as a URL ending in '/', turning a local directory into a file:// URL."""
    mirror = str(mirror).strip()
    if not mirror:
        raise ValueError("empty mirror; expected an http(s):// URL, a file:// URL or a local directory")
    scheme = urllib.parse.urlsplit(mirror).scheme
    if scheme in ("", *"abcdefghijklmnopqrstuvwxyz"):  # a path (single letter: a Windows drive)
        path = Path(mirror).expanduser().resolve()
        if not path.is_dir():
            raise ValueError(f"mirror {mirror!r} is not an existing directory nor a URL")
        return path.as_uri() + "/"
    if scheme not in SUPPORTED_SCHEMES:
        raise ValueError(
            f"mirror {mirror!r} has unsupported scheme {scheme!r}; expected http://, https://, "
            "file:// or a local directory"
        )
    return mirror if mirror.endswith("/") else mirror + "/"


def verify_content(compressed: bytes, filename: str, expected_md5: str, source: str) -> VerifiedFile:
    """Decompress `compressed` and check its MD5, raising ChecksumError naming file, source and sums."""
    content = gunzip(compressed, name=f"{filename} from {source}")
    actual_md5 = hashlib.md5(content, usedforsecurity=False).hexdigest()
    if actual_md5 != expected_md5:
        raise ChecksumError(
            f"checksum mismatch for {filename} from {source}: MD5 of the uncompressed bytes is "
            f"{actual_md5}, expected {expected_md5}"
        )
    return VerifiedFile(filename, source, compressed, actual_md5, hashlib.sha256(content).hexdigest())


def _read_url(url: str, timeout: float) -> bytes:
    if url.startswith("file:"):
        path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path))
        return path.read_bytes()
    request = urllib.request.Request(url, headers={"User-Agent": "mnist-study/0.1"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read()


def _is_transient(error: Exception) -> bool:
    if isinstance(error, urllib.error.HTTPError):
        return error.code >= 500 or error.code == 429
    return isinstance(error, (urllib.error.URLError, TimeoutError, ConnectionError))


def fetch_verified(
    filename: str,
    expected_md5: str,
    mirrors: Sequence[str],
    *,
    attempts: int = 3,
    backoff_seconds: float = 1.0,
    timeout: float = 60.0,
    log: Callable[[str], None] = lambda message: None,
) -> VerifiedFile:
    """Try each mirror in order (with retries and exponential backoff on transient errors).

    Returns the first verified copy; raises MirrorsExhaustedError listing every attempt otherwise.
    """
    if not mirrors:
        raise ValueError(f"no mirror given for {filename}; expected at least one URL or directory")
    failures: list[str] = []
    for mirror in (normalize_mirror(mirror) for mirror in mirrors):
        url = urllib.parse.urljoin(mirror, filename)
        for attempt in range(1, attempts + 1):
            try:
                compressed = _read_url(url, timeout)
                verified = verify_content(compressed, filename, expected_md5, url)
                log(f"{filename}: verified from {url} ({len(compressed):,} bytes)")
                return verified
            except ValueError as error:  # checksum or gzip: the mirror serves bad content
                failures.append(f"{url}: {error}")
                log(f"{filename}: rejected {url}: {error}")
                break
            except Exception as error:  # noqa: BLE001 - any I/O failure moves on to the next try
                reason = f"{type(error).__name__}: {error}"
                if attempt < attempts and _is_transient(error):
                    delay = backoff_seconds * 2 ** (attempt - 1)
                    log(f"{filename}: {url} failed ({reason}); retry {attempt + 1}/{attempts} in {delay:g} s")
                    time.sleep(delay)
                    continue
                failures.append(f"{url}: {reason}")
                log(f"{filename}: {url} failed ({reason}); trying the next mirror")
                break
    raise MirrorsExhaustedError(
        f"could not get a verified {filename} from any mirror; tried:\n  " + "\n  ".join(failures)
    )
