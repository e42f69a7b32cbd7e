"""The editor app on the tiny model, served in-process and called through its real client (gradio_client).

Covers the /edit endpoint, the per-session inversion cache (observable in the UNet count), local edits (painted,
sent as a mask file or read from the page's image editor, and automatic masks; the mask is no part of the cache key),
every bad input the app must refuse or repair with a message, the live (debounced) re-edit, the safe launch defaults,
and the app as it runs on a Space (GPU work under ``spaces.GPU``, examples cached lazily).
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import importlib.util
import math
import os
import shutil
import struct
import sys
import warnings
import zlib
from pathlib import Path

import gradio as gr
import httpx
import numpy as np
import pytest
from conftest import noise_image, serve
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

import rnri
import rnri.editor as ed
import rnri.pipelines.spaces_support
import rnri.server.handlers as server_handlers
from rnri import cli
from rnri.editor import cache as editor_cache
from rnri.shapes.analyze import analyze

ROOT = Path(__file__).resolve().parents[1]
CAT = ROOT / "assets" / "cat.jpg"  # 451x300
COFFEE = ROOT / "assets" / "coffee.jpg"  # 600x400; on the tiny model its automatic mask covers part of it
SOURCE, TARGET = "a photo of a cat", "a photo of a tiger"
BOX = (150, 100, 300, 200)  # a painted rectangle on the cat: left, top, right, bottom


@pytest.fixture(scope="module")
def client(url):
    return Client(url, verbose=False)


def edit(client: Client, photo, source: str = SOURCE, target: str = TARGET, **settings) -> dict:
    """Call /edit; returns its outputs by name, with the images opened (``overlay``: tinted where the edit acts)."""
    photo = handle_file(str(photo)) if photo is not None else None
    outputs = client.predict(photo, source, target, **settings, api_name="/edit")
    edited, reconstruction, summary, _, details, overlay = outputs
    return {
        "edited": Image.open(edited),
        "reconstruction": Image.open(reconstruction),
        "overlay": Image.open(overlay),
        "summary": summary,
        **details,
    }


@pytest.mark.parametrize(
    ("photo", "source", "target", "expected"),
    [
        (
            "shapes-red-circle.png",
            "a large red circle on a blue background",
            "a large pink heart on a blue background",
            ("blue", [("heart", "pink", "large")]),
        ),
        (
            "shapes-heart-stripes.png",
            "a large pink heart on a striped background",
            "a large pink heart on a green background",
            ("green", [("heart", "pink", "large")]),
        ),
    ],
)
def test_the_tiny_model_edits_its_examples_correctly(client, photo, source, target, expected):
    """--model tiny is the trained shapes LCM: its examples' edits, read by the exact analyzer, are what the target
    prompt asks, and the reconstruction is the photo's scene."""

    def attributes(image: Image.Image) -> tuple:
        found = analyze(image.convert("RGB"))
        return found.background, [(t.shape, t.colour, t.size) for t in found.things]

    out = edit(client, ROOT / "assets" / photo, source, target)
    assert attributes(out["edited"]) == expected
    assert attributes(out["reconstruction"]) == attributes(Image.open(ROOT / "assets" / photo))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def box_mask(path: Path, size: tuple[int, int] = (451, 300), box=BOX, mode: str = "L") -> Path:
    """A mask file: white in ``box``; in mode RGBA, a brush layer (translucent paint, transparent elsewhere)."""
    if mode == "RGBA":
        image = Image.new("RGBA", size, (0, 0, 0, 0))
        image.paste((255, 0, 200, 128), box)
    else:
        image = Image.new("L", size, 0)
        image.paste(255, box)
    image.save(path)
    return path


def outside(box=BOX, size: tuple[int, int] = (451, 300)) -> np.ndarray:
    """(H, W) True outside ``box``."""
    keep = np.ones((size[1], size[0]), dtype=bool)
    keep[box[1] : box[3], box[0] : box[2]] = False
    return keep


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


def with_transparency(image: Image.Image) -> Image.Image:
    """``image`` with its left half see-through."""
    alpha = Image.new("L", image.size, 255)
    alpha.paste(0, (0, 0, image.width // 2, image.height))
    image.putalpha(alpha)
    return image


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
        lambda p: saved(p, with_transparency(noise_image(64, 48, "RGBA"))),
        "has transparency; it was flattened onto white",
        (64, 48),
    ),
    "la.png": (
        lambda p: saved(p, with_transparency(noise_image(64, 48, "LA"))),
        "grayscale with transparency",
        (64, 48),
    ),
    "palette.png": (palette_with_transparency, "colour palette with transparency", (64, 48)),
    "cmyk.jpg": (lambda p: saved(p, noise_image(64, 48, "CMYK")), "is CMYK; it was converted to RGB", (64, 48)),
    "16bit.png": (sixteen_bit, "16-bit; it was scaled to 8 bits", (64, 48)),
    "gray.png": (lambda p: saved(p, noise_image(64, 48, "L")), "grayscale; it was converted to RGB", (64, 48)),
    "animated.gif": (animated, "animated (3 frames)", (64, 48)),
}


def test_edit_returns_the_input_size_and_reports_what_happened(client):
    out = edit(client, CAT, seed=1)
    assert out["edited"].size == (451, 300) and out["reconstruction"].size == (451, 300)
    assert out["edited"].mode == "RGB" and out["model"] == "tiny" and out["method"] == "ddim"
    assert not out["inversion_cached"]
    assert (out["inversion_unet_forwards"], out["inversion_unet_backwards"], out["edit_unet_forwards"]) == (7, 0, 4)
    assert out["reconstruction_psnr_db"] > 0 and out["z_T_std"] > 0 and out["notices"] == []
    assert "UNet forwards" in out["summary"] and "PSNR" in out["summary"]


def test_the_server_reads_only_files_a_client_uploaded(url):
    """The events take files unprocessed (preprocess=False); Gradio must still refuse a path on the server that no
    client uploaded, or any image on the machine could be read back through /edit (raw HTTP: gradio_client would
    upload a local path first)."""
    inputs = httpx.get(url + "gradio_api/info").json()["named_endpoints"]["/edit"]["parameters"]
    names = [p["parameter_name"] for p in inputs]
    with COFFEE.open("rb") as f:
        uploaded = httpx.post(url + "gradio_api/upload", files={"files": f}).json()[0]

    def call(photo: str, mask: str | None = None) -> str:
        data = [p.get("parameter_default") for p in inputs]
        data[:3] = [{"path": photo, "meta": {"_type": "gradio.FileData"}}, SOURCE, TARGET]
        if mask is not None:
            data[names.index("mask")] = {"path": mask, "meta": {"_type": "gradio.FileData"}}
        event = httpx.post(url + "gradio_api/call/edit", json={"data": data}).json()["event_id"]
        return httpx.get(url + f"gradio_api/call/edit/{event}", timeout=120).text

    assert call(uploaded).startswith("event: complete")  # an uploaded photo is edited
    for refused in (call(str(CAT)), call(uploaded, mask=str(CAT))):  # CAT: on the server, never uploaded
        assert refused.startswith("event: error") and ".png" not in refused


def test_new_target_prompt_reuses_the_inversion(url):
    session = Client(url, verbose=False)  # a fresh session: nothing cached yet
    first = edit(session, CAT)
    again = edit(session, CAT, target="a watercolour of a tiger")
    guided = edit(session, CAT, target="a watercolour of a tiger", edit_guidance=3.0)
    assert not first["inversion_cached"] and again["inversion_cached"] and guided["inversion_cached"]
    # full: 7 inversion (DDIM + noise correction), 4 reconstruction, 4 edit; re-edit: the edit's 4 alone
    assert (first["request_unet_forwards"], first["request_unet_backwards"]) == (15, 0)
    assert (again["request_unet_forwards"], again["request_unet_backwards"]) == (4, 0)
    assert again["edited"].tobytes() != first["edited"].tobytes()
    assert again["reconstruction"].tobytes() == first["reconstruction"].tobytes()
    assert guided["edited"].tobytes() != again["edited"].tobytes()


@pytest.mark.parametrize(
    "change",
    [{"source": "a photo of a kitten"}, {"seed": 3}, {"strength": 0.5}, {"method": "rnri"}, {"method": "gnri"}],
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
    cache = ed.InversionCache(capacity=2)
    first, second, third = (
        ed.InversionKey("session", f"photo {i}", SOURCE, rnri.InversionSettings()) for i in range(3)
    )
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
        (CAT, SOURCE, "   ", {}, "target prompt .* is empty"),
        (CAT, SOURCE, TARGET, {"num_inference_steps": 0}, "Steps must be a whole number from 1 to 50, got 0"),
        (CAT, SOURCE, TARGET, {"num_inference_steps": 2.5}, "Steps must be a whole number"),
        (CAT, SOURCE, TARGET, {"iterations": 1000}, "Newton iterations per step must be a whole number from 1 to 5"),
        (CAT, SOURCE, TARGET, {"prior_weight": "lots"}, "Prior weight λ must be a number from 0 to 1, got 'lots'"),
        (CAT, SOURCE, TARGET, {"method": "magic"}, "Inversion method must be one of ddim, quasi-newton, rnri, gnri"),
        (CAT, SOURCE, TARGET, {"seed": -1}, "Seed must be a whole number from 0 to 2147483647, got -1"),
        (CAT, SOURCE, TARGET, {"edit_guidance": 99}, "Edit guidance must be a number from 0 to 15, got 99"),
    ],
)
def test_bad_prompts_and_settings_are_refused_with_a_message(client, photo, source, target, settings, message):
    with pytest.raises(AppError, match=message):
        edit(client, photo, source, target, **settings)
    still_serving(client)


@pytest.mark.parametrize("source", ["", "   "])
def test_an_empty_source_prompt_inverts_unconditionally(client, source):
    out = edit(client, CAT, source, TARGET)  # as LEdits++ allows; ShapeEdit measures what it costs (docs/app.md)
    assert out["edited"].size == (451, 300) and math.isfinite(out["reconstruction_psnr_db"])


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


@pytest.fixture
def handlers(app, pipe):
    """The page's handlers over an editor service of their own (an empty cache), on the tiny model."""
    return app.Handlers(ed.Editor(pipe, ed.InversionCache(), "tiny"))


def painted_on(app, photo: Path = CAT, layers=()):
    """Where the page's image editor marks ``photo``, as the server reads it (Gradio hands over files it saved)."""
    return app.read_mask({"background": str(photo), "layers": [str(p) for p in layers]})[0]


def test_live_edit_inverts_when_nothing_is_cached_then_reuses_the_cache(app, handlers):
    """Typing a target edits before any Edit was pressed (inverting first), then re-edits from the cache; half-typed
    input and what the page shows already change nothing."""
    request, photo = gr.Request(session_hash="live-test"), str(CAT)
    skipped = tuple(gr.skip() for _ in range(6))
    assert handlers.live_edit(None, None, SOURCE, "a tiger", request) == skipped  # no photo yet: no error either
    assert handlers.live_edit(photo, None, SOURCE, "", request) == skipped  # half-typed input
    first = handlers.live_edit(photo, None, SOURCE, "a tiger", request)[4]
    assert not first["inversion_cached"] and first["request_unet_forwards"] > 4  # inverted, before any Edit
    edited, _, summary, _, details, overlay = handlers.live_edit(photo, None, SOURCE, "a lion", request)
    assert details["inversion_cached"] and details["request_unet_forwards"] == 4 and edited.size == (451, 300)
    assert overlay.size == (451, 300) and details["mask"] == "none"
    assert handlers.live_edit(photo, None, SOURCE, "a lion", request) == skipped  # what the page shows already


def test_a_session_s_photo_is_decoded_once_for_its_live_edits(handlers, monkeypatch, tmp_path):
    """Each pause in typing re-edits; the upload behind it is decoded, converted and hashed once per session (again
    only when the file changes), and at most ``capacity`` sessions' photos are kept."""
    decoded, load = [], editor_cache.load_photo
    monkeypatch.setattr(editor_cache, "load_photo", lambda source, *a: decoded.append(source) or load(source, *a))
    photo, request = shutil.copy(CAT, tmp_path / "cat.jpg"), gr.Request(session_hash="decoded-once")
    for target in ("a tiger", "a lion", "a fox"):
        assert handlers.live_edit(str(photo), None, SOURCE, target, request)[0] is not None
    assert len(decoded) == 1
    handlers.live_edit(str(photo), None, SOURCE, "a dog", gr.Request(session_hash="another"))
    assert len(decoded) == 2  # another session's own
    os.utime(photo, ns=(10**9, 10**9))  # the file changed: read again
    assert handlers.live_edit(str(photo), None, SOURCE, "a wolf", request)[0] is not None and len(decoded) == 3
    for n in range(handlers.photos.capacity + 3):
        handlers.photos.load(str(photo), f"session {n}")
    assert len(handlers.photos.kept) == handlers.photos.capacity


def test_after_a_refused_edit_typing_the_target_edits_again(app, handlers):
    """A refusal clears the page: typing the same target as the last edit shown before it edits again (the page no
    longer shows that edit), from the cache."""
    request = gr.Request(session_hash="refused-then-typed")
    handlers.page_edit(str(CAT), None, SOURCE, TARGET, request)
    assert handlers.page_edit(str(CAT), None, SOURCE, "  ", request)[2].startswith(server_handlers.REFUSED)
    again = handlers.live_edit(str(CAT), None, SOURCE, TARGET, request)
    assert again[0].size == (451, 300) and again[4]["inversion_cached"]


@pytest.mark.parametrize(
    ("photo", "source", "target", "now"),
    [
        (str(CAT), SOURCE, TARGET, None),  # its cause fixed: the ready line
        (None, SOURCE, TARGET, "Upload a photo first."),  # another cause: said instead
        (str(CAT), SOURCE, "", "The target prompt (what the photo should become) is empty."),  # still so
    ],
)
def test_a_stale_refusal_is_taken_back_once_its_cause_is_fixed(app, photo, source, target, now):
    stale = f"{server_handlers.REFUSED} The target prompt (what the photo should become) is empty."
    assert app.recheck(photo, source, target, stale) == (
        server_handlers.READY if now is None else f"{server_handlers.REFUSED} {now}"
    )
    assert app.recheck(str(CAT), SOURCE, "", "**Inversion** ...") == gr.skip()  # an edit's summary stays as it is


def test_typing_is_debounced_last_request_wins(handlers):
    request = gr.Request(session_hash="debounce-test")

    async def burst():
        first = asyncio.create_task(handlers.wait_for_pause(request))
        await asyncio.sleep(0.05)
        return await asyncio.gather(first, handlers.wait_for_pause(request))

    first, last = asyncio.run(burst())
    assert first == gr.skip() and isinstance(last, int)


def test_a_refused_edit_on_the_page_shows_one_consistent_state(app, handlers):
    """Not Gradio's error state on some outputs and the last summary on another: no images, the summary says why."""
    request = gr.Request(session_hash="refused")
    handlers.page_edit(str(CAT), None, SOURCE, TARGET, request)
    edited, reconstruction, summary, residuals, details, overlay = handlers.page_edit(
        str(CAT), None, SOURCE, "   ", request
    )
    assert edited is None and reconstruction is None and overlay is None and details is None and residuals.empty
    assert summary.startswith("**Not edited.**") and "target prompt (what the photo should become) is empty" in summary


def test_the_residual_plot_says_why_it_is_empty_under_the_default(app, handlers):
    """DDIM (the default) inverts each step in one pass: no iterates, an empty plot, whose label says so; a
    Newton-Raphson method's residuals fill it."""
    request = gr.Request(session_hash="residual-plot")
    assert handlers.page_edit(str(CAT), None, SOURCE, TARGET, request)[3].empty
    newton = handlers.page_edit(str(CAT), None, SOURCE, TARGET, request, method="rnri")[3]
    assert set(newton["iterate"]) >= {"iterate 0", "iterate 1"}
    plot = next(b for b in app.demo.blocks.values() if getattr(b, "elem_id", None) == "residual-plot")
    assert plot.label == server_handlers.PLOT_LABEL and "Empty under ddim, the default" in plot.label


def test_model_that_cannot_load_falls_back_to_tiny_with_a_short_banner(app, pipe, tmp_path):
    """One line of why and the ways out in the app's terms, not the loaders' wall of text."""
    resident = ed.open_model(str(tmp_path / "no-such-model"), fallback=True)
    assert resident.model == "tiny" and resident.pipe is pipe and resident.asked.endswith("no-such-model")
    banner = app.banner(resident)
    assert "tiny demo model" in banner and "no-such-model" in banner and "there is no such folder" in banner
    assert "--model tiny" in banner and "--model /path/to/model" in banner and "only draws coloured shapes" in banner
    for noise in ("stacktrace", "local_files_only", "model='tiny'"):
        assert noise not in banner
    offline = ed.open_model("someone/not-cached-anywhere", fallback=True)
    assert "not in the local Hugging Face cache and the Hub cannot be reached" in offline.failure


def test_the_tiny_model_always_has_a_banner_saying_it_only_draws_shapes(app, pipe):
    """Asked for by name (--model tiny) as much as a fallback: it cannot draw a photo, and the page says so at once."""
    banner = app.banner(ed.Resident(pipe, "tiny", "tiny"))
    assert "only draws coloured shapes" in banner and "coloured blobs" in banner and "python app.py" in banner
    assert app.banner(ed.Resident(pipe, "SimianLuo/LCM_Dreamshaper_v7", "SimianLuo/LCM_Dreamshaper_v7")) == ""


def test_off_world_photos_are_called_poor_on_the_tiny_model_and_its_own_good(client):
    """The cat on the shapes model comes back as coloured blobs (about 16 dB): never "fair", and the words say why;
    a photo of its own world reconstructs well and is called so."""
    cat = edit(client, CAT, seed=21)["summary"]
    assert "poor: this model only draws coloured shapes" in cat and "fair" not in cat and "good:" not in cat
    shapes = edit(client, ROOT / "assets" / "shapes-red-circle.png", "a large red circle on a blue background")
    assert "dB (good: hard to tell from the photo" in shapes["summary"] or "dB (fair" in shapes["summary"]
    assert "poor" not in shapes["summary"] and "only draws" not in shapes["summary"]


def test_solver_detail_is_in_the_details_in_words_not_warnings_in_the_summary(handlers):
    """The default example: no warning lines of solver jargon in the summary (there were two); the details have a
    note for each step where an iterate fitted worse than the one before, saying what the solver kept and what to
    try."""
    photo, source = str(ROOT / "assets" / "shapes-red-circle.png"), "a large red circle on a blue background"
    request = gr.Request(session_hash="solver-notes")
    edit = handlers.page_edit(photo, None, source, "a large pink heart", request, method="rnri", iterations=3)
    _, _, summary, residuals, details, _ = edit  # a Newton-Raphson method: DDIM, the default, has no iterates
    assert "⚠️" not in summary and "residual rose" not in summary
    rises = [
        step for step, rows in residuals.groupby("step", sort=False) if (rows["residual"].diff().dropna() > 0).any()
    ]
    assert rises and [note.split()[2] for note in details["solver_notes"]] == rises  # "At step t=999 ..."
    assert all("rnri kept the better one, so nothing was lost" in note for note in details["solver_notes"])
    from rnri.editor.report import solver_notes

    (kept,) = solver_notes("rnri", [[0.2, 0.3]], [999])
    assert kept.startswith("At step t=999 iterate 1 fitted worse") and "try 2 Newton iterations" in kept
    (after_two,) = solver_notes("rnri", [[0.2, 0.1, 0.3]], [999])  # two iterations ran: more is three, not two
    assert after_two.startswith("At step t=999 iterate 2 fitted worse") and "try 3 Newton iterations" in after_two
    (last,) = solver_notes("fixed-point", [[0.2, 0.1, 0.3]], [999])
    assert "t=999" in last and "keeps its last iterate" in last and "try fewer iterations or 'ddim'" in last


def test_a_mask_that_reaches_every_pixel_says_so_instead_of_a_psnr_of_none(client, tmp_path):
    """A mask over all but a 4 px border, feathered by 4 px, leaves no pixel outside its reach: no background to
    measure, and the summary says what that means and what to do (it said "PSNR None dB")."""
    border = box_mask(tmp_path / "almost-all.png", box=(4, 4, 447, 296))
    out = edit(client, CAT, mask=handle_file(str(border)))
    assert out["mask_reaches_everywhere"] and out["background_psnr_db"] is None and not out["background_identical"]
    assert "None" not in out["summary"]
    assert "with its edge (feather 4 px) it reaches every pixel: nothing is kept as it was" in out["summary"]
    assert "paint less, or lower the dilation and feather" in out["summary"]


def test_options_default_to_local_and_follow_the_environment(app, monkeypatch):
    for name in ("RNRI_MODEL", "GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT"):
        monkeypatch.delenv(name, raising=False)
    args = app.parse_args([])
    assert (args.host, args.port, args.model, args.log_level) == ("127.0.0.1", 7860, rnri.DEFAULT_MODEL, "warning")
    monkeypatch.setenv("RNRI_MODEL", "tiny")
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    assert (app.parse_args([]).model, app.parse_args([]).host) == ("tiny", "0.0.0.0")
    assert app.parse_args(["--host", "::1", "--model", "/models/lcm"]).host == "::1"


def test_the_app_and_the_cli_take_the_model_flags_of_one_description(app, monkeypatch, capsys):
    """Each model and speed flag is in both front ends with the same help; the app also reads it from the
    environment (a server's usual configuration), the CLI from its command line only."""
    helps = []
    for show in (lambda: app.parse_args(["--help"]), lambda: cli.main(["edit", "--help"])):
        with pytest.raises(SystemExit):
            show()
        helps.append(" ".join(capsys.readouterr().out.split()))
    for flag in ed.model_flags():
        assert all(flag.name in shown and " ".join(flag.help.split()) in shown for shown in helps), flag.name
        assert (flag.env in helps[0]) and (flag.env not in helps[1] or flag.env == "RNRI_MODEL"), flag.name
    for name, value in {
        "RNRI_COMPILE": "1",
        "RNRI_OFFLOAD": "on",
        "RNRI_LORA": "a/lora",
        "RNRI_LOG_LEVEL": "info",
    }.items():
        monkeypatch.setenv(name, value)
    args = app.parse_args([])
    assert (args.compile, args.channels_last, args.offload, args.lora, args.log_level) == (
        True,
        False,
        "on",
        "a/lora",
        "info",
    )
    assert app.parse_args(["--offload", "off"]).offload == "off"  # the command line over the environment


def test_served_locally_without_share_link_with_bounded_queue_and_uploads(app, url):
    assert url.startswith("http://127.0.0.1:")
    assert app.demo.share is False and app.demo.max_file_size == 30 * 1024 * 1024
    assert app.demo._queue.max_size == app.QUEUE_SIZE
    model_work = ("page_edit", "edit", "live_edit", "paint_auto_mask", "edit_example")  # edit: the API's, documented
    gpu = [fn for fn in app.demo.fns.values() if fn.name in model_work]
    # Edit, /edit, live edits, the automatic mask, examples, "Edit this result" (a page_edit) and a restored edit of
    # the history (a live_edit): every one on the one GPU queue
    assert len(gpu) == 7 and all(fn.concurrency_id == "gpu" and fn.concurrency_limit == 1 for fn in gpu)


# Local edits: a painted (or automatic) mask confines the edit; the mask is no part of the inversion's cache key.


def tinted(overlay: Image.Image, photo: Path) -> np.ndarray:
    """(H, W) True where the overlay tints the photo."""
    return np.abs(pixels(overlay) - pixels(Image.open(photo))).max(axis=-1) > 0


def test_the_old_three_argument_call_still_edits_the_whole_photo(client):
    out = edit(client, CAT)
    assert out["mask"] == "none" and out["mask_coverage"] is None and out["edited"].size == (451, 300)
    assert tinted(out["overlay"], CAT).all()  # the edit acts everywhere, and the overlay says so


@pytest.mark.parametrize("mode", ["L", "RGBA"])
def test_a_painted_mask_keeps_the_photo_outside_it_exactly(client, tmp_path, mode):
    """A mask file (white = edit) or a brush layer (any paint = edit); paste-back is on by default."""
    out = edit(client, CAT, mask=handle_file(str(box_mask(tmp_path / "mask.png", mode=mode))))
    photo, edited, keep = pixels(Image.open(CAT)), pixels(out["edited"]), outside()
    assert np.array_equal(edited[keep], photo[keep])
    assert np.abs(edited[~keep] - photo[~keep]).mean() > 20  # the tiny model's edit is noise: it shows
    assert out["mask"] == "painted" and out["background_identical"] and out["background_psnr_db"] is None
    assert not out["mask_reaches_everywhere"]
    assert out["mask_coverage"] == pytest.approx(150 * 100 / (451 * 300), abs=1e-3)
    assert "**Mask**: painted, 11% of the photo · outside it: identical to the photo" in out["summary"]
    tint = tinted(out["overlay"], CAT)
    assert tint[~keep].all() and not tint[keep & outside((130, 80, 320, 220))].any()  # feather: 3 x 4 px


def test_the_page_s_painted_layers_are_read_once_per_stroke_into_a_region(app, handlers, tmp_path):
    """The page's events carry the region the server read when the image editor changed, not the editor itself
    (whose every use as an input makes the browser export and upload its whole canvas again)."""
    layer = box_mask(tmp_path / "layer.png", mode="RGBA")
    painted = painted_on(app, CAT, [layer])
    assert painted.shape == (1, 1, 300, 451)
    assert float(painted.mean()) == pytest.approx(150 * 100 / (451 * 300), abs=1e-3)
    out = handlers.page_edit(str(CAT), painted, SOURCE, TARGET, gr.Request(session_hash="canvas"))[4]
    assert out["mask"] == "painted" and out["background_identical"]
    other = handlers.page_edit(str(COFFEE), painted, SOURCE, TARGET, gr.Request(session_hash="canvas"))[4]
    assert other["mask"] == "none"  # painted over another photo: not this one's mask
    assert painted_on(app, CAT) is None and app.read_mask(None)[0] is None
    assert app.read_mask({"background": None, "layers": []}) == (gr.skip(), gr.skip())  # named, never sent
    assert (
        app.read_mask({"background": str(CAT), "layers": [str(layer)]})[1]
        == "Photo 451x300, painted: 11% of it, where the edit acts."
    )


def test_a_new_photo_is_checked_once_and_shown_for_painting(app, tmp_path):
    photo, value, painted, hint = app.show_photo(str(CAT))
    assert photo == gr.skip() and value["background"].size == (451, 300) and value["layers"] == [] and painted is None
    assert hint.startswith("Photo 451x300, nothing painted")
    assert app.show_photo(None) == (gr.skip(), None, None, gr.skip())  # cleared: photo.clear says so


def test_a_photo_that_cannot_be_edited_leaves_the_photo_box_with_the_reason_under_it(app, tmp_path):
    """No broken-image icon stays in the Photo box, and no warning goes to the console (gr.Warning outside a queued
    event is a Python warning, one per refused upload): the line under the box says why."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        photo, value, painted, hint = app.show_photo(str(write(tmp_path / "notes.png", b"not an image")))
    assert photo is None and value is None and painted is None
    assert hint.startswith("⚠️") and "'notes.png' is not an image" in hint
    assert not caught, [str(w.message) for w in caught]


def test_a_new_mask_re_edits_from_the_cached_inversion(url, tmp_path):
    session = Client(url, verbose=False)
    first = edit(session, CAT, mask=handle_file(str(box_mask(tmp_path / "a.png"))))
    other_box = (20, 20, 120, 120)
    second = edit(session, CAT, mask=handle_file(str(box_mask(tmp_path / "b.png", box=other_box))))
    cleared = edit(session, CAT)
    assert not first["inversion_cached"] and (first["request_unet_forwards"], first["request_unet_backwards"]) == (
        15,
        0,
    )
    for again in (second, cleared):
        assert again["inversion_cached"]
        assert (again["request_unet_forwards"], again["request_unet_backwards"]) == (4, 0)
    keep = outside(other_box)
    assert np.array_equal(pixels(second["edited"])[keep], pixels(Image.open(CAT))[keep])
    assert second["edited"].tobytes() != first["edited"].tobytes() != cleared["edited"].tobytes()


def test_without_paste_back_the_background_is_measured_not_identical(client, tmp_path):
    out = edit(client, CAT, mask=handle_file(str(box_mask(tmp_path / "mask.png"))), paste_back=False)
    assert out["mask"] == "painted" and not out["background_identical"]
    assert math.isfinite(out["background_psnr_db"]) and "outside it: PSNR" in out["summary"]
    assert f"PSNR {out['background_psnr_db']:.2f} dB against the photo" in out["summary"]


def test_the_automatic_mask_is_shown_and_reused_while_only_the_blend_changes(url):
    session = Client(url, verbose=False)
    first = edit(session, COFFEE, "a cup of coffee on a table", "a cup of tea on a table", auto_mask=True)
    assert first["mask"] == "auto" and first["edit_unet_forwards"] == 8 + 4  # 2 UNet calls a step, then the edit
    assert 0 < first["mask_coverage"] < 1 and first["background_identical"]
    assert first["overlay"].size == (600, 400)
    tint = tinted(first["overlay"], COFFEE)
    assert 0 < tint.mean() < 1
    wider = edit(session, COFFEE, "a cup of coffee on a table", "a cup of tea on a table", auto_mask=True, dilation=8)
    assert wider["mask"] == "auto (reused)" and wider["request_unet_forwards"] == 4
    assert wider["mask_coverage"] == first["mask_coverage"]  # the mask before dilation
    assert tinted(wider["overlay"], COFFEE).sum() > tint.sum()


def test_a_painted_mask_wins_over_the_automatic_one(client, tmp_path):
    out = edit(client, CAT, mask=handle_file(str(box_mask(tmp_path / "mask.png"))), auto_mask=True)
    assert out["mask"] == "painted" and out["edit_unet_forwards"] == 4


def test_paint_over_the_automatic_mask_puts_it_in_the_brush_layer(app, handlers, tmp_path):
    request = gr.Request(session_hash="paint-auto")
    coffee = (str(COFFEE), None, "a cup of coffee on a table", "a cup of tea on a table")
    value, region, line = handlers.paint_auto_mask(*coffee, request, auto_mask=True)
    assert value["background"].size == (600, 400) and len(value["layers"]) == 1
    assert line == f"Photo 600x400, painted: {float(region.mean()):.0%} of it, where the edit acts."
    painted = np.asarray(value["layers"][0])[..., 3] > 0
    auto = handlers.page_edit(*coffee, request, auto_mask=True)[4]
    assert auto["mask"] == "auto (reused)"  # the button estimated it once, in the session's cache
    assert painted.mean() == pytest.approx(auto["mask_coverage"], abs=5e-5)  # the report rounds to 4 digits
    value["layers"][0].save(tmp_path / "layer.png")
    assert np.array_equal(painted_on(app, COFFEE, [tmp_path / "layer.png"]).numpy(), region.numpy())  # read back
    corrected = handlers.page_edit(str(COFFEE), region, *coffee[2:], request)[4]
    assert corrected["mask"] == "painted" and corrected["mask_coverage"] == pytest.approx(auto["mask_coverage"])


def test_clear_mask_keeps_the_photo_and_drops_the_layers(app):
    cleared, painted, line = app.clear_mask(str(CAT))
    assert cleared["layers"] == [] and cleared["background"].size == (451, 300)
    assert painted is None and line.startswith("Photo 451x300, nothing painted")
    assert app.clear_mask(None) == (gr.skip(), gr.skip(), gr.skip())


@pytest.mark.parametrize(
    ("mask", "settings", "message"),
    [
        (lambda p: box_mask(p, size=(100, 100)), {}, "The mask is 100x100 pixels but the photo is 451x300"),
        (lambda p: box_mask(p, size=(300, 451)), {}, "needs the photo's aspect ratio"),
        (lambda p: write(p, b"not a mask"), {}, "'mask.png' is not an image"),
        (lambda p: write(p, png_header(12_000, 12_000)), {}, "The mask is 12000x12000 pixels"),
        (None, {"dilation": -1}, "Mask dilation \\(px\\) must be a whole number from 0 to 64, got -1"),
        (None, {"feather": 100}, "Mask feather \\(px\\) must be a number from 0 to 32, got 100"),
        (None, {"auto_mask": "yes"}, "Automatic mask must be true or false, got 'yes'"),
    ],
)
def test_a_bad_mask_is_refused_with_a_message(client, tmp_path, mask, settings, message):
    if mask is not None:
        settings["mask"] = handle_file(str(mask(tmp_path / "mask.png")))
    with pytest.raises(AppError, match=message):
        edit(client, CAT, **settings)
    still_serving(client)


def test_a_bigger_mask_of_the_same_aspect_ratio_is_scaled_to_the_photo(client, tmp_path):
    big = box_mask(tmp_path / "big.png", size=(902, 600), box=tuple(2 * v for v in BOX))
    out = edit(client, CAT, mask=handle_file(str(big)))
    assert np.array_equal(pixels(out["edited"])[outside()], pixels(Image.open(CAT))[outside()])


def test_an_opaque_alpha_channel_is_no_transparency(client, tmp_path):
    out = edit(client, saved(tmp_path / "opaque.png", noise_image(64, 48, "RGBA")))  # as the editor's canvas sends
    assert out["notices"] == []


def test_on_a_space_gpu_work_runs_under_spaces_gpu_and_examples_are_cached_lazily(app, monkeypatch, tmp_path):
    leased = []

    class FakeSpaces:
        @staticmethod
        def GPU(fn, duration):  # noqa: N802 (spaces' name)
            def run(*args, **kwargs):  # as ZeroGPU: a callable duration is asked with the call's arguments
                leased.append((fn.__name__, duration(*args, **kwargs) if callable(duration) else duration))
                return fn(*args, **kwargs)

            return run

    monkeypatch.setattr(rnri.pipelines.spaces_support, "spaces", FakeSpaces)
    monkeypatch.setenv("SPACE_ID", "someone/rnri")
    monkeypatch.setenv("GRADIO_EXAMPLES_CACHE", str(tmp_path))
    monkeypatch.setenv("RNRI_MODEL", "tiny")
    spec = importlib.util.spec_from_file_location("app_on_a_space", ROOT / "app.py")
    space = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, space)  # dataclasses look their module up while it loads
    spec.loader.exec_module(space)
    names = [fn.name for fn in space.demo.fns.values()]
    assert "load_example_output" in names and "load_example" not in names  # cached: served from the cache
    local_url = serve(space, space.demo)
    try:
        assert not any(tmp_path.iterdir())  # lazily: nothing computed at start-up
        Client(local_url, verbose=False).predict(
            handle_file(str(CAT)), SOURCE, TARGET, auto_mask=True, api_name="/edit"
        )
        assert [name for name, _ in leased] == ["invert_photo", "regenerate_photo"]
        assert all(10 <= duration <= 12 for _, duration in leased), leased  # 64x64, 4 steps: the overhead, little more
        leased.clear()
        example = Client(local_url, verbose=False).predict(0, api_name="/load_example")  # the tiny model's first
        assert Image.open(example[0]).size == (64, 64) and example[4]["request_unet_forwards"] == 15
        assert [name for name, _ in leased] == ["invert_photo", "regenerate_photo"] and any(tmp_path.iterdir())
    finally:
        space.demo.close()


def test_a_zerogpu_lease_follows_the_request(pipe):
    editor = ed.Editor(pipe)
    photo = ed.load_photo(CAT)  # 451x300
    settings = ed.read_form({}, pipe).settings
    short = editor.inversion_lease(photo, "a cat", settings)
    more = editor.inversion_lease(photo, "a cat", dataclasses.replace(settings, num_inference_steps=40))
    assert 10 <= short < more <= 120
    from rnri.editor.service import gpu_seconds

    assert gpu_seconds(13, (512, 512), guided=False) == 13  # 10 s to start, 13 forwards at 0.16 s with the margin
    assert gpu_seconds(250, (512, 512), guided=True) == 90 and gpu_seconds(250, (1024, 1024), guided=True) == 120
