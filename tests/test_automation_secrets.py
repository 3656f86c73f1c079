"""automations/create.py, run as `make automation` runs it: a wrong WEBHOOK_URL is refused without echoing its secret."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
TOKEN = "T0KEN-8f3a9c2e71"  # what a Slack-style webhook URL carries in its path


@pytest.mark.parametrize(("url", "shown"), [
    (f"ftp://hooks.example.com/services/T000/B000/{TOKEN}?key={TOKEN}", "'ftp://hooks.example.com/…'"),
    (f"https://bot:{TOKEN}@/services/{TOKEN}", "'…'"),  # credentials, but no host
    (f"hooks.example.com/services/{TOKEN}", "'…'"),  # no scheme
    (f"https://[hooks.example.com/services/{TOKEN}", "'…'"),  # not even parseable
])
def test_a_wrong_webhook_url_is_refused_without_its_token(url, shown):
    environment = {**os.environ, "WEBHOOK_URL": url}
    environment.pop("PREFECT_API_URL", None)  # refused before any server is asked
    child = subprocess.run([sys.executable, "automations/create.py"], cwd=REPOSITORY, env=environment,
                           capture_output=True, text=True, timeout=120)

    assert child.returncode == 1
    assert TOKEN not in child.stdout + child.stderr
    assert child.stderr.splitlines()[-1] == (
        f"error: WEBHOOK_URL must be an http:// or https:// URL with a host, got {shown}")
