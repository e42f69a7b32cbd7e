"""The served editor against hostile and unlucky requests (issue 13): memory a request can claim, images that cost
more than they look, jobs nobody waits for, files nobody deletes, wrong types from API clients, and the web's own
attacks (rebinding, cross-site posts, framing). Each case fails without its guard; after each, the next good edit
still works."""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import httpx
import numpy as np
import pytest
from conftest import free_port
from gradio_client import Client
from PIL import Image
from test_app import CAT, edit, still_serving

import rnri.editor as ed
from rnri.bench.measure import status_mib
from rnri.editor import scratch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def client(url):
    return Client(url, verbose=False)


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def flat_16_bit(width: int, height: int) -> bytes:
    """A 16-bit grayscale PNG of one value: a few hundred KB that decode to ``2 * width * height`` bytes."""
    return png(Image.fromarray(np.full((height, width), 40000, dtype=np.uint16)))


def painter_of(app):
    return next(block for block in app.demo.blocks.values() if isinstance(block, gr.ImageEditor))


def blob(url: str, app, index: int | str | None, ident: str = "stroke", kind: str = "layer", data: bytes = b"") -> int:
    """POST one blob to the image editor's ``accept_blobs`` route, as the page does after a stroke; the status."""
    fields = {
        "session_hash": "attacker",
        "component_id": str(painter_of(app)._id),
        "fn_name": "accept_blobs",
        "type": kind,
        "index": "null" if index is None else str(index),
        "id": ident,
    }
    files = {"file": ("blob", data or png(Image.new("RGBA", (64, 48))), "image/png")}
    return httpx.post(url + "gradio_api/component_server", data=fields, files=files, timeout=60).status_code


def test_a_huge_layer_index_is_refused_without_growing_memory(app, url, client):
    before = status_mib()
    assert blob(url, app, 3 * 10**7) == 400  # Gradio 6.31 alone grows a list of 3e7 entries: 240 MB
    assert status_mib() - before < 50
    assert blob(url, app, "-1") == 400 and blob(url, app, None, kind="secret") == 400
    assert blob(url, app, 0) == 200  # what the page sends
    still_serving(client)


def test_strokes_nobody_reads_are_bounded_in_number(app, url):
    painter = painter_of(app)
    for n in range(app.PainterGuard.MAX_PENDING + 8):
        assert blob(url, app, 0, ident=f"never-read-{n}") == 200
    assert len(painter.blob_storage) <= app.PainterGuard.MAX_PENDING
    assert (
        "never-read-0" not in painter.blob_storage
        and f"never-read-{app.PainterGuard.MAX_PENDING + 7}" in painter.blob_storage
    )


def test_a_blob_that_decodes_large_is_refused_from_its_header(app, url):
    before = status_mib()
    assert blob(url, app, 0, data=flat_16_bit(4000, 3000)) == 400  # 12 MP: more than any canvas the page shows
    assert status_mib() - before < 50


def test_a_request_body_over_the_limit_is_refused_before_it_is_read(app, url):
    huge = b"x" * (app.MAX_BODY_BYTES + 1)
    response = httpx.post(url + "gradio_api/component_server", content=huge, headers={"content-type": "text/plain"})
    assert response.status_code == 413

    def chunks():  # no declared length: counted as it streams (FastAPI would hold a JSON body whole)
        yield b'{"data": ["'
        for _ in range(app.MAX_BODY_BYTES // 2**20 + 1):
            yield b"y" * 2**20

    for route in ("gradio_api/run/predict", "gradio_api/queue/join"):
        response = httpx.post(url + route, content=chunks(), headers={"content-type": "application/json"})
        assert response.status_code == 413, route


def test_a_malformed_content_length_is_a_bad_request_not_a_crash(url, client):
    host, port = httpx.URL(url).host, httpx.URL(url).port
    with socket.create_connection((host, port), timeout=30) as raw:  # httpx will not send such a header
        raw.sendall(f"POST /gradio_api/upload HTTP/1.1\r\nHost: {host}\r\nContent-Length: lots\r\n\r\nx".encode())
        assert raw.recv(64).startswith(b"HTTP/1.1 400")
    still_serving(client)


def test_too_many_painted_layers_are_refused_before_any_is_decoded(app, tmp_path):
    layer = tmp_path / "layer.png"
    layer.write_bytes(flat_16_bit(451, 300))
    with pytest.raises(gr.Error, match="at most 4 are read"):
        app.read_mask({"background": str(CAT), "layers": [str(layer)] * 8})
    big = tmp_path / "big.png"
    big.write_bytes(flat_16_bit(4510, 3000))  # the cat's aspect, 13.5 MP: more than a canvas of the page holds
    before = status_mib()
    with pytest.raises(gr.Error, match="megapixels"):
        app.read_mask({"background": str(CAT), "layers": [str(big)]})
    assert status_mib() - before < 50


def test_a_mask_is_checked_from_its_header_and_read_one_layer_at_a_time(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(flat_16_bit(6000, 4500))  # 27 MP, 16-bit: over the limit, refused before decoding
    before = status_mib()
    with pytest.raises(ed.InputError, match="24 megapixels"):
        ed.read_region([bomb], (451, 300))
    assert status_mib() - before < 50
    with pytest.raises(ed.InputError, match="at most 4"):
        ed.read_region([bomb] * 5, (451, 300))


def test_photos_are_decoded_only_up_to_the_limit_but_large_jpegs_are_read_reduced(tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(flat_16_bit(6000, 5000))  # 30 MP: Pillow alone would decode 60 MB, then convert it
    with pytest.raises(ed.InputError, match="30 megapixels.*over 24 megapixels"):
        ed.load_photo(big)
    jpeg = tmp_path / "big.jpg"
    Image.new("RGB", (7000, 4000), (90, 120, 200)).save(jpeg, quality=50)  # 28 MP
    photo = ed.load_photo(jpeg)  # the editor downscales it anyway: decoded at 1/4 scale
    assert photo.image.size == (1024, 585) and "downscaled" in photo.notices[-1]
    with pytest.raises(ed.InputError, match="megapixels"):
        ed.load_photo(jpeg, max_side=None)  # kept at full size (the CLI): over the limit


def test_a_strip_too_thin_once_downscaled_is_refused(tmp_path):
    strip = tmp_path / "strip.png"
    Image.new("RGB", (100_000, 16), "red").save(strip)
    with pytest.raises(ed.InputError, match=r"100000x16.*1024x1.*aspect ratio of at most 64:1"):
        ed.load_photo(strip)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"source": 5}, "source prompt .* must be text, got int"),
        ({"target": ["a", "tiger"]}, "target prompt .* must be text, got list"),
        ({"target": "a tiger \ud800"}, "not valid text at position 8"),
        ({"seed": 10**400}, "Seed must be a whole number from 0 to 2147483647"),
        ({"guidance_scale": "lots"}, "must be a number"),
    ],
)
def test_wrong_api_types_get_a_message_naming_the_field(app, pipe, change, message):
    handlers = app.Handlers(ed.Editor(pipe, ed.InversionCache(), "tiny"))
    source, target = change.pop("source", "a cat"), change.pop("target", "a tiger")
    with pytest.raises(gr.Error, match=message) as raised:
        handlers.api_edit(str(CAT), source, target, **change)
    assert "failed" not in str(raised.value)  # not reported as a crash


def test_a_missing_argument_over_http_is_an_error_event_not_a_crash(url, client):
    event = httpx.post(url + "gradio_api/call/edit", json={"data": [None]}).json()["event_id"]
    answer = httpx.get(url + f"gradio_api/call/edit/{event}", timeout=60).text
    assert answer.startswith("event: error") and "didn't receive enough input values (needed: 16, got: 1)" in answer
    still_serving(client)


class Job:
    """A job's request as the handlers see it."""

    def __init__(self, session: str):
        self.session_hash = session


def test_a_job_whose_client_never_listens_is_dropped_at_once(app, pipe):
    listeners = ed.Listeners(grace_s=0.3)
    handlers = app.Handlers(ed.Editor(pipe, ed.InversionCache(), "tiny"), listeners)
    listeners.joined("gone")
    time.sleep(0.3)
    skipped = handlers.api_edit(str(CAT), "a cat", "a tiger", request=Job("gone"))
    assert all(isinstance(out, dict) and out.get("__type__") == "update" for out in skipped)  # gr.skip()
    assert len(handlers.editor.cache) == 0  # nothing was inverted

    listeners.joined("here")  # a client that opens its stream a moment after queueing
    stream = listeners.listening("here")
    threading.Timer(0.1, stream.__enter__).start()
    edited, *_ = handlers.api_edit(str(CAT), "a cat", "a tiger", request=Job("here"))
    assert isinstance(edited, Image.Image)


def test_jobs_beyond_the_limit_per_client_are_refused_with_429():
    calls = []

    async def app(scope, receive, send):
        calls.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    policy = ed.policy_for("127.0.0.1", 1000, on_space=False)
    busy = {"10.0.0.1": policy.max_jobs_per_client}
    guard = ed.WebGuard(app, policy, ed.Listeners(), lambda client: busy.get(client, 0))

    async def statuses(client: str) -> list[int]:
        transport = httpx.ASGITransport(app=guard, client=(client, 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:7860") as http:
            joined = await http.post("/gradio_api/queue/join", json={"session_hash": client})
            return [joined.status_code, (await http.get("/")).status_code]

    assert asyncio.run(statuses("10.0.0.1")) == [429, 200]  # refused; the page still loads
    assert asyncio.run(statuses("10.0.0.2")) == [200, 200]
    assert calls == ["/", "/gradio_api/queue/join", "/"]


def test_the_served_app_counts_each_client_s_queued_edits(app):
    policy = ed.policy_for("127.0.0.1", 1000, on_space=False)
    request = SimpleNamespace(headers={}, client=SimpleNamespace(host="10.0.0.9"))
    event = SimpleNamespace(concurrency_id="gpu", request=request)
    pause = SimpleNamespace(concurrency_id="pause", request=request)
    queue = app.demo._queue
    line = next(iter(queue.event_queue_per_concurrency_id.values()), None)
    if line is None:
        pytest.fail("the served app has no event queue yet")
    line.queue.extend([event, event, pause])
    try:
        assert app.queued_jobs(app.demo, policy)("10.0.0.9") == 2 and app.queued_jobs(app.demo, policy)("x") == 0
    finally:
        del line.queue[-3:]


def test_the_server_answers_only_its_own_host_and_same_site_posts(url, client):
    assert httpx.get(url, headers={"host": "attacker.example"}).status_code == 421  # DNS rebinding
    post = httpx.post(url + "gradio_api/upload", files={"files": ("a.png", png(Image.new("RGB", (32, 32))))},
                      headers={"origin": "https://attacker.example"})  # fmt: skip
    assert post.status_code == 403
    own = httpx.post(url + "gradio_api/upload", files={"files": ("a.png", png(Image.new("RGB", (32, 32))))},
                     headers={"origin": url.rstrip("/")})  # fmt: skip
    assert own.status_code == 200
    headers = httpx.get(url).headers
    assert headers["x-content-type-options"] == "nosniff" and headers["referrer-policy"] == "same-origin"
    assert (
        headers["content-security-policy"] == "frame-ancestors 'self'" and headers["x-frame-options"] == "SAMEORIGIN"
    )
    still_serving(client)


def test_on_a_space_hugging_face_may_frame_the_page_and_any_host_is_answered():
    policy = ed.policy_for("0.0.0.0", 1000, on_space=True)
    assert policy.allowed_hosts is None and "https://huggingface.co" in policy.frame_ancestors
    assert ed.client_of({"x-forwarded-for": "6.6.6.6, 1.2.3.4"}, "10.0.0.1", policy.behind_proxy) == "1.2.3.4"


def test_a_password_is_asked_when_set(app, pipe):
    assert app.auth_of("ann:secret") == ("ann", "secret") and app.auth_of(None) is None
    with pytest.raises(SystemExit, match="user:password"):
        app.auth_of("ann")
    resident = ed.Resident(pipe, "tiny", "tiny")
    demo = app.build_demo(app.Handlers(ed.Editor(pipe)), resident)
    url = app.launch(demo, "127.0.0.1", None, block=False, auth=("ann", "secret"))
    try:
        assert httpx.get(url + "config").status_code == 401
        with httpx.Client() as http:
            assert http.post(url + "login", data={"username": "ann", "password": "nope"}).status_code == 400
            assert http.post(url + "login", data={"username": "ann", "password": "secret"}).status_code == 200
            assert http.get(url + "config").status_code == 200
    finally:
        demo.close()


def test_the_run_folders_of_dead_servers_are_deleted_at_the_next_start(tmp_path):
    start = f"import sys; sys.path.insert(0, {str(ROOT)!r}); from rnri.editor import scratch; from pathlib import Path"
    dead = subprocess.run(
        [sys.executable, "-c", f"{start}; import os; f = scratch.start_run(Path({str(tmp_path)!r})); "
         "(f / 'upload.png').write_bytes(b'x'); print(f); os._exit(9)"],  # as kill -9: no clean-up runs
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    left = Path(dead.stdout.strip())
    assert (left / "upload.png").exists()
    alive = subprocess.Popen(
        [sys.executable, "-c", f"{start}; f = scratch.start_run(Path({str(tmp_path)!r})); print(f, flush=True); "
         "import time; time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        living = Path(alive.stdout.readline().strip())
        mine = scratch.start_run(tmp_path)
        assert not left.exists() and living.exists() and mine.exists()
    finally:
        alive.kill()
        alive.wait()
    again = scratch.start_run(tmp_path)  # the killed one's folder goes at the next start
    assert not living.exists() and again.exists()


def test_the_app_writes_gradio_s_files_into_its_run_folder(app, client):
    folder = Path(os.environ["GRADIO_TEMP_DIR"])
    assert folder.name.startswith(f"run-{os.getpid()}-") and (folder / scratch.LOCK).exists()
    edit(client, CAT)
    assert any(path.suffix in (".jpg", ".png", ".webp") for path in folder.rglob("*"))


def test_every_case_leaves_the_server_editing(client):
    out = edit(client, CAT, target="a photo of a leopard")
    assert out["edited"].size == (451, 300) and json.dumps(out["notices"]) is not None


def test_an_edit_queued_by_a_client_that_never_listens_is_dropped_when_its_turn_comes(app, url, client, caplog):
    config = httpx.get(url + "config").json()
    edit_fn = next(i for i, d in enumerate(config["dependencies"]) if d.get("api_name") == "edit")
    endpoint = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/edit"]
    data = [p.get("parameter_default") for p in endpoint["parameters"]]
    photo = httpx.post(url + "gradio_api/upload", files={"files": ("cat.jpg", CAT.read_bytes())}).json()[0]
    data[:3] = [{"path": photo, "meta": {"_type": "gradio.FileData"}}, "a photo of a cat", "a photo of a tiger"]
    listeners = app.demo.rnri_listeners
    grace, listeners.grace_s = listeners.grace_s, 0.5
    try:
        with caplog.at_level("INFO", logger="rnri.app"):
            joined = httpx.post(url + "gradio_api/queue/join",
                                json={"data": data, "fn_index": edit_fn, "session_hash": "never-listens"})  # fmt: skip
            assert joined.status_code == 200, joined.text
            out = edit(client, CAT, target="a photo of a jaguar")  # queued behind it: served once it is dropped
            assert out["edited"].size == (451, 300)
            assert "dropped a job of session never-listens: its client is gone" in caplog.text
    finally:
        listeners.grace_s = grace


def test_a_server_stopped_by_sigterm_deletes_its_run_folder(tmp_path):
    env = {**os.environ, "GRADIO_TEMP_DIR": str(tmp_path), "RNRI_MODEL": "tiny", "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen(
        [sys.executable, "app.py", "--port", str(free_port())], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )  # fmt: skip
    try:
        assert "rnri editor at" in server.stdout.readline()
        (run,) = (tmp_path / "rnri").glob("run-*")
        server.terminate()  # SIGTERM, as docker stop sends
        assert server.wait(timeout=60) == 0
        assert not run.exists()
    finally:
        server.kill()
