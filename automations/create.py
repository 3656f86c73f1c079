"""Create or update the automation that notifies a webhook when `nightly-retrain` ends Failed or Crashed.

    make automation WEBHOOK_URL=https://hooks.example.com/...      # from the repository root

runs `python automations/create.py` with WEBHOOK_URL in its environment, against the server that
PREFECT_API_URL names. It saves the URL in the Webhook block `nightly-retrain-failure-webhook` (the URL
stays on the server, never in the repository), fills that block's id into the automation defined in
automations/nightly-retrain-failed.yaml, and creates the automation, or updates it when one of that
name exists, so running it again changes the URL without sending each failure twice. It checks first
that the watched deployment exists. Takes a few seconds.

`prefect automation create --from-file` cannot do this alone: an automation names its webhook block by
id, and that id exists only once the block is saved on the server.
"""

from __future__ import annotations

import os
import sys
import urllib.parse
from pathlib import Path

import yaml
from prefect.blocks.webhook import Webhook
from prefect.client.orchestration import get_client
from prefect.events.schemas.automations import AutomationCore
from prefect.exceptions import ObjectNotFound

from mnist_models.download import redact_url

AUTOMATION_FILE = Path(__file__).with_name("nightly-retrain-failed.yaml")
WEBHOOK_BLOCK = "nightly-retrain-failure-webhook"


def _webhook_url() -> str:
    """The webhook URL from the environment, checked to be an absolute http(s) URL."""
    url = os.environ.get("WEBHOOK_URL", "").strip()
    if not url:
        raise ValueError("WEBHOOK_URL is not set: run `make automation WEBHOOK_URL=https://...` "
                         "with the URL that should receive failure notifications")
    try:
        parsed = urllib.parse.urlsplit(url)
        hostname = parsed.hostname
    except ValueError:  # e.g. an unclosed IPv6 bracket
        parsed, hostname = None, None
    if parsed is None or parsed.scheme not in {"http", "https"} or not hostname:
        # The path and query of a webhook URL are its secret (a token): show scheme and host only.
        raise ValueError(f"WEBHOOK_URL must be an http:// or https:// URL with a host, got "
                         f"{redact_url(url, keep_path=False)!r}")
    return url


def _watched_deployment(definition: dict) -> str:
    """`flow/deployment` of the deployment whose runs the trigger's match_related selects."""
    names = {spec["prefect.resource.role"]: spec["prefect.resource.name"]
             for spec in definition["trigger"]["match_related"]}
    return f"{names['flow']}/{names['deployment']}"


def create_automation(webhook_url: str, automation_file: Path = AUTOMATION_FILE) -> AutomationCore:
    """Save the webhook block, then create or update the automation; return what was sent."""
    definition = yaml.safe_load(automation_file.read_text())
    deployment = _watched_deployment(definition)
    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(deployment)
        except ObjectNotFound:
            raise ValueError(f"deployment {deployment!r} not found on {redact_url(str(client.api_url))}: run "
                             "`prefect deploy --all` from the repository root first (docs/service.md)") from None

        webhook = Webhook(url=webhook_url, headers={"Content-Type": "application/json"})
        block_id = webhook.save(WEBHOOK_BLOCK, overwrite=True)
        for action in definition["actions"]:
            if action["type"] == "call-webhook":
                action["block_document_id"] = str(block_id)
        automation = AutomationCore.model_validate(definition)

        existing = client.read_automations_by_name(automation.name)
        if existing:
            client.update_automation(existing[0].id, automation)
            for duplicate in existing[1:]:  # left by hand-made copies; each would notify once more
                client.delete_automation(duplicate.id)
            verb, automation_id = "Updated", existing[0].id
        else:
            verb, automation_id = "Created", client.create_automation(automation)
    print(f"{verb} automation {automation.name!r} ({automation_id}): a run of {deployment} that ends "
          f"Failed or Crashed calls the webhook in block {WEBHOOK_BLOCK!r}")
    return automation


def main() -> int:
    try:
        create_automation(_webhook_url())
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
