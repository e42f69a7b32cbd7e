"""``python -m rnri_lab.bench.serve_hostile``: the served editor against issue 24's hostile clients, measured from
outside.

Starts ``python app.py --model tiny`` (and a second server with ``--auth`` and ``--mcp``) from ``--repo`` (this
checkout by default; point it at an older checkout for the figures before a fix) and sends, in turn:

- **file read**: a server-side image named in a FileData without its ``meta``, edited through ``/call/edit`` with a
  one-pixel mask and paste-back (how many of its pixels come back), and the wordings for a missing file, a
  directory and a non-image;
- **jobs**: /call jobs nobody reads, and a peer's wait behind them; 16 joins at once from one address; joins that
  each name another X-Forwarded-For;
- **logins and MCP** (the ``--auth`` server): 300 wrong logins; MCP's schema, tools/list and tools/call with base64
  photos without credentials, and what those leave on disk outside the run folder;
- **memory**: a JSON body of 9M ``{}`` (and how long a GET waits meanwhile), sessions with a 10 MiB prompt,
  concurrent non-queued show_photo calls on a 24-megapixel PNG (each from its own loopback address);
- **disk**: 40 uploads of 30 MB from one address, one request of 1,000 files;
- **minor**: one client's 16 edits and another session's cached inversion, an unknown /call name, a 421's headers.

Clients use their own loopback addresses (127.0.0.2, ...) where the server must tell them apart. Prints one JSON
object (``--json PATH`` writes it too). Memory is the server's resident set (peak reset before each case, Linux).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from rnri_lab.bench.measure import status_mib

ROOT = Path(__file__).resolve().parents[2]
CAT = ROOT / "assets" / "cat.jpg"
MB = 2**20


def start_server(repo: Path, log: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    """``app.py --model tiny`` from ``repo`` on a free port, its log (INFO) in ``log``; (process, url)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RNRI_LOG_LEVEL": "info"}
    command = [sys.executable, "app.py", "--model", "tiny", "--port", str(port), *extra]
    server = subprocess.Popen(command, cwd=repo, stdout=subprocess.PIPE, stderr=log.open("w"), text=True, env=env)
    for line in server.stdout:
        if "rnri editor at" in line:
            break
    threading.Thread(target=server.stdout.read, daemon=True).start()  # never blocks the server on a full pipe
    return server, f"http://127.0.0.1:{port}/"


def http(address: str = "127.0.0.1", timeout: float = 300) -> httpx.Client:
    """A client whose connections come from ``address`` (any of 127.0.0.0/8 reaches a loopback server)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=timeout)


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS


def run_folder(pid: int) -> Path:
    """The run folder of server ``pid`` (``<tmp>/rnri-runs/run-<pid>-...``, ``<tmp>/rnri/...`` before issue 24)."""
    for base in ("rnri-runs", "rnri"):
        found = sorted((Path(tempfile.gettempdir()) / base).glob(f"run-{pid}-*"))
        if found:
            return found[0]
    raise FileNotFoundError(f"no run folder of process {pid}")


def folder_bytes(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


class App:
    """What a client learns from the server's config: the fn_index of each event and /edit's defaults."""

    def __init__(self, url: str) -> None:
        self.url = url
        config = httpx.get(url + "config").json()
        self.index = {d.get("api_name"): i for i, d in enumerate(config["dependencies"])}
        parameters = httpx.get(url + "gradio_api/info").json()["named_endpoints"]["/edit"]["parameters"]
        self.names = [p["parameter_name"] for p in parameters]
        self.defaults = [p.get("parameter_default") for p in parameters]

    def edit_data(self, photo: Any, target: str = "a photo of a tiger", **settings: Any) -> list:
        data = list(self.defaults)
        data[:3] = [photo, "a photo of a cat", target]
        for name, value in settings.items():
            data[self.names.index(name)] = value
        return data

    def upload(self, client: httpx.Client, name: str, data: bytes) -> dict:
        answer = client.post(self.url + "gradio_api/upload", files={"files": (name, data)})
        answer.raise_for_status()
        return {"path": answer.json()[0], "meta": {"_type": "gradio.FileData"}}

    def call(self, client: httpx.Client, data: list, **body: Any) -> tuple[str, Any]:
        """POST /call/edit and read its result: ("complete" | "error" | the refusal's status, data or message)."""
        posted = client.post(self.url + "gradio_api/call/edit", json={"data": data, **body})
        if posted.status_code != 200:
            return str(posted.status_code), posted.text[:160]
        text = client.get(self.url + f"gradio_api/call/edit/{posted.json()['event_id']}").text
        kind = text.split("\n", 1)[0].removeprefix("event: ")
        return kind, json.loads(text.split("data: ", 1)[1].split("\n", 1)[0])

    def join(self, client: httpx.Client, data: list, session: str, headers: dict | None = None) -> int:
        body = {"data": data, "fn_index": self.index["edit"], "session_hash": session}
        return client.post(self.url + "gradio_api/queue/join", json=body, headers=headers or {}).status_code

    def joined_result(self, client: httpx.Client, data: list, session: str) -> Any:
        """Join the queue with /edit and read the stream to its end: the outputs, or the error (None: refused)."""
        if self.join(client, data, session) != 200:
            return None
        with client.stream("GET", self.url + "gradio_api/queue/data", params={"session_hash": session}) as stream:
            for line in stream.iter_lines():
                message = json.loads(line[5:]) if line.startswith("data:") else {}
                if message.get("msg") == "process_completed":
                    return message["output"].get("data") or message["output"]
        return None


def file_read(app: App, repo: Path) -> dict:
    cat = repo / "assets" / "cat.jpg"
    with http() as client:
        mask = np.zeros((300, 451), dtype=np.uint8)
        mask[150, 225] = 255  # one pixel to edit; paste-back keeps every other pixel of the photo
        data = app.edit_data({"path": str(cat)}, mask=app.upload(client, "mask.png", png(mask)), paste_back=True)
        kind, found = app.call(client, data)
        if kind == "complete":
            edited = np.asarray(Image.open(io.BytesIO(client.get(found[0]["url"]).content)).convert("RGB"))
            same = int((edited == np.asarray(Image.open(cat).convert("RGB"))).all(axis=-1).sum())
            result = f"{same:,} of {edited.shape[0] * edited.shape[1]:,} pixels of the server's file came back"
        else:
            result = f"{kind}: {found}"
        wordings = set()
        for path in ("/nonexistent.png", "/root", "/etc/passwd", str(cat)):
            body = {"data": [{"path": path}], "fn_index": app.index["show_photo"]}
            wordings.add(client.post(app.url + "gradio_api/run/predict", json=body).json()["data"][2])
    return {"call_edit": result, "show_photo_wordings": sorted(wordings)}


def jobs(app: App, log: Path) -> dict:
    found = {}
    with http("127.0.0.2") as stranger, http() as peer:
        data = app.edit_data(app.upload(stranger, "cat.jpg", CAT.read_bytes()))
        posted = [stranger.post(app.url + "gradio_api/call/edit", json={"data": data}).status_code for _ in range(4)]
        began = time.perf_counter()
        kind, _ = app.call(
            peer, app.edit_data(app.upload(peer, "cat.jpg", (ROOT / "assets" / "cat.jpg").read_bytes()))
        )
        found["call_never_read"] = {
            "posted": posted, "peer": kind, "peer_wait_s": round(time.perf_counter() - began, 1),
            "dropped": log.read_text().count("dropped a job"),
        }  # fmt: skip
    # no photo: refused at once when its turn comes, so the queue drains; a long prompt (150 KB) makes each body
    # take a moment to read, as a slow client's would
    quick = app.edit_data(None, target="a tiger " * 19_000)
    with http("127.0.0.3") as client, ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda i: app.join(client, quick, f"race-{i}"), range(16)))
    found["16_joins_at_once"] = {"accepted": answers.count(200), "refused_429": answers.count(429)}
    time.sleep(15)  # those jobs are dropped (nobody listens) or refused, and leave the queue
    with http() as client:  # from 127.0.0.1, whose X-Forwarded-For uvicorn trusted by default
        answers = [app.join(client, quick, f"xff-{i}", {"x-forwarded-for": f"10.1.0.{i}"}) for i in range(10)]
    found["10_joins_naming_another_x_forwarded_for"] = {"accepted": answers.count(200)}
    time.sleep(15)
    return found


def logins_and_mcp(url: str, pid: int) -> dict:
    found = {}
    with http("127.0.0.7") as client:
        began = time.perf_counter()
        answers = [client.post(url + "login", data={"username": "ann", "password": f"guess{i}"}).status_code
                   for i in range(300)]  # fmt: skip
        found["300_wrong_logins"] = {
            "s": round(time.perf_counter() - began, 2), "400": answers.count(400), "429": answers.count(429)
        }  # fmt: skip
    outside = Path(tempfile.gettempdir()) / "gradio"
    before = folder_bytes(outside) if outside.exists() else (0, 0)
    rng = np.random.default_rng(time.time_ns())  # new photos each run: Gradio writes a photo it has seen only once
    mcp, headers = url + "gradio_api/mcp/", {"accept": "application/json, text/event-stream"}
    with http("127.0.0.8") as client:
        found["mcp_schema"] = client.get(url + "gradio_api/mcp/schema").status_code
        listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
        found["mcp_tools_list"] = client.post(mcp, json=listing, headers=headers).status_code
        calls = []
        for i in range(20):
            photo = png(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8))  # ~0.8 MB, each different
            arguments = {"photo": "data:image/png;base64," + base64.b64encode(photo).decode(), "source": "a",
                         "target": "b"}  # fmt: skip
            call = {
                "jsonrpc": "2.0",
                "id": 2 + i,
                "method": "tools/call",
                "params": {"name": "edit", "arguments": arguments},
            }
            calls.append(client.post(mcp, json=call, headers=headers).status_code)
    after = folder_bytes(outside) if outside.exists() else (0, 0)
    found["mcp_20_tools_calls_without_login"] = {
        "answers": sorted(set(calls)), "files_outside_run_folder": after[0] - before[0],
        "mb_outside_run_folder": round((after[1] - before[1]) / MB, 1),
    }  # fmt: skip
    return found


def memory(app: App, pid: int) -> dict:
    found = {}
    many = b'{"fn_index": 0, "session_hash": "x", "data": [' + b"{}," * 9_000_000 + b"{}]}"
    waits, done = [], threading.Event()

    def ping() -> None:
        with http("127.0.0.9") as client:
            while not done.is_set():
                began = time.perf_counter()
                client.get(app.url + "gradio_api/app_id")
                waits.append(time.perf_counter() - began)
                time.sleep(0.1)

    reset_peak(pid)
    start = status_mib("VmRSS", pid)
    pinger = threading.Thread(target=ping)
    pinger.start()
    with http() as client:
        answer = client.post(app.url + "gradio_api/run/predict", content=many,
                             headers={"content-type": "application/json"}).status_code  # fmt: skip
    time.sleep(0.5)
    done.set()
    pinger.join()
    found["json_9M_objects_25.7MiB"] = {
        "answer": answer, "peak_mb_over_start": round(status_mib("VmHWM", pid) - start),
        "longest_get_wait_s": round(max(waits), 2),
    }  # fmt: skip
    start = status_mib("VmRSS", pid)
    prompt, answers = "a tiger " * (10 * MB // 8), []
    for i in range(40):  # each its own session and address, one after the other: the queue drains between them
        with http(f"127.0.2.{i + 1}") as client:
            answers.append(app.joined_result(client, app.edit_data(None, target=prompt), f"prompt-{i}") is not None)
    time.sleep(2)
    found["40_sessions_with_a_10MiB_prompt"] = {
        "run": answers.count(True), "rss_mb_growth": round(status_mib("VmRSS", pid) - start)
    }  # fmt: skip
    big = png(np.full((4000, 6000), 40000, dtype=np.uint16))  # 24 MP, 16-bit: a few hundred KB
    with http() as client:
        photo = app.upload(client, "big.png", big)
    reset_peak(pid)
    start = status_mib("VmRSS", pid)

    def show(i: int) -> str:
        with http(f"127.0.1.{i + 1}") as client:
            body = {"data": [photo], "fn_index": app.index["show_photo"]}
            answer = client.post(app.url + "gradio_api/run/predict", json=body)
            return "shown" if answer.status_code == 200 and answer.json()["data"][0] else str(answer.status_code)

    with ThreadPoolExecutor(8) as pool:
        shown = list(pool.map(show, range(8)))
    found["8_show_photo_at_once_24MP_png"] = {
        "shown": shown.count("shown"), "peak_mb_over_start": round(status_mib("VmHWM", pid) - start)
    }  # fmt: skip
    return found


def disk(app: App, pid: int) -> dict:
    folder, found = run_folder(pid), {}
    files, size = folder_bytes(folder)
    began = time.perf_counter()
    rng = np.random.default_rng(1)
    with http("127.0.0.11") as client:
        answers = []
        for i in range(40):
            data = rng.integers(0, 256, 30_000_000, dtype=np.uint8).tobytes()  # 30 MB, each different
            answers.append(client.post(app.url + "gradio_api/upload", files={"files": (f"{i}.bin", data)}).status_code)
    after = folder_bytes(folder)
    found["40_uploads_of_30MB"] = {
        "accepted": answers.count(200), "refused": sorted({a for a in answers if a != 200}),
        "mb_written": round((after[1] - size) / MB), "s": round(time.perf_counter() - began, 1),
    }  # fmt: skip
    files, size = after
    with http("127.0.0.12") as client:
        many = [("files", (f"{i}.txt", b"x")) for i in range(1000)]
        answer = client.post(app.url + "gradio_api/upload", files=many).status_code
    found["1000_files_in_one_request"] = {"answer": answer, "files_written": folder_bytes(folder)[0] - files}
    return found


def minor(app: App, log: Path) -> dict:
    found = {}
    cat = CAT.read_bytes()
    with http() as victim, http("127.0.0.13") as flood:
        photo = app.upload(victim, "cat.jpg", cat)
        app.joined_result(victim, app.edit_data(photo), "victim")
        for i in range(16):
            other = app.upload(flood, f"{i}.png", png(np.full((48, 64, 3), 10 * i, dtype=np.uint8)))
            app.joined_result(flood, app.edit_data(other), f"flood-{i}")
        outputs = app.joined_result(victim, app.edit_data(photo, target="a photo of a lion"), "victim")
        found["victim_inversion_still_cached_after_16_edits_of_another_client"] = outputs[4]["inversion_cached"]
    lines = len(log.read_text().splitlines())
    status = httpx.post(app.url + "gradio_api/call/nothing", json={"data": []}).status_code
    time.sleep(0.5)  # for the log
    found["unknown_call_name"] = {"answer": status, "log_lines": len(log.read_text().splitlines()) - lines}
    answer = httpx.get(app.url, headers={"host": "attacker.example"})
    found["421_has_security_headers"] = [answer.status_code, "x-content-type-options" in answer.headers]
    return found


def measured(case, *args) -> Any:
    """``case(*args)``, or what went wrong (the other cases still run)."""
    try:
        return case(*args)
    except Exception as error:  # a figure too: the server broke or refused in a way the case did not expect
        return f"failed: {type(error).__name__}: {str(error)[:200]}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repo", type=Path, default=ROOT, help="the checkout whose app.py is served (%(default)s)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    found: dict[str, Any] = {"repo": str(args.repo)}
    with tempfile.TemporaryDirectory() as logs:
        log = Path(logs) / "server.log"
        server, url = start_server(args.repo, log)
        try:
            app = App(url)
            found["start_rss_mb"] = round(status_mib("VmRSS", server.pid))
            found["file_read"] = measured(file_read, app, args.repo)
            found["jobs"] = measured(jobs, app, log)
            found["memory"] = measured(memory, app, server.pid)
            found["disk"] = measured(disk, app, server.pid)
            found["minor"] = measured(minor, app, log)
        finally:
            server.terminate()
            server.wait()
        server, url = start_server(args.repo, Path(logs) / "auth.log", "--auth", "ann:secret", "--mcp")
        try:
            found["auth"] = measured(logins_and_mcp, url, server.pid)
        finally:
            server.terminate()
            server.wait()
    print(json.dumps(found, indent=1))
    if args.json:
        args.json.write_text(json.dumps(found, indent=1))


if __name__ == "__main__":
    main()
