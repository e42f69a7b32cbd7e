"""The editor in a real browser: Debian's Chromium driven by Playwright (never `playwright install`).

Opens the page, uploads a photo, types both prompts, presses Edit, waits for the result, saves a screenshot to
artifacts/, then types more of the target prompt and waits for the live (debounced, cached) re-edit.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from test_app import CAT, free_port, import_app

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 90_000  # generous: a shared CI machine can be slow; nothing here asserts on time

if not CHROMIUM.exists():
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing in CI: .ci/run must `apt-get install chromium`", pytrace=False)
    pytest.skip(f"needs Debian's Chromium at {CHROMIUM}: apt-get install chromium", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="needs Playwright: pip install -r requirements-dev.txt")


@pytest.fixture(scope="module")
def app():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in test_app: two OpenMP threads beside a browser on 2 vCPUs crawl
    yield import_app()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def url(app):
    _, local_url, _ = app.launch("127.0.0.1", free_port(), prevent_thread_lock=True, quiet=True)
    yield local_url
    app.demo.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1280, "height": 1500})  # tall: full-page shots need no relayout
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    return page


@pytest.fixture(scope="module")
def page(browser, url):
    page = open_page(browser, url)
    yield page
    page.close()


def edited_src(page) -> str:
    return page.locator("#edited img").first.get_attribute("src") or ""


def test_upload_prompt_edit_and_see_the_result(page):
    page.locator("#photo input[type=file]").set_input_files(str(CAT))
    page.locator("#photo img").first.wait_for(state="visible")  # the upload is shown
    page.locator("#source textarea").fill("a photo of a cat")
    page.locator("#target textarea").fill("a photo of a tiger")
    page.locator("#edit-button").click()
    page.get_by_text("This request").wait_for()
    result = page.locator("#edited img").first
    result.wait_for(state="visible")
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=result.element_handle())
    page.locator("#residual-plot .role-legend-label", has_text="iterate 1").wait_for(state="visible")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "app-edit.png"), full_page=True)
    assert result.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [451, 300]
    assert page.locator("#reconstruction img").first.is_visible()
    assert page.get_by_text("computed now").is_visible()


def test_typing_in_the_target_prompt_re_edits_live_from_the_cache(page):
    before = edited_src(page)
    page.locator("#target textarea").press_sequentially(" at night", delay=40)
    page.get_by_text("reused from this session's cache").wait_for()
    page.wait_for_function("src => document.querySelector('#edited img').src !== src", arg=before)
    page.screenshot(path=str(ARTIFACTS / "app-live-edit.png"), full_page=True)
    assert "This request: 4 UNet forwards + 0 backwards" in page.locator("body").inner_text()  # no inversion


def test_an_example_runs_when_clicked(page):
    page.get_by_text("a marble statue of an astronaut").click()
    result = page.locator("#edited img").first
    page.wait_for_function("img => img.complete && img.naturalWidth === 512", arg=result.element_handle())
    assert page.locator("#target textarea").input_value() == "a marble statue of an astronaut"
    assert page.get_by_text("computed now").is_visible()


def test_a_model_that_cannot_load_starts_on_tiny_with_a_visible_banner(app, browser, tmp_path):
    resident = app.load_resident(str(tmp_path / "no-such-model"))
    demo = app.build_demo(resident.banner)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        page = open_page(browser, url)
        banner = page.locator("#model-banner")
        banner.wait_for(state="visible")
        page.screenshot(path=str(ARTIFACTS / "app-fallback-banner.png"))
        assert "Running on the tiny demo model" in banner.inner_text()
        assert "no-such-model" in banner.inner_text() and "--model" in banner.inner_text()
    finally:
        demo.close()
