"""Open a local HTML file in headless Chromium and report what a reader would see go wrong.

Playwright drives the system Chromium (`/usr/bin/chromium`, installed by the OS package manager);
no browser is downloaded. Used by the report tests to prove report.html renders from disk.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from playwright.sync_api import sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
# Resources a self-contained page may load: itself and inline data.
_LOCAL_SCHEMES = ("file:", "data:", "about:")

_IMAGE_STATE = """() => {
  const images = Array.from(document.images);
  return {total: images.length, loaded: images.filter(img => img.complete && img.naturalWidth > 0).length};
}"""


@dataclass(frozen=True)
class BrowserReport:
    """What Chromium saw while opening the page."""

    images_total: int
    images_loaded: int
    console_errors: tuple[str, ...]
    page_errors: tuple[str, ...]
    external_requests: tuple[str, ...] = ()


def open_in_chromium(
    html_path: str | os.PathLike[str],
    screenshot_path: str | os.PathLike[str],
    *,
    width: int = 1280,
    timeout_ms: int = 30_000,
) -> BrowserReport:
    """Load `html_path` from disk (file:// URL), wait for it, take a full-page PNG screenshot, report problems."""
    page_file = Path(html_path).resolve()
    if not page_file.is_file():
        raise FileNotFoundError(f"{page_file} does not exist; write the HTML page before opening it")
    if not CHROMIUM.exists():
        raise FileNotFoundError(f"{CHROMIUM} not found; install Debian's chromium package")
    console_errors: list[str] = []
    page_errors: list[str] = []
    external: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=list(CHROMIUM_ARGS))
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.set_default_timeout(timeout_ms)
            page.on("console", lambda message: message.type == "error" and console_errors.append(message.text))
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            page.on("request", lambda request: request.url.startswith(_LOCAL_SCHEMES) or external.append(request.url))
            page.goto(page_file.as_uri(), wait_until="load")
            images = page.evaluate(_IMAGE_STATE)
            Path(screenshot_path).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot_path), full_page=True)
        finally:
            browser.close()
    return BrowserReport(
        images_total=int(images["total"]),
        images_loaded=int(images["loaded"]),
        console_errors=tuple(console_errors),
        page_errors=tuple(page_errors),
        external_requests=tuple(external),
    )
