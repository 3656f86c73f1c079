"""Fetch IDX files from an ordered list of mirrors and verify them on their uncompressed bytes.

A body is streamed to a file in chunks, up to a size limit. Network faults (refused or reset
connections, timeouts, a body cut short, HTTP 5xx/429) are retried on the same mirror with
exponential backoff, then the next mirror is tried; bad content (checksum, gzip, too large) and
HTTP 404 move on to the next mirror at once.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import io
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from mnist_models.atomic_files import atomic_path, is_disk_full
from mnist_models.idx import iter_gunzip

SUPPORTED_SCHEMES = ("http", "https", "file")
DEFAULT_MAX_BYTES = 64 * 2**20  # the largest MNIST-like file (train images) is under 10 MB compressed
CHUNK_BYTES = 2**20


class ChecksumError(ValueError):
    """A file's uncompressed bytes do not match the published checksum."""


class MirrorsExhaustedError(RuntimeError):
    """No mirror delivered a verified copy of a file."""


class DownloadTooLargeError(ValueError):
    """A mirror sends more bytes than the size limit allows (bad content: not retried)."""


class TruncatedBodyError(ConnectionError):
    """The connection ended before the whole body arrived (a network fault: retried)."""


@dataclass(frozen=True)
class VerifiedFile:
    """A downloaded file whose uncompressed content matched its published MD5."""

    filename: str
    source: str
    compressed: bytes
    md5: str
    sha256: str


@dataclass(frozen=True)
class DownloadedFile:
    """A verified file stored on disk: where it is, where it came from, its uncompressed hashes."""

    filename: str
    source: str
    path: Path
    md5: str
    sha256: str


def redact_url(url: str, keep_path: bool = True) -> str:
    """`url` as it may be shown: never its user name, password or query; with keep_path=False, scheme and host alone."""
    try:
        parts = urllib.parse.urlsplit(str(url))
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return "…"
    host = parts.netloc.rpartition("@")[2]
    if not keep_path:
        return f"{parts.scheme}://{host}/…" if parts.scheme and host else "…"
    if "@" not in parts.netloc and not parts.query:
        return str(url)
    return urllib.parse.urlunsplit(parts._replace(netloc=host, query="…" if parts.query else ""))


def normalize_mirror(mirror: str) -> str:
    """Return a mirror as a URL ending in '/', turning a local directory into a file:// URL."""
    mirror = str(mirror).strip()
    if not mirror:
        raise ValueError("empty mirror; expected an http(s):// URL, a file:// URL or a local directory")
    parts = urllib.parse.urlsplit(mirror)
    if parts.scheme in ("", *"abcdefghijklmnopqrstuvwxyz"):  # a path (single letter: a Windows drive)
        path = Path(mirror).expanduser().resolve()
        if not path.is_dir():
            raise ValueError(f"mirror {mirror!r} is not an existing directory nor a URL")
        return path.as_uri() + "/"
    if parts.scheme not in SUPPORTED_SCHEMES:
        raise ValueError(
            f"mirror {redact_url(mirror)!r} has unsupported scheme {parts.scheme!r}; expected http://, https://, "
            "file:// or a local directory"
        )
    if parts.scheme in ("http", "https") and not parts.hostname:
        raise ValueError(f"mirror {redact_url(mirror)!r} names no host; expected an http(s) URL with a host, "
                         "such as https://example.org/mnist/")
    return mirror if mirror.endswith("/") else mirror + "/"


def verify_content(compressed: bytes, filename: str, expected_md5: str, source: str) -> VerifiedFile:
    """Inflate `compressed` chunk by chunk (capped) and check its MD5; ChecksumError names file, source and sums."""
    md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    for chunk in iter_gunzip(io.BytesIO(compressed), name=f"{filename} from {source}"):
        md5.update(chunk)
        sha256.update(chunk)
    if md5.hexdigest() != expected_md5:
        raise ChecksumError(
            f"checksum mismatch for {filename} from {source}: MD5 of the uncompressed bytes is "
            f"{md5.hexdigest()}, expected {expected_md5}"
        )
    return VerifiedFile(filename, source, compressed, md5.hexdigest(), sha256.hexdigest())


@contextlib.contextmanager
def _open_url(url: str, timeout: float) -> Iterator[tuple[BinaryIO, int | None]]:
    """Yield the body of `url` as a stream and its announced length (None if not announced)."""
    if url.startswith("file:"):
        path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path))
        with open(path, "rb") as stream:
            yield stream, os.fstat(stream.fileno()).st_size
        return
    # Credentials in the URL go in a header that no redirect carries on, and no urllib error text can echo.
    parts = urllib.parse.urlsplit(url)
    without_credentials = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    request = urllib.request.Request(without_credentials, headers={"User-Agent": "mnist-study/0.1"})
    if parts.username is not None:
        credentials = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        request.add_unredirected_header("Authorization", "Basic " + base64.b64encode(credentials.encode()).decode())
    with urllib.request.urlopen(request, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        yield response, int(length) if length and length.isdigit() else None


def _too_large(filename: str, url: str, max_bytes: int, size: str) -> DownloadTooLargeError:
    return DownloadTooLargeError(
        f"{filename} from {url} is larger than the limit of {max_bytes:,} bytes ({size}); expected a "
        "file below it: this mirror serves something else, or raise max_bytes if the file really is that large"
    )


def _download(url: str, filename: str, target: Path, timeout: float, max_bytes: int, shown: str) -> int:
    """Stream `url` (`shown` in messages) into `target` in chunks, at most `max_bytes`; return the bytes received."""
    with _open_url(url, timeout) as (stream, announced), open(target, "wb") as sink:
        if announced is not None and announced > max_bytes:
            raise _too_large(filename, shown, max_bytes, f"Content-Length {announced:,}")
        received = 0
        while chunk := stream.read(CHUNK_BYTES):
            received += len(chunk)
            if received > max_bytes:
                raise _too_large(filename, shown, max_bytes, f"more than {max_bytes:,} bytes received")
            try:
                sink.write(chunk)
            except OSError as error:
                error.bytes_needed = announced  # the space the whole file needs, for the caller's message
                raise
    if announced is not None and received < announced:
        # http.client returns a short body silently when the server closes early.
        raise TruncatedBodyError(f"connection closed after {received:,} of {announced:,} bytes")
    return received


def _is_transient(error: Exception) -> bool:
    if isinstance(error, urllib.error.HTTPError):
        return error.code >= 500 or error.code == 429
    return isinstance(error, (urllib.error.URLError, TimeoutError, ConnectionError, http.client.IncompleteRead))


def _fetch_into(
    target: Path, filename: str, expected_md5: str, mirrors: Sequence[str], *,
    attempts: int, backoff_seconds: float, timeout: float, max_bytes: int, log: Callable[[str], None],
) -> VerifiedFile:
    """Download `filename` into `target` from the first mirror that serves a verified copy."""
    if not mirrors:
        raise ValueError(f"no mirror given for {filename}; expected at least one URL or directory")
    failures: list[str] = []
    for mirror in (normalize_mirror(mirror) for mirror in mirrors):
        url = urllib.parse.urljoin(mirror, filename)
        shown = redact_url(url)  # the name in messages and logs: no user name or password
        for attempt in range(1, attempts + 1):
            try:
                size = _download(url, filename, target, timeout, max_bytes, shown)
                verified = verify_content(target.read_bytes(), filename, expected_md5, shown)
                log(f"{filename}: verified from {shown} ({size:,} bytes)")
                return verified
            except ValueError as error:  # checksum, gzip or size: the mirror serves bad content
                failures.append(f"{shown}: {error}")
                log(f"{filename}: rejected {shown}: {error}")
                break
            except Exception as error:  # noqa: BLE001 - any I/O failure moves on to the next try
                if is_disk_full(error):
                    raise  # no mirror can help; the caller names the file
                reason = f"{type(error).__name__}: {error}"
                if attempt < attempts and _is_transient(error):
                    delay = backoff_seconds * 2 ** (attempt - 1)
                    log(f"{filename}: {shown} failed ({reason}); retry {attempt + 1}/{attempts} in {delay:g} s")
                    time.sleep(delay)
                    continue
                failures.append(f"{shown}: {reason}")
                log(f"{filename}: {shown} failed ({reason}); trying the next mirror")
                break
    raise MirrorsExhaustedError(
        f"could not get a verified {filename} from any mirror; tried:\n  " + "\n  ".join(failures)
    )


def download_verified(
    filename: str,
    expected_md5: str,
    mirrors: Sequence[str],
    destination: str | os.PathLike[str],
    *,
    attempts: int = 3,
    backoff_seconds: float = 1.0,
    timeout: float = 60.0,
    max_bytes: int = DEFAULT_MAX_BYTES,
    log: Callable[[str], None] = lambda message: None,
) -> DownloadedFile:
    """Try each mirror in order (with retries and exponential backoff on transient errors); store the first
    verified copy at `destination` (atomically) and return where it is.

    Raises MirrorsExhaustedError listing every attempt when no mirror serves a verified copy. A full disk
    raises DiskFullError naming `destination`; a failure leaves no partial file there.
    """
    with atomic_path(destination) as temporary:
        verified = _fetch_into(temporary, filename, expected_md5, mirrors, attempts=attempts,
                               backoff_seconds=backoff_seconds, timeout=timeout, max_bytes=max_bytes, log=log)
    return DownloadedFile(filename, verified.source, Path(destination), verified.md5, verified.sha256)
