"""The layers point one way (docs/architecture.md, "Layers"), read from the imports of every module (including those
inside functions): math <- pipeline adapter and public API <- editor service <- front ends.

A reader following an uploaded photo from ``app.py`` passes through ``rnri.editor``, then ``rnri`` (the API), then
the inversion and the solvers, and never comes back up.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MATH = {"rnri.chain", "rnri.priors", "rnri.inversion", "rnri.masks", "rnri.options", "rnri.settings"}
MATH |= {"rnri.counting", "rnri.lazy", "rnri.solvers", "rnri.samplers", "rnri.directions"}
ADAPTER = {"rnri", "rnri.adapter", "rnri.images", "rnri.loading", "rnri.api", "rnri.serialize", "rnri.gpu"}
ADAPTER |= {"rnri.spaces_support", "rnri.backbones", "rnri.attention", "rnri.control", "rnri.flux"}
ADAPTER |= {"rnri.jsonshape", "rnri.support"}
EDITOR = {"rnri.editor"}
FRONT_ENDS = {"app", "rnri.cli"}  # take the public API and the editor service, nothing below
ENTRY_POINTS = {"rnri.__main__": {"rnri.cli"}}  # python -m rnri
TOOLS = {"rnri.bench", "rnri.evaluation", "rnri.testbeds", "rnri.edit_testbeds", "rnri.analytic", "rnri.shapes"}
NOT_IN_MATH = ("PIL", "numpy", "gradio", "diffusers", "transformers")  # math takes tensors in and gives tensors out
EXCEPTIONS = {  # (importer, imported): why this one import crosses the layers
    ("rnri.loading", "rnri.shapes.models"): "'tiny' is the shapes LCM shipped in the package, whose folder it names",
    ("rnri.editor.caption", "rnri.shapes.analyze"): "the tiny models' captioner is the shapes world's exact analyzer",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in [ROOT / "app.py", *sorted((ROOT / "rnri").rglob("*.py"))]}


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
    """The layer of a module of ours (by itself or its package)."""
    if name in ENTRY_POINTS:
        return "entry point"
    for label, members in (("front end", FRONT_ENDS), ("tool", TOOLS), ("editor", EDITOR), ("math", MATH)):
        if any(name == m or name.startswith(m + ".") for m in members):
            return label
    if name in ADAPTER or name.split(".")[0] != "rnri":
        return "adapter" if name in ADAPTER else "outside"
    raise AssertionError(f"{name} is in no layer: add it to one in tests/test_layers.py")


ALLOWED = {  # the layers each layer may import from
    "math": {"math"},
    "adapter": {"math", "adapter"},
    "editor": {"math", "adapter", "editor"},
    "tool": {"math", "adapter", "editor", "tool"},
}


@pytest.mark.parametrize("name", sorted(modules()))
def test_every_module_imports_only_from_its_layer_or_below(name):
    mine = layer(name)
    ours = {m for m in imports(modules()[name]) if m == "rnri" or m.startswith("rnri.") or m == "app"}
    if mine == "front end":
        assert ours <= {"rnri", "rnri.editor"}, f"{name} reaches past the API and the editor service: {ours}"
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


PRIVATE_ALLOWED = {  # Gradio's private attributes app.py reads, and why
    "_queue": "Gradio keeps no public count of a client's queued jobs; app.queued_jobs reads its events "
    "(tests/test_hardening.py fails if they change)",
    "_client_instance": "Gradio's MCP server calls the app back through a client it makes without the login; "
    "app.mcp_logs_in makes it logged in under --auth (tests/test_hardening.py fails if that changes)",
    "_skip_components": "an argument of gradio_client.Client, which Gradio's MCP server passes to the client it "
    "makes (app.mcp_logs_in makes that one)",
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
