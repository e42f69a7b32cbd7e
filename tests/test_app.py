"""The editor app on the tiny model, served in-process and called through its real client (gradio_client).

Covers the /edit endpoint, the per-session inversion cache (observable in the UNet count), every bad input the
app must refuse or repair with a message, the live (debounced) re-edit, and the safe launch defaults.
"""

from __future__ import annotations

import asyncio
import importlib
import socket
import struct
import zlib
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch
from conftest import noise_image
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from rnri.session import InversionCache, InversionKey, InversionSettings

ROOT = Path(__file__).resolve().parents[1]
CAT = ROOT / "assets" / "cat.jpg"  # 451x300
SOURCE, TARGET = "a photo of a cat", "a photo of a tiger"


def import_app():
    """``app`` on the tiny model (the module loads its pipeline when imported)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RNRI_MODEL", "tiny")
        mp.syspath_prepend(str(ROOT))
        module = importlib.import_module("app")
    assert module.RESIDENT.model == "tiny" and not module.RESIDENT.banner
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app():
    # One intra-op thread: on shared 2-vCPU machines two OpenMP threads can make each tiny UNet call 100x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield import_app()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def url(app):
    _, local_url, _ = app.launch("127.0.0.1", free_port(), prevent_thread_lock=True, quiet=True)
    yield local_url
    app.demo.close()


@pytest.fixture(scope="module")
def client(url):
    return Client(url, verbose=False)


def edit(client: Client, photo, source: str = SOURCE, target: str = TARGET, **settings) -> dict:
    """Call /edit; returns its outputs by name, with the edited image opened."""
    photo = handle_file(str(photo)) if photo is not None else None
    edited, reconstruction, summary, _, details = client.predict(photo, source, target, **settings, api_name="/edit")
    return {"edited": Image.open(edited), "reconstruction": Image.open(reconstruction), "summary": summary, **details}


def still_serving(client: Client) -> None:
    """A cached re-edit of the cat still works (the app survived whatever came before)."""
    out = edit(client, CAT, target="a photo of a lynx")
    assert out["edited"].size == (451, 300)


# Files for the bad-input cases, each written to a directory of its own.


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` pixels and holds none: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def saved(path: Path, image: Image.Image, **options) -> Path:
    image.save(path, **options)
    return path


def truncated(path: Path) -> Path:
    saved(path, noise_image(120, 90), quality=95)
    return write(path, path.read_bytes()[: path.stat().st_size // 2])


def rotated(path: Path) -> Path:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: shown rotated 90 degrees clockwise
    return saved(path, noise_image(60, 40), exif=exif)


def sixteen_bit(path: Path) -> Path:
    ramp = np.linspace(0, 65535, 48 * 64, dtype=np.uint16).reshape(48, 64)
    return saved(path, Image.fromarray(ramp))


def palette_with_transparency(path: Path) -> Path:
    return saved(path, noise_image(64, 48).convert("P"), transparency=0)


def animated(path: Path) -> Path:
    frames = [noise_image(64, 48, seed=s).convert("P") for s in range(3)]
    return saved(path, frames[0], save_all=True, append_images=frames[1:])


REFUSED = {  # file -> what the user is told
    "notes.txt": (lambda p: write(p, b"just some text\n"), "is not an image"),
    "empty.png": (lambda p: write(p, b""), "is not an image"),
    "drawing.svg": (lambda p: write(p, b"<svg xmlns='http://www.w3.org/2000/svg'/>"), "is not an image"),
    "truncated.jpg": (truncated, "truncated or damaged"),
    "bomb.png": (lambda p: write(p, png_header(12_000, 12_000)), "144 megapixels"),
    "huge-bomb.png": (lambda p: write(p, png_header(40_000, 40_000)), "too large"),
    "tiny.png": (lambda p: saved(p, noise_image(8, 8)), "only 8x8 pixels"),
    "sliver.png": (lambda p: saved(p, noise_image(400, 10)), "only 400x10 pixels"),
}
REPAIRED = {  # file -> (what the user is told, size of the edited image)
    "large.jpg": (lambda p: saved(p, noise_image(2400, 1600)), "downscaled to 1024x683", (1024, 683)),
    "rotated.jpg": (rotated, "EXIF orientation (6)", (40, 60)),
    "rgba.png": (
        lambda p: saved(p, noise_image(64, 48, "RGBA")),
        "has transparency; it was flattened onto white",
        (64, 48),
    ),
    "la.png": (lambda p: saved(p, noise_image(64, 48, "LA")), "grayscale with transparency", (64, 48)),
    "palette.png": (palette_with_transparency, "colour palette with transparency", (64, 48)),
    "cmyk.jpg": (lambda p: saved(p, noise_image(64, 48, "CMYK")), "is CMYK; it was converted to RGB", (64, 48)),
    "16bit.png": (sixteen_bit, "16-bit; it was scaled to 8 bits", (64, 48)),
    "gray.png": (lambda p: saved(p, noise_image(64, 48, "L")), "grayscale; it was converted to RGB", (64, 48)),
    "animated.gif": (animated, "animated (3 frames)", (64, 48)),
}


def test_edit_returns_the_input_size_and_reports_what_happened(client):
    out = edit(client, CAT, seed=1)
    assert out["edited"].size == (451, 300) and out["reconstruction"].size == (451, 300)
    assert out["edited"].mode == "RGB" and out["model"] == "tiny" and out["method"] == "rnri"
    assert not out["inversion_cached"]
    assert (out["inversion_unet_forwards"], out["inversion_unet_backwards"], out["edit_unet_forwards"]) == (8, 4, 4)
    assert out["reconstruction_psnr_db"] > 0 and out["z_T_std"] > 0 and out["notices"] == []
    assert "UNet forwards" in out["summary"] and "PSNR" in out["summary"]


def test_new_target_prompt_reuses_the_inversion(url):
    session = Client(url, verbose=False)  # a fresh session: nothing cached yet
    first = edit(session, CAT)
    again = edit(session, CAT, target="a watercolour of a tiger")
    guided = edit(session, CAT, target="a watercolour of a tiger", edit_guidance=3.0)
    assert not first["inversion_cached"] and again["inversion_cached"] and guided["inversion_cached"]
    # full: 8 + 4 inversion, 4 reconstruction, 4 edit; re-edit: the 4 forwards of the edit alone
    assert (first["request_unet_forwards"], first["request_unet_backwards"]) == (16, 4)
    assert (again["request_unet_forwards"], again["request_unet_backwards"]) == (4, 0)
    assert again["edited"].tobytes() != first["edited"].tobytes()
    assert again["reconstruction"].tobytes() == first["reconstruction"].tobytes()
    assert guided["edited"].tobytes() != again["edited"].tobytes()


@pytest.mark.parametrize(
    "change",
    [{"source": "a photo of a kitten"}, {"seed": 3}, {"strength": 0.5}, {"method": "ddim"}, {"prior_weight": 0.2}],
)
def test_what_changes_the_inversion_inverts_again(client, change):
    edit(client, CAT)
    out = edit(client, CAT, **change)
    assert not out["inversion_cached"]
    assert out["inversion_unet_forwards"] >= 2


def test_settings_the_method_ignores_do_not_invert_again(client):
    edit(client, CAT, method="ddim", seed=9)
    out = edit(client, CAT, method="ddim", seed=9, prior_weight=0.5, iterations=3)  # rnri's options
    assert out["inversion_cached"] and out["method"] == "ddim"


def test_the_cache_is_bounded_and_drops_the_least_recently_used():
    cache = InversionCache(capacity=2)
    first, second, third = (InversionKey("session", f"photo {i}", SOURCE, InversionSettings()) for i in range(3))
    cache.put(first, "first")
    cache.put(second, "second")
    assert cache.get(first) == "first"  # now the most recently used
    cache.put(third, "third")
    assert len(cache) == 2 and cache.get(second) is None and cache.get(first) == "first"


def test_the_cache_is_per_session(url, client):
    edit(client, CAT, seed=5)
    other = edit(Client(url, verbose=False), CAT, seed=5)
    assert not other["inversion_cached"]


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_bad_upload_is_refused_with_a_message(client, tmp_path, name):
    make, message = REFUSED[name]
    with pytest.raises(AppError, match=message):
        edit(client, make(tmp_path / name))
    still_serving(client)


@pytest.mark.parametrize("name", sorted(REPAIRED))
def test_fixable_upload_is_repaired_with_a_notice(client, tmp_path, name):
    make, notice, size = REPAIRED[name]
    out = edit(client, make(tmp_path / name))
    assert out["edited"].size == size and out["edited"].mode == "RGB"
    assert any(notice in n for n in out["notices"]), out["notices"]
    assert notice in out["summary"]


@pytest.mark.parametrize(
    ("photo", "source", "target", "settings", "message"),
    [
        (None, SOURCE, TARGET, {}, "Upload a photo first"),
        (CAT, "", TARGET, {}, "source prompt .* is empty"),
        (CAT, SOURCE, "   ", {}, "target prompt .* is empty"),
        (CAT, SOURCE, TARGET, {"steps": 0}, "Steps must be a whole number from 1 to 8, got 0"),
        (CAT, SOURCE, TARGET, {"steps": 2.5}, "Steps must be a whole number"),
        (CAT, SOURCE, TARGET, {"iterations": 1000}, "Newton iterations per step must be a whole number from 1 to 5"),
        (CAT, SOURCE, TARGET, {"prior_weight": "lots"}, "Prior weight λ must be a number from 0 to 1, got 'lots'"),
        (CAT, SOURCE, TARGET, {"method": "magic"}, "Unknown method 'magic'"),
        (CAT, SOURCE, TARGET, {"seed": -1}, "Seed must be a whole number from 0 to 2147483647, got -1"),
        (CAT, SOURCE, TARGET, {"edit_guidance": 99}, "Edit guidance must be a number from 1 to 15, got 99"),
    ],
)
def test_bad_prompts_and_settings_are_refused_with_a_message(client, photo, source, target, settings, message):
    with pytest.raises(AppError, match=message):
        edit(client, photo, source, target, **settings)
    still_serving(client)


def test_long_prompts_are_cut_with_a_warning(client):
    out = edit(client, CAT, source="a photo of a cat " * 40, target="a photo of a tiger " * 40)
    assert out["edited"].size == (451, 300)
    assert any(n.startswith("Source prompt") and "longer than the text encoder takes" in n for n in out["notices"])
    assert any(n.startswith("Target prompt") and "longer than the text encoder takes" in n for n in out["notices"])


def test_oversized_upload_is_refused_by_the_server(client, tmp_path):
    big = write(tmp_path / "big.jpg", b"\xff" * (31 * 1024 * 1024))  # over the 30 MB limit
    with pytest.raises(Exception, match="(?i)file size|too large|413"):
        edit(client, big)
    still_serving(client)


def test_live_edit_reuses_the_cache_and_otherwise_changes_nothing(app):
    request = gr.Request(session_hash="live-test")
    settings = ["rnri", 4, 8.5, 1, 0.1, 0, 1.0, 8.5]
    skipped = app.live_edit(str(CAT), SOURCE, "a tiger", *settings, request)
    assert skipped == tuple(gr.skip() for _ in range(5))  # nothing cached: typing never starts an inversion
    assert app.live_edit(None, SOURCE, "", *settings, request) == skipped  # half-typed input: no error either
    app.edit(str(CAT), SOURCE, "a tiger", *settings, request=request)
    edited, _, summary, _, details = app.live_edit(str(CAT), SOURCE, "a lion", *settings, request)
    assert details["inversion_cached"] and details["request_unet_forwards"] == 4 and edited.size == (451, 300)


def test_typing_is_debounced_last_request_wins(app):
    request = gr.Request(session_hash="debounce-test")

    async def burst():
        first = asyncio.create_task(app.wait_for_pause(request))
        await asyncio.sleep(0.05)
        return await asyncio.gather(first, app.wait_for_pause(request))

    first, last = asyncio.run(burst())
    assert first == gr.skip() and isinstance(last, int)


def test_model_that_cannot_load_falls_back_to_tiny_with_a_banner(app, tmp_path):
    resident = app.load_resident(str(tmp_path / "no-such-model"))
    assert resident.model == "tiny" and resident.pipe is app.RESIDENT.pipe
    assert "tiny demo model" in resident.banner and "no-such-model" in resident.banner
    assert "--model" in resident.banner


def test_options_default_to_local_and_follow_the_environment(app, monkeypatch):
    for name in ("RNRI_MODEL", "GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT"):
        monkeypatch.delenv(name, raising=False)
    args = app.parse_args([])
    assert (args.host, args.port, args.model) == ("127.0.0.1", 7860, "SimianLuo/LCM_Dreamshaper_v7")
    monkeypatch.setenv("RNRI_MODEL", "tiny")
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    assert (app.parse_args([]).model, app.parse_args([]).host) == ("tiny", "0.0.0.0")
    assert app.parse_args(["--host", "::1", "--model", "/models/lcm"]).host == "::1"


def test_served_locally_without_share_link_with_bounded_queue_and_uploads(app, url):
    assert url.startswith("http://127.0.0.1:")
    assert app.demo.share is False and app.demo.max_file_size == 30 * 1024 * 1024
    assert app.demo._queue.max_size == app.QUEUE_SIZE
    gpu = [fn for fn in app.demo.fns.values() if fn.name in ("edit", "live_edit")]
    assert len(gpu) == 3 and all(fn.concurrency_id == "gpu" and fn.concurrency_limit == 1 for fn in gpu)
