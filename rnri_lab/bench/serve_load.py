"""``python -m rnri_lab.bench.serve_load``: the served editor under load and hostile uploads (issue 13's figures).

Starts ``python app.py --model tiny`` on a free port and measures, from outside, what the tests cannot afford:

- **clients**: 1, 4, 8, 16 and 32 clients at once, each a new session editing the cat once (an inversion and an
  edit): errors (by kind), median and p95 latency, and the server's resident memory after;
- **soak**: ``--soak`` edits in one session, each a new target prompt (a re-edit from the cached inversion), with
  the server's memory every 50;
- **hostile**: the server's peak memory (VmHWM) after each hostile request of issue 13, and its answer.

Prints one JSON object (``--json PATH`` writes it too). Timings depend on the machine; compare within one run.
"""

from __future__ import annotations

import argparse
import io
import json
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from tqdm import tqdm

from rnri_lab.bench.measure import status_mib

ROOT = Path(__file__).resolve().parents[2]
CAT = ROOT / "assets" / "cat.jpg"


def start_server() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "app.py", "--model", "tiny", "--port", str(port)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    server.stdout.readline()  # "rnri editor at ..." once it serves
    return server, f"http://127.0.0.1:{port}/"


def one_edit(url: str, target: str = "a photo of a tiger") -> tuple[float, str]:
    """One client's edit in a new session: (seconds, "" or the error's kind)."""
    from gradio_client import Client, handle_file

    began = time.perf_counter()
    try:
        Client(url, verbose=False).predict(handle_file(str(CAT)), "a photo of a cat", target, api_name="/edit")
        return time.perf_counter() - began, ""
    except Exception as error:  # the kind is the figure: queue full, too many per client, ...
        return time.perf_counter() - began, f"{type(error).__name__}: {str(error)[:80]}"


def clients(url: str, pid: int, counts: list[int]) -> list[dict]:
    rows = []
    for n in tqdm(counts, desc="clients"):
        with ThreadPoolExecutor(n) as pool:
            results = list(pool.map(lambda _: one_edit(url), range(n)))
        times = sorted(t for t, error in results if not error)
        errors: dict[str, int] = {}
        for _, error in results:
            if error:
                errors[error] = errors.get(error, 0) + 1
        rows.append({
            "clients": n, "ok": len(times), "errors": errors,
            "median_s": statistics.median(times) if times else None,
            "p95_s": times[min(len(times) - 1, int(0.95 * len(times)))] if times else None,
            "rss_mb": status_mib("VmRSS", pid),
        })  # fmt: skip
    return rows


def soak(url: str, pid: int, edits: int) -> list[dict]:
    from gradio_client import Client, handle_file

    session, series = Client(url, verbose=False), []
    for i in tqdm(range(edits), desc="soak"):
        session.predict(handle_file(str(CAT)), "a photo of a cat", f"a photo of a tiger {i}", api_name="/edit")
        if i % 50 == 0 or i == edits - 1:
            series.append({"edit": i + 1, "rss_mb": status_mib("VmRSS", pid)})
    return series


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def hostile(url: str, pid: int) -> list[dict]:
    """Each hostile request of issue 13 once; the server's answer and its peak memory after."""
    config = httpx.get(url + "config").json()
    painter = next(c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == "painter")
    sixteen = png(np.full((9000, 9000), 40000, dtype=np.uint16))  # 81 MP, 16-bit: a few hundred KB

    def blob(index: str, data: bytes) -> int:
        fields = {"session_hash": "h", "component_id": str(painter), "fn_name": "accept_blobs", "type": "layer",
                  "index": index, "id": "x"}  # fmt: skip
        return httpx.post(
            url + "gradio_api/component_server", data=fields, files={"f": ("b", data)}, timeout=120
        ).status_code

    small = png(np.zeros((48, 64, 4), dtype=np.uint8))
    cases = {
        "accept_blobs with index 3e8": lambda: blob(str(3 * 10**8), small),
        "accept_blobs with an 81 MP 16-bit layer": lambda: blob("0", sixteen),
        "upload and edit an 81 MP 16-bit PNG": lambda: upload_and_edit(url, sixteen),
        "a 40 MB JSON body": lambda: (
            httpx.post(
                url + "gradio_api/run/predict",
                content=b'{"d":"' + b"y" * 40 * 2**20,
                headers={"content-type": "application/json"},
            ).status_code
        ),  # fmt: skip
    }
    rows = []
    for name, case in cases.items():
        answer = case()
        rows.append(
            {
                "case": name,
                "answer": answer,
                "peak_rss_mb": status_mib("VmHWM", pid),
                "rss_mb": status_mib("VmRSS", pid),
            }
        )
    return rows


def upload_and_edit(url: str, data: bytes) -> str:
    from gradio_client import Client, handle_file

    path = Path("/tmp/rnri-hostile-16bit.png")
    path.write_bytes(data)
    try:
        Client(url, verbose=False).predict(handle_file(str(path)), "a", "b", api_name="/edit")
        return "edited"
    except Exception as error:
        return str(error)[:120]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", default="1,4,8,16,32", help="client counts (%(default)s)")
    p.add_argument("--soak", type=int, default=300, help="edits in the soak (%(default)s)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    server, url = start_server()
    try:
        found = {"start_rss_mb": status_mib("VmRSS", server.pid)}
        found["hostile"] = hostile(url, server.pid)
        found["clients"] = clients(url, server.pid, [int(n) for n in args.clients.split(",")])
        found["soak"] = soak(url, server.pid, args.soak)
    finally:
        server.terminate()
        server.wait()
    print(json.dumps(found, indent=1))
    if args.json:
        args.json.write_text(json.dumps(found, indent=1))


if __name__ == "__main__":
    main()
