"""Tests for mnist_models.download: checksums on uncompressed bytes, mirror fall-through, URL checks,
network faults, size limits (a decompression bomb too), and credentials in mirror URLs kept out of messages.

HTTP mirrors are real `ThreadingHTTPServer`s on 127.0.0.1, started by the tests themselves; the
faulty ones cut connections, reset them, stall or send too much, for real.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import io
import json
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mnist_models.datasets import DATASETS
from mnist_models.download import (
    ChecksumError,
    MirrorsExhaustedError,
    DownloadedFile,
    download_verified,
    normalize_mirror,
    redact_url,
    verify_content,
)
from mnist_models.idx import MAX_UNCOMPRESSED_BYTES
from tests.mnist_models.test_atomic_files import run_with_file_size_limit

LABELS = "t10k-labels-idx1-ubyte.gz"
LABELS_MD5 = "27ae3e4e09519cfbb04c329615203637"  # from ../shared/datasets/README.md
LABELS_SHA256 = "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"


@pytest.fixture(scope="module")
def good_labels(mnist_dir) -> bytes:
    """The genuine compressed test-label file."""
    return (mnist_dir / LABELS).read_bytes()


@pytest.fixture(scope="module")
def corrupted_labels(good_labels) -> bytes:
    """A well-formed gzip of the test labels with one label changed: only the checksum can tell."""
    content = bytearray(gzip.decompress(good_labels))
    content[8] = (content[8] + 1) % 10
    return gzip.compress(bytes(content))


@pytest.fixture
def fetch(tmp_path) -> Callable[..., DownloadedFile]:
    """download_verified into a file of its own under tmp_path (never a mirror's folder)."""
    def fetch(filename: str, expected_md5: str, mirrors: list[str], **options) -> DownloadedFile:
        return download_verified(filename, expected_md5, mirrors, tmp_path / "downloaded" / filename, **options)
    return fetch


def _send(handler: BaseHTTPRequestHandler, body: bytes, length: int | None = None) -> None:
    """Answer 200 with `body`, announcing `length` bytes (default: the body's; -1: no Content-Length)."""
    length = len(body) if length is None else length
    handler.send_response(200)
    handler.send_header("Content-Type", "application/gzip")
    if length >= 0:
        handler.send_header("Content-Length", str(length))
    handler.end_headers()  # without a length, HTTP/1.0 ends the body by closing the connection
    handler.wfile.write(body)


Route = bytes | int | Callable[[BaseHTTPRequestHandler], None]


@contextlib.contextmanager
def _serve(routes: dict[str, Route]) -> Iterator[tuple[str, list[str]]]:
    """Serve `routes` (path -> body, HTTP status, or a function that answers) on 127.0.0.1.

    Yields the base URL and the log of requested paths.
    """
    requested: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the name http.server dispatches on
            requested.append(self.path)
            body = routes.get(self.path, 404)
            if isinstance(body, int):
                self.send_error(body)
            elif isinstance(body, bytes):
                _send(self, body)
            else:
                try:
                    body(self)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up on a stalled answer
                    pass

        def log_message(self, format, *args):  # keep the test output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requested
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _faulty_once(body: bytes, fault: str) -> Callable[[BaseHTTPRequestHandler], None]:
    """An answer that fails the first time (`fault`: closed, reset or stall), then sends `body` whole."""
    calls = []

    def answer(handler: BaseHTTPRequestHandler) -> None:
        calls.append(handler.path)
        if len(calls) > 1:
            _send(handler, body)
        elif fault == "stall":
            time.sleep(1.0)  # longer than the client's timeout
            _send(handler, body)
        else:
            _send(handler, body[: len(body) // 2], length=len(body))  # announce all, send half
            handler.wfile.flush()
            if fault == "reset":  # close with an RST instead of a FIN
                handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                handler.wfile.close()
                handler.rfile.close()
                handler.connection.close()
                handler.wfile = io.BytesIO()  # http.server flushes it after do_GET
            handler.close_connection = True

    return answer


# --------------------------------------------------------------------------- verify_content


def test_checksum_mismatch_names_file_source_expected_and_actual(corrupted_labels):
    actual = hashlib.md5(gzip.decompress(corrupted_labels)).hexdigest()

    with pytest.raises(ChecksumError) as caught:
        verify_content(corrupted_labels, LABELS, LABELS_MD5, "https://mirror.example/mnist/t10k")

    message = str(caught.value)
    assert LABELS in message
    assert "https://mirror.example/mnist/t10k" in message
    assert f"expected {LABELS_MD5}" in message
    assert actual in message and actual != LABELS_MD5
    assert isinstance(caught.value, ValueError)  # callers may catch it as bad input


def test_verified_file_records_uncompressed_hashes(good_labels):
    verified = verify_content(good_labels, LABELS, LABELS_MD5, "here")

    assert verified.md5 == LABELS_MD5
    assert verified.sha256 == LABELS_SHA256
    assert verified.compressed == good_labels


def test_recompressed_gzip_with_same_content_is_accepted(good_labels):
    recompressed = gzip.compress(gzip.decompress(good_labels), compresslevel=1, mtime=0)
    assert recompressed != good_labels

    verified = verify_content(recompressed, LABELS, LABELS_MD5, "re-made")

    assert verified.md5 == LABELS_MD5
    assert verified.compressed == recompressed


def test_truncated_download_is_rejected_as_bad_gzip(good_labels):
    with pytest.raises(ValueError, match=f"{LABELS} from somewhere is not a complete gzip file"):
        verify_content(good_labels[:1000], LABELS, LABELS_MD5, "somewhere")


def test_the_shared_files_match_the_published_checksums(mnist_dir):
    for filename, md5 in DATASETS["mnist"].md5.items():
        assert verify_content((mnist_dir / filename).read_bytes(), filename, md5, str(mnist_dir)).md5 == md5


# --------------------------------------------------------------------------- normalize_mirror


def test_local_directory_becomes_file_url(tmp_path):
    assert normalize_mirror(str(tmp_path)) == tmp_path.resolve().as_uri() + "/"


@pytest.mark.parametrize(
    ("mirror", "expected"),
    [("https://example.org/mnist", "https://example.org/mnist/"),
     ("http://127.0.0.1:8000/data/", "http://127.0.0.1:8000/data/"),
     ("  file:///srv/mnist  ", "file:///srv/mnist/")],
)
def test_urls_get_a_trailing_slash(mirror, expected):
    assert normalize_mirror(mirror) == expected


@pytest.mark.parametrize("mirror", ["ftp://x/", "s3://bucket/mnist/", "gopher://old.example/"])
def test_unsupported_scheme_is_rejected(mirror):
    scheme = mirror.split(":")[0]
    with pytest.raises(ValueError, match=f"unsupported scheme '{scheme}'; expected http://, https://, file://"):
        normalize_mirror(mirror)


def test_unsupported_scheme_is_rejected_before_any_download(fetch):
    with pytest.raises(ValueError, match="unsupported scheme 'ftp'"):
        fetch(LABELS, LABELS_MD5, ["ftp://x/"], attempts=1, backoff_seconds=0)


@pytest.mark.parametrize("mirror", ["", "   "])
def test_empty_mirror_is_rejected(mirror):
    with pytest.raises(ValueError, match="empty mirror"):
        normalize_mirror(mirror)


@pytest.mark.parametrize("mirror", ["http:/x", "https:///mnist/", "http://user:pw@/mnist/", "https://:8000/"])
def test_a_web_mirror_without_a_host_is_rejected(mirror):
    with pytest.raises(ValueError, match="names no host; expected an http\\(s\\) URL with a host"):
        normalize_mirror(mirror)


def test_a_rejected_mirror_is_named_without_its_password():
    with pytest.raises(ValueError) as caught:
        normalize_mirror("ftp://reader:s3cret-pass@mirror.example/mnist/")
    assert "s3cret-pass" not in str(caught.value)
    assert "mirror 'ftp://mirror.example/mnist/' has unsupported scheme 'ftp'" in str(caught.value)


@pytest.mark.parametrize(
    ("url", "keep_path", "shown"),
    [("https://reader:s3cret@mirror.example:8443/mnist/t10k.gz", True, "https://mirror.example:8443/mnist/t10k.gz"),
     ("https://mirror.example/mnist/?token=s3cret", True, "https://mirror.example/mnist/?…"),
     ("https://mirror.example/mnist/t10k.gz", True, "https://mirror.example/mnist/t10k.gz"),
     ("/data/mnist@home/", True, "/data/mnist@home/"),
     ("https://hooks.example.com/services/T0/s3cret", False, "https://hooks.example.com/…"),
     ("https://user:s3cret@hooks.example.com/x?key=s3cret", False, "https://hooks.example.com/…"),
     ("hooks.example.com/services/s3cret", False, "…"),
     ("http://[::1/s3cret", True, "…")],
)
def test_urls_are_shown_without_their_secrets(url, keep_path, shown):
    assert redact_url(url, keep_path=keep_path) == shown


def test_missing_directory_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="is not an existing directory nor a URL"):
        normalize_mirror(str(tmp_path / "absent"))


def test_no_mirrors_is_rejected(fetch):
    with pytest.raises(ValueError, match=f"no mirror given for {LABELS}"):
        fetch(LABELS, LABELS_MD5, [])


# --------------------------------------------------------------------------- download_verified


def test_local_directory_mirror(fetch, mnist_dir, good_labels):
    verified = fetch(LABELS, LABELS_MD5, [str(mnist_dir)], attempts=1, backoff_seconds=0)

    assert verified.source == mnist_dir.resolve().as_uri() + "/" + LABELS
    assert verified.md5 == LABELS_MD5
    assert verified.path.read_bytes() == good_labels


def test_file_url_mirror(fetch, mnist_dir, good_labels):
    verified = fetch(LABELS, LABELS_MD5, [mnist_dir.as_uri()], attempts=1, backoff_seconds=0)

    assert verified.source.startswith("file://") and verified.source.endswith(LABELS)
    assert verified.path.read_bytes() == good_labels


def test_directory_with_spaces_in_its_name(fetch, tmp_path, good_labels):
    mirror = tmp_path / "my mirror"
    mirror.mkdir()
    (mirror / LABELS).write_bytes(good_labels)

    assert fetch(LABELS, LABELS_MD5, [str(mirror)], attempts=1).md5 == LABELS_MD5


def test_recompressed_copy_in_a_mirror_is_accepted(fetch, tmp_path, good_labels):
    (tmp_path / LABELS).write_bytes(gzip.compress(gzip.decompress(good_labels), compresslevel=9, mtime=1))

    assert fetch(LABELS, LABELS_MD5, [str(tmp_path)], attempts=1).md5 == LABELS_MD5


def test_corrupted_first_mirror_falls_through_to_the_second(fetch, good_labels, corrupted_labels):
    routes = {f"/bad/{LABELS}": corrupted_labels, f"/good/{LABELS}": good_labels}
    messages: list[str] = []
    with _serve(routes) as (base, requested):
        verified = fetch(
            LABELS, LABELS_MD5, [f"{base}/bad/", f"{base}/good/"], backoff_seconds=0, log=messages.append
        )

    assert verified.source == f"{base}/good/{LABELS}"
    assert verified.md5 == LABELS_MD5
    assert verified.path.read_bytes() == good_labels
    # Bad content is not retried: one request to each mirror.
    assert requested == [f"/bad/{LABELS}", f"/good/{LABELS}"]
    assert any(f"rejected {base}/bad/{LABELS}" in message and "checksum mismatch" in message for message in messages)


def test_missing_file_on_first_server_falls_through_to_second_server(fetch, good_labels):
    with _serve({}) as (empty, _), _serve({f"/mnist/{LABELS}": good_labels}) as (full, _):
        verified = fetch(LABELS, LABELS_MD5, [empty, f"{full}/mnist"], backoff_seconds=0)

    assert verified.source == f"{full}/mnist/{LABELS}"


def test_transient_server_error_is_retried_on_the_same_mirror(fetch, good_labels):
    responses = iter([503, good_labels])

    class Flaky(dict):
        def get(self, key, default=None):
            return next(responses)

    with _serve(Flaky()) as (base, requested):
        verified = fetch(LABELS, LABELS_MD5, [base], attempts=2, backoff_seconds=0)

    assert verified.md5 == LABELS_MD5
    assert requested == [f"/{LABELS}", f"/{LABELS}"]


def test_all_mirrors_failing_lists_every_url_tried(fetch, corrupted_labels, closed_port):
    port = closed_port
    unreachable = [f"http://127.0.0.1:{port}/first/", f"http://127.0.0.1:{port}/second/"]
    with _serve({f"/{LABELS}": corrupted_labels}) as (bad, _):
        with pytest.raises(MirrorsExhaustedError) as caught:
            fetch(LABELS, LABELS_MD5, [*unreachable, bad], attempts=2, backoff_seconds=0, timeout=5)

    message = str(caught.value)
    assert message.startswith(f"could not get a verified {LABELS} from any mirror; tried:")
    for mirror in unreachable:
        assert f"{mirror}{LABELS}: URLError" in message
    assert f"{bad}/{LABELS}: checksum mismatch" in message


def test_all_mirrors_unreachable(fetch, tmp_path, closed_port):
    port = closed_port
    mirrors = [f"http://127.0.0.1:{port}/a/", f"http://127.0.0.1:{port}/b", str(tmp_path)]

    with pytest.raises(MirrorsExhaustedError) as caught:
        fetch(LABELS, LABELS_MD5, mirrors, attempts=3, backoff_seconds=0, timeout=5)

    lines = str(caught.value).splitlines()[1:]
    assert [line.strip().split(": ")[0] for line in lines] == [
        f"http://127.0.0.1:{port}/a/{LABELS}",
        f"http://127.0.0.1:{port}/b/{LABELS}",
        f"{tmp_path.resolve().as_uri()}/{LABELS}",
    ]
    assert "FileNotFoundError" in lines[-1]


def _requiring_login(body: bytes, user: str, password: str) -> Callable[[BaseHTTPRequestHandler], None]:
    """An answer that sends `body` only to a request with these HTTP Basic credentials, else 401."""
    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def answer(handler: BaseHTTPRequestHandler) -> None:
        if handler.headers.get("Authorization") == expected:
            _send(handler, body)
        else:
            handler.send_error(401)

    return answer


def test_credentials_in_a_mirror_url_log_in_and_never_appear_in_logs(fetch, good_labels):
    messages: list[str] = []
    with _serve({f"/{LABELS}": _requiring_login(good_labels, "reader", "s3cret-pass")}) as (base, _):
        with_login = base.replace("http://", "http://reader:s3cret-pass@")
        verified = fetch(LABELS, LABELS_MD5, [with_login], attempts=1, log=messages.append)

    assert verified.md5 == LABELS_MD5
    assert verified.source == f"{base}/{LABELS}"
    assert messages == [f"{LABELS}: verified from {base}/{LABELS} ({len(good_labels):,} bytes)"]


def test_a_failing_mirror_with_credentials_is_reported_without_them(fetch, corrupted_labels, closed_port):
    messages: list[str] = []
    port = closed_port
    with _serve({f"/{LABELS}": _requiring_login(corrupted_labels, "reader", "s3cret-pass")}) as (base, _):
        mirrors = [base.replace("http://", "http://reader:wrong-pass@"),  # 401
                   base.replace("http://", "http://reader:s3cret-pass@"),  # checksum mismatch
                   f"http://reader:s3cret-pass@127.0.0.1:{port}/"]  # refused
        with pytest.raises(MirrorsExhaustedError) as caught:
            fetch(LABELS, LABELS_MD5, mirrors, attempts=1, timeout=5, log=messages.append)

    text = str(caught.value) + "\n".join(messages)
    assert "s3cret-pass" not in text and "wrong-pass" not in text and "reader" not in text
    assert f"{base}/{LABELS}: HTTPError: HTTP Error 401" in str(caught.value)
    assert f"{base}/{LABELS}: checksum mismatch for {LABELS} from {base}/{LABELS}" in str(caught.value)
    assert f"http://127.0.0.1:{port}/{LABELS}: URLError" in str(caught.value)


# --------------------------------------------------------------------------- network faults and limits


@pytest.mark.parametrize("fault", ["closed", "reset", "stall"])
def test_a_connection_cut_once_is_retried_on_the_same_mirror(fetch, good_labels, fault):
    messages: list[str] = []
    with _serve({f"/{LABELS}": _faulty_once(good_labels, fault)}) as (base, requested):
        verified = fetch(LABELS, LABELS_MD5, [base, "http://127.0.0.1:9/never-asked/"], attempts=3,
                                  backoff_seconds=0, timeout=0.5, log=messages.append)

    assert verified.source == f"{base}/{LABELS}"
    assert verified.path.read_bytes() == good_labels
    assert requested == [f"/{LABELS}", f"/{LABELS}"]
    (retry,) = [message for message in messages if "retry 2/3" in message]
    assert retry.startswith(f"{LABELS}: {base}/{LABELS} failed (")
    size = len(good_labels)
    expected_reason = {
        "closed": f"TruncatedBodyError: connection closed after {size // 2:,} of {size:,} bytes",
        "reset": "ConnectionResetError: [Errno 104] Connection reset by peer",
        "stall": "timed out",
    }[fault]
    assert expected_reason in retry


def test_a_mirror_that_keeps_cutting_the_connection_is_left_for_the_next(fetch, good_labels):
    def always_half(handler):
        _send(handler, good_labels[:100], length=len(good_labels))

    with _serve({f"/cut/{LABELS}": always_half, f"/good/{LABELS}": good_labels}) as (base, requested):
        verified = fetch(LABELS, LABELS_MD5, [f"{base}/cut/", f"{base}/good/"], attempts=2,
                                  backoff_seconds=0)

    assert verified.source == f"{base}/good/{LABELS}"
    assert requested == [f"/cut/{LABELS}", f"/cut/{LABELS}", f"/good/{LABELS}"]


@pytest.mark.parametrize("announced", [True, False], ids=["content-length", "no-length"])
def test_a_body_larger_than_the_limit_fails_without_a_retry(fetch, good_labels, announced):
    def answer(handler):
        _send(handler, good_labels, length=None if announced else -1)

    with _serve({f"/{LABELS}": answer}) as (base, requested):
        with pytest.raises(MirrorsExhaustedError) as caught:
            fetch(LABELS, LABELS_MD5, [base], attempts=3, backoff_seconds=0, max_bytes=1000)

    message = str(caught.value)
    assert f"{base}/{LABELS}: {LABELS} from {base}/{LABELS} is larger than the limit of 1,000 bytes" in message
    assert (f"Content-Length {len(good_labels):,}" if announced else "more than 1,000 bytes received") in message
    assert requested == [f"/{LABELS}"]


# A child that downloads from a local mirror and reports the error and its own peak memory growth.
DOWNLOAD_AND_MEASURE = """
    import json, resource, sys
    from mnist_models.download import download_verified
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        download_verified(sys.argv[1], "0" * 32, [sys.argv[2]], sys.argv[3], attempts=1)
        error = None
    except Exception as caught:
        error = f"{type(caught).__name__}: {caught}"
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print(json.dumps({"error": error, "grown_mib": grown_kib / 1024}))
"""


def test_a_decompression_bomb_in_a_mirror_is_rejected_without_inflating_it_in_memory(tmp_path):
    mirror, inflated = tmp_path / "mirror", 200 * 2**20
    mirror.mkdir()
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # 200 MiB of zeros, gzipped to about 200 KB
    with open(mirror / LABELS, "wb") as bomb:
        for _ in range(inflated // 2**20):
            bomb.write(compressor.compress(bytes(2**20)))
        bomb.write(compressor.flush())
    assert (mirror / LABELS).stat().st_size < 2**20

    child = subprocess.run([sys.executable, "-c", textwrap.dedent(DOWNLOAD_AND_MEASURE), LABELS, str(mirror),
                            str(tmp_path / "raw" / LABELS)], capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr
    report = json.loads(child.stdout.splitlines()[-1])

    assert report["error"].startswith(f"MirrorsExhaustedError: could not get a verified {LABELS} from any mirror")
    assert f"{LABELS} from {mirror.resolve().as_uri()}/{LABELS} inflates to more than {MAX_UNCOMPRESSED_BYTES:,} " \
           "bytes" in report["error"]
    assert report["grown_mib"] < 32, f"peak memory grew by {report['grown_mib']:.0f} MiB while checking the file"
    assert not (tmp_path / "raw" / LABELS).exists()


def test_download_verified_stores_the_file_and_returns_its_path(tmp_path, good_labels):
    destination = tmp_path / "raw" / LABELS
    with _serve({f"/{LABELS}": _faulty_once(good_labels, "closed")}) as (base, _):
        downloaded = download_verified(LABELS, LABELS_MD5, [base], destination, backoff_seconds=0)

    assert downloaded.path == destination and downloaded.source == f"{base}/{LABELS}"
    assert (downloaded.md5, downloaded.sha256) == (LABELS_MD5, LABELS_SHA256)
    assert destination.read_bytes() == good_labels
    assert sorted(path.name for path in destination.parent.iterdir()) == [LABELS]


def test_a_failed_download_keeps_the_previous_file_and_leaves_no_partial_one(tmp_path, corrupted_labels):
    destination = tmp_path / LABELS
    destination.write_bytes(b"previous")
    with _serve({f"/{LABELS}": corrupted_labels}) as (base, _):
        with pytest.raises(MirrorsExhaustedError):
            download_verified(LABELS, LABELS_MD5, [base], destination, backoff_seconds=0)

    assert destination.read_bytes() == b"previous"
    assert [path.name for path in tmp_path.iterdir()] == [LABELS]


def test_a_full_disk_stops_the_download_at_once_naming_the_destination(tmp_path, mnist_dir):
    script = """
        import sys
        from mnist_models.download import download_verified
        from mnist_models.atomic_files import DiskFullError
        try:
            download_verified(sys.argv[1], sys.argv[2], [sys.argv[3], sys.argv[3]], sys.argv[4], backoff_seconds=0)
        except DiskFullError as error:
            sys.exit(f"DiskFullError: {error}")
    """
    destination = tmp_path / LABELS
    child = run_with_file_size_limit(script, 1000, LABELS, LABELS_MD5, str(mnist_dir), str(destination))

    assert child.returncode == 1, child.stdout + child.stderr
    assert f"DiskFullError: cannot write {str(destination)!r}" in child.stderr
    assert list(tmp_path.iterdir()) == []
