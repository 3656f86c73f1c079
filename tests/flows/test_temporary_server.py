"""The study's temporary Prefect server: started without the server in the study's process, or one clear error."""

import os
import subprocess
import sys

from tests.prefect_harness import REPOSITORY

START = """
import sys
from flows._runtime import TemporaryServer
import httpx
server = TemporaryServer()
try:
    server.start(timeout=120)
    print(httpx.get(server.api_url + "/health").status_code)
    print(sorted(name for name in sys.modules if name.startswith("prefect.server.api")))
finally:
    server.stop()
print(server.process)
"""


def python(code: str, tmp_path, **environment: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPOSITORY, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PREFECT_HOME": str(tmp_path / "home"), **environment})


def test_the_server_answers_and_only_its_own_process_loads_it(tmp_path):
    """Prefect's own launcher imported the whole server into the study's process first (4.6 s on 2 cores)."""
    completed = python(START, tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.split("\n")[:3] == ["200", "[]", "None"], completed.stdout


def test_a_server_that_cannot_start_is_one_error_with_its_exit_status(tmp_path):
    """A database it cannot create: uvicorn exits; the start is retried on other ports three times, then refused."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the database's folder should be")
    completed = python(START, tmp_path, PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{blocker}/prefect.db")
    assert completed.returncode == 1
    last = completed.stderr.strip().splitlines()[-1]
    assert last.startswith("RuntimeError: the temporary Prefect server at http://127.0.0.1:"), completed.stderr[-3000:]
    assert "did not answer within 120 s (it exited with status" in last
