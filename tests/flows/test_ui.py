"""The Prefect UI in headless Chromium against a real `prefect server start`: what a user sees and submits there.

One server for the module, prefect.yaml deployed as in tests/flows/test_deployment.py. The run form of the
quick-check deployment, submitted untouched or with only the profile changed, must run that profile's settings
(read back from the flow run the form created, resolved as the flow resolves it); the study-report artifact
must show every figure of the report. Both UIs the server ships are driven: V2 (its default, under /v2) and V1.
About 60 s on 2 cores.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from prefect import flow
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from mnist_models import planning
from mnist_models.config import StudyConfig
from mnist_models.layout import ArtifactsLayout
from mnist_models.report import ReportContext, write_report
from tasks.publishing import publish_artifacts
from tests.browser import CHROMIUM, CHROMIUM_ARGS
from tests.mnist_models.test_report import FIGURE_NAMES, SETTINGS, synthetic_tables
from tests.mnist_models.test_report_browser import _render_figures
from tests.prefect_harness import PrefectServer, free_port

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is not installed (CI installs Debian's chromium)"),
]

UIS = {"v2": "/v2", "v1": ""}  # each UI's path prefix on the server
IMAGE_TIMEOUT = 30  # seconds for the artifact's images to arrive and decode
# The figures a page shows, without the hidden buffers of V2's code editor (`<img aria-hidden>`, no source).
_IMAGES = """() => {
  const images = Array.from(document.images).filter(image => image.getAttribute("aria-hidden") !== "true");
  return images.map(image => ({loaded: image.complete && image.naturalWidth > 0, source: image.src.slice(0, 40)}));
}"""


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[PrefectServer]:
    """A real server on a free port, its UI pointed at its own API (by default the UI asks port 4200), deployed."""
    port = free_port()
    started = PrefectServer(tmp_path_factory.mktemp("prefect-home"), port,
                            {"PREFECT_SERVER_UI_API_URL": f"http://127.0.0.1:{port}/api"})
    try:
        started.start()
        started.deploy()
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=list(CHROMIUM_ARGS))
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser) -> Iterator[Page]:
    opened = browser.new_page(viewport={"width": 1400, "height": 1000})
    opened.set_default_timeout(30_000)
    try:
        yield opened
    finally:
        opened.close()


def _ui_url(server: PrefectServer, ui: str, path: str) -> str:
    return f"http://127.0.0.1:{server.port}{UIS[ui]}{path}"


def _profile_control(page: Page, ui: str):
    """The run form's profile selector: a button that shows the chosen profile and opens the list of profiles."""
    if ui == "v2":
        return page.get_by_role("button", name="Select Profile")
    return page.locator(".p-label", has=page.locator("label", has_text="Profile (Optional)")).locator(
        "button.p-select-button__control")


def _choose_profile(page: Page, ui: str, profile: str) -> None:
    control = _profile_control(page, ui)
    control.click()
    option = page.get_by_role("option", name=profile, exact=True)
    try:
        option.wait_for(timeout=2000)
    except Exception:  # noqa: BLE001 - V1's list opens from the keyboard when a click only focused the control
        page.keyboard.press("ArrowDown")
    option.click()
    expect(control).to_have_text(profile)


def _submit_run_form(page: Page, server: PrefectServer, ui: str, profile: str | None = None) -> dict:
    """Open quick-check's run form, change the profile alone if one is given, press Submit; the parameters of the
    flow run the form created, as the server stored them."""
    with server.client() as client:
        deployment = client.read_deployment_by_name("full-study/quick-check")
    page.goto(_ui_url(server, ui, f"/deployments/deployment/{deployment.id}/run"))
    expect(_profile_control(page, ui)).to_have_text("quick")  # the form holds the deployment's parameters
    if profile is not None:
        _choose_profile(page, ui, profile)
    with page.expect_response(lambda response: response.url.endswith("/create_flow_run")) as created:
        page.get_by_role("button", name="Submit", exact=True).click()
    assert created.value.ok, f"the server refused the form's run: {created.value.text()}"
    with server.client() as client:
        return client.read_flow_run(created.value.json()["id"]).parameters


@pytest.mark.parametrize("ui", UIS)
def test_the_run_form_submitted_untouched_runs_the_deployment_s_profile(page, server, ui):
    parameters = _submit_run_form(page, server, ui)

    submitted = parameters["config"]
    assert submitted["profile"] == "quick" and submitted["epochs"] is None  # the form sends no study value
    config = StudyConfig.validated(**submitted)  # what the flow resolves (flows/_runtime.checked_config)
    assert config == StudyConfig.for_profile("quick", artifacts_dir="artifacts-quick")
    assert (config.learning_rates, config.epochs, config.gradient_epochs, config.train_subset) == (
        (0.01, 0.001), 1, 2, 2000)
    assert len(planning.plan_runs(config, data_hash="0" * 64)) == 3 * 2 + 2


@pytest.mark.parametrize("ui", UIS)
def test_the_run_form_with_only_the_profile_changed_runs_that_profile(page, server, ui):
    parameters = _submit_run_form(page, server, ui, profile="full")

    config = StudyConfig.validated(**parameters["config"])
    assert config == StudyConfig.for_profile("full", artifacts_dir="artifacts-quick")
    assert (config.learning_rates, config.epochs, config.gradient_epochs, config.train_subset) == (
        (0.1, 0.01, 0.001, 0.0001), 10, 20, None)


@pytest.fixture(scope="module")
def published_report(server, tmp_path_factory) -> tuple[str, ArtifactsLayout]:
    """A report with all 14 figures (synthetic numbers, the study's plot functions) published by the flow's own
    task against the server; the study-report artifact's id and the layout."""
    layout = ArtifactsLayout.at(tmp_path_factory.mktemp("study"))
    tables = synthetic_tables()
    context = ReportContext(tables=tables, figures=_render_figures(tables, layout.figures_dir), settings=SETTINGS,
                            generated_at="2024-05-01 12:00 UTC")
    write_report(context, layout.report_dir)

    @flow(name="publish-report")
    def publish() -> None:
        publish_artifacts(layout, [])

    with server.running_flows_here():
        publish()
    with server.client() as client:
        (artifact,) = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["study-report"])))
    return str(artifact.id), layout


def _shown_images(page: Page, expected: int) -> list[dict]:
    """The page's images once `expected` of them have loaded, or as they are when time runs out."""
    deadline = time.monotonic() + IMAGE_TIMEOUT
    while True:
        images = page.evaluate(_IMAGES)
        if sum(image["loaded"] for image in images) >= expected or time.monotonic() > deadline:
            return images
        time.sleep(0.5)


@pytest.mark.parametrize("ui", UIS)
def test_the_report_artifact_shows_every_figure_in_the_ui(page, server, published_report, ui):
    artifact_id, layout = published_report
    on_disk = layout.report_markdown.read_text()
    assert len(re.findall(r"!\[[^\]]*\]\(\.\./figures/", on_disk)) == len(FIGURE_NAMES) == 14  # files keep links

    page.goto(_ui_url(server, ui, f"/artifacts/artifact/{artifact_id}"))
    images = _shown_images(page, len(FIGURE_NAMES))

    assert len(images) == len(FIGURE_NAMES), images
    assert all(image["loaded"] for image in images), [image for image in images if not image["loaded"]]


def test_the_report_artifact_stays_small(server, published_report):
    _, layout = published_report
    with server.client() as client:
        (artifact,) = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["study-report"])))
    figure_bytes = sum(path.stat().st_size for path in Path(layout.figures_dir).glob("*.png"))

    # The figures travel as 256-colour copies, base64-encoded: below their files' size on disk, not 4/3 of it.
    assert len(artifact.data) < figure_bytes
