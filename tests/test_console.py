"""What a person sees in the console: ``python app.py`` and ``rnri edit`` started for real, as subprocesses, with the
Hub out of reach (``HF_ENDPOINT`` at a closed local port, an empty cache), as on a machine without internet.

Before, each start printed huggingface_hub's deprecation of an argument diffusers passes it, six "'[Errno -2] Name or
service not known' thrown while requesting HEAD https://huggingface.co/..." lines and five "Retrying in Ns" (half a
minute of back-off), and transformers' "requires torchvision" notices; the CLI printed the Hub's warning as its own.
Now the Hub is tried once and the one line that matters is printed. (Each test starts Python with torch, diffusers and,
for the app, Gradio: some 10 to 20 s of CPU, the price of reading a real console.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from conftest import free_port

import rnri.editor as ed

ROOT = Path(__file__).resolve().parents[1]
NOISE = (
    "local_dir_use_symlinks",  # huggingface_hub's deprecation warning
    "thrown while requesting",  # huggingface_hub's retries: "'[Errno -2] Name or service not known' thrown ..."
    "Retrying in",
    "requires torchvision",  # transformers' image processor notice
    "Warning",  # any Python warning (UserWarning, FutureWarning, ...) printed as such
    "Traceback",
)
CHROMIUM = Path("/usr/bin/chromium")  # as tests/test_browser.py (importing it would skip this module without one)
START_S = 600  # generous: a shared machine can be slow to import torch and Gradio; nothing here asserts on time


def offline(tmp_path: Path) -> dict[str, str]:
    """The environment of a machine that cannot reach the Hub and has nothing cached."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "RNRI_MODEL")}
    env = {k: v for k, v in env.items() if k.lower() not in ("https_proxy", "all_proxy")}
    return env | {
        "HF_HOME": str(tmp_path / "hf"),
        "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}",  # nothing listens there
        "GRADIO_TEMP_DIR": str(tmp_path / "gradio"),
        "OMP_WAIT_POLICY": "PASSIVE",
    }


def noise_in(lines: list[str]) -> list[str]:
    return [line for line in lines if any(word in line for word in NOISE)]


def test_the_hub_out_of_reach_is_known_at_once(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # conftest sets it for every test: the probe itself here
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{free_port()}")
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert not ed.hub_reachable()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert not ed.hub_reachable()


def test_the_app_started_offline_says_one_line_of_why_then_where_it_serves(tmp_path):
    """``python app.py`` (the default model, not cached, the Hub out of reach) falls back to the tiny model: the
    console has the one line of why and the one line of where, nothing else, and nothing more when a file that is no
    image is uploaded in the page (Gradio printed a UserWarning per refused upload)."""
    port = free_port()
    app = subprocess.Popen(
        [sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=offline(tmp_path),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines = []
    try:
        for line in app.stdout:
            lines.append(line.rstrip())
            if "rnri editor at" in line:
                break
        upload_a_file_that_is_no_image(f"http://127.0.0.1:{port}/", tmp_path)
    finally:
        app.send_signal(signal.SIGTERM)
        rest, _ = app.communicate(timeout=START_S)
    lines += [line for line in rest.splitlines() if line.strip()]
    assert not noise_in(lines), lines
    (why,) = [line for line in lines if "could not load the model" in line]
    assert "it is not in the local Hugging Face cache and the Hub cannot be reached" in why
    assert why.endswith("running on the tiny demo model")
    assert [line for line in lines if line != why and "rnri editor at" not in line] == [], lines


def upload_a_file_that_is_no_image(url: str, tmp_path: Path) -> None:
    """In Debian's Chromium, as tests/test_browser.py drives it (not done where there is none or no Playwright)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return
    if not CHROMIUM.exists():
        return

    notes = tmp_path / "notes.png"
    notes.write_bytes(b"not an image")
    with sync_playwright() as playwright:
        args = ["--no-sandbox", "--disable-gpu"]
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
        page = browser.new_page()
        page.set_default_timeout(START_S * 1000)
        page.goto(url)
        page.locator("#photo input[type=file]").set_input_files(str(notes))
        page.wait_for_function("document.querySelector('#photo-hint').innerText.includes('is not an image')")
        browser.close()


def test_the_cli_offline_fails_in_one_line_of_its_own(tmp_path):
    """``rnri edit`` on the default model, offline: one error line, in rnri's words, and no retries."""
    done = subprocess.run(
        [sys.executable, "-m", "rnri", "edit", "assets/cat.jpg", "--source", "a cat", "--target", "a tiger",
         "-o", str(tmp_path / "tiger.png")],
        cwd=ROOT, env=offline(tmp_path), capture_output=True, text=True, timeout=START_S,
    )  # fmt: skip
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode != 0 and not noise_in(lines), lines
    assert len(lines) == 1 and lines[0].startswith("rnri: error: could not load the model"), lines
    assert "the Hub cannot be reached" in lines[0] and "--model tiny" in lines[0]
