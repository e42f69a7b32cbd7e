"""The layers point one way and are the folders (docs/architecture.md, "Layers"), read from the imports of every
module (including those inside functions): math (rnri/core) <- pipelines (rnri/pipelines, the tiny shapes models) and
the public API (rnri/*.py) <- editor service (rnri/editor) <- web server (rnri/server) <- front ends (app.py,
rnri/cli); the lab (rnri_lab/) may use all of it and nothing in rnri uses the lab, so the installed package works
without it.

A reader following an uploaded photo from ``app.py`` passes through ``rnri.server`` and ``rnri.editor``, then ``rnri``
(the API), then the inversion and the solvers, and never comes back up.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {  # a module's layer is its folder's
    "rnri.core": "math",
    "rnri.pipelines": "adapter",
    "rnri.shapes": "adapter",  # the tiny shapes models: their loader, tokenizer, renderer and captioner
    "rnri.editor": "editor",
    "rnri.server": "server",
    "rnri.cli": "front end",
    "rnri_lab": "tool",
}
API = {"rnri", "rnri.api", "rnri.serialize", "rnri.support", "rnri.jsonshape"}  # rnri/*.py: the public API
FRONT_ENDS = {"app"}
ENTRY_POINTS = {"rnri.__main__": {"rnri.cli"}}  # python -m rnri
NOT_IN_MATH = ("PIL", "numpy", "gradio", "diffusers", "transformers")  # math takes tensors in and gives tensors out
EXCEPTIONS: dict[tuple[str, str], str] = {}  # (importer, imported): why this one import crosses the layers


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    found = [ROOT / "app.py", *sorted((ROOT / "rnri").rglob("*.py")), *sorted((ROOT / "rnri_lab").rglob("*.py"))]
    return {module_name(p): p for p in found}


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in it (``from rnri import x`` counts as ``rnri``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def layer(name: str) -> str:
    """The layer of a module of ours (by its folder), or "outside"."""
    if name in ENTRY_POINTS:
        return "entry point"
    if name in FRONT_ENDS:
        return "front end"
    for folder, label in FOLDERS.items():
        if name == folder or name.startswith(folder + "."):
            return label
    if name in API:
        return "adapter"
    if name.split(".")[0] not in {"rnri", "rnri_lab"}:
        return "outside"
    raise AssertionError(f"{name} is in no layer: put it in a folder of tests/test_layers.py's FOLDERS")


ALLOWED = {  # the layers each layer may import from
    "math": {"math"},
    "adapter": {"math", "adapter"},
    "editor": {"math", "adapter", "editor"},
    "server": {"math", "adapter", "editor", "server"},
    "tool": {"math", "adapter", "editor", "server", "tool"},
}
FRONT_END_USES = {"rnri", "rnri.editor", "rnri.server"}  # the public API, the editor service and the web server


@pytest.mark.parametrize("name", sorted(modules()))
def test_every_module_imports_only_from_its_layer_or_below(name):
    mine = layer(name)
    ours = {m for m in imports(modules()[name]) if m.split(".")[0] in {"rnri", "rnri_lab", "app"}}
    if mine == "front end":
        own = {m for m in ours if name.startswith("rnri.cli") and m.startswith("rnri.cli")}
        past = {
            m
            for m in ours - own
            if m != "rnri" and not any(m.startswith(u + ".") or m == u for u in FRONT_END_USES - {"rnri"})
        }
        assert not past, f"{name} reaches past the API, the editor service and the web server: {past}"
        return
    if mine == "entry point":
        assert ours == ENTRY_POINTS[name]
        return
    wrong = {m for m in ours if layer(m) not in ALLOWED[mine] and (name, m) not in EXCEPTIONS}
    assert not wrong, f"{name} ({mine}) imports upwards: {sorted(wrong)}"


@pytest.mark.parametrize("name", sorted(n for n in modules() if layer(n) == "math"))
def test_the_math_loads_nothing_and_draws_no_pictures(name):
    outside = {m.split(".")[0] for m in imports(modules()[name])}
    assert not outside & set(NOT_IN_MATH), f"{name} imports {sorted(outside & set(NOT_IN_MATH))}"


@pytest.mark.parametrize("name", sorted(n for n in modules() if layer(n) == "editor"))
def test_the_editor_service_has_no_ui(name):
    assert "gradio" not in {m.split(".")[0] for m in imports(modules()[name])}


PRIVATE_ALLOWED = {  # Gradio's private attributes the front end and the web server read, and why
    "_queue": "Gradio keeps no public count of a client's queued jobs; rnri.server.gradio_guards.queued_jobs "
    "reads its events (tests/test_hardening.py fails if they change)",
    "_client_instance": "Gradio's MCP server calls the app back through a client it makes without the login; "
    "rnri.server.gradio_guards.mcp_logs_in makes it logged in under --auth (tests/test_hardening.py fails if that "
    "changes)",
    "_skip_components": "an argument of gradio_client.Client, which Gradio's MCP server passes to the client it "
    "makes (mcp_logs_in makes that one)",
}


def test_the_front_ends_hold_no_module_state_a_handler_reaches_for():
    """app.py's module level defines constants, functions and classes, its logger, and builds ``demo``; the service
    is passed to the handlers, never looked up in a global (Gradio's private attributes are not used either, but for
    ``PRIVATE_ALLOWED``)."""
    tree = ast.parse((ROOT / "app.py").read_text())
    assigned = {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets if hasattr(t, "id")}
    assert {name for name in assigned if not name.isupper()} == {"demo", "log"}
    attributes = [n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)]
    private = [a for a in attributes if a.startswith("_") and not (a.startswith("__") and a.endswith("__"))]
    private = [a for a in private if a not in PRIVATE_ALLOWED]
    assert private == [], f"app.py uses private attributes: {private}"


@pytest.mark.parametrize("name", sorted(n for n in modules() if layer(n) == "server"))
def test_the_web_server_reads_only_the_private_attributes_it_names(name):
    """Of objects not its own (its classes' ``self._x`` are theirs): Gradio's, only as ``PRIVATE_ALLOWED`` says."""
    tree = ast.parse(modules()[name].read_text())
    ours = lambda n: isinstance(n.value, ast.Name) and n.value.id in ("self", "cls")  # noqa: E731
    attributes = [n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and not ours(n)]
    private = [a for a in attributes if a.startswith("_") and not (a.startswith("__") and a.endswith("__"))]
    assert [a for a in private if a not in PRIVATE_ALLOWED] == [], f"{name} uses private attributes: {private}"


def test_the_installed_package_holds_no_lab(tmp_path):
    """``pip install .`` builds this wheel: the product (rnri, with the tiny shapes models' weights), not rnri_lab."""
    import subprocess
    import sys
    import zipfile

    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("rnri-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.startswith("rnri-")}
    assert tops == {"rnri"}, tops
    assert "rnri/api.py" in names and "rnri/core/chain.py" in names and "rnri/server/web.py" in names
    assert any(n.startswith("rnri/shapes/weights/") and n.endswith(".safetensors") for n in names)
    assert not any("bench" in n or "evaluation" in n or "testbeds" in n for n in names)


@pytest.mark.parametrize("name", sorted(modules()))
def test_a_long_module_says_why_it_is_one(name):
    """Modules stay under about 400 lines, or their docstring says why they are one (app.py: ~300, page glue)."""
    path = modules()[name]
    lines = len(path.read_text().splitlines())
    if name == "app":
        assert lines <= 300, f"app.py is {lines} lines: move what is not page glue into rnri/server"
    elif lines > 420:
        assert "Why one module" in (ast.get_docstring(ast.parse(path.read_text())) or ""), f"{name}: {lines} lines"
