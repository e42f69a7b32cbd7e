"""Every Python snippet of the README and docs/ runs as written: against the app served on the tiny model (the
snippets' local URLs point at it), in a folder with the photos of assets/ and the mask files they open, with
``rnri.load_pipeline()`` loading the tiny model instead of downloading the real one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image

import rnri

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LOCAL_URL = re.compile(r"http://127\.0\.0\.1:786[01]/")  # where the snippets expect the app


def snippets(path: Path) -> list[str]:
    """The code of every fenced ``python`` block of ``path``, in order."""
    return re.findall(r"^```python\n(.*?)^```", path.read_text(), flags=re.M | re.S)


DOCUMENTED = [path for path in DOCS if snippets(path)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A working folder as the snippets expect one: assets/, and the mask files they name (the cat's size)."""
    folder = tmp_path_factory.mktemp("snippets")
    (folder / "assets").symlink_to(ROOT / "assets")
    mask = Image.new("L", (451, 300), 0)
    mask.paste(255, (150, 100, 300, 200))
    mask.save(folder / "mask.png")
    layer = Image.new("RGBA", (451, 300), (0, 0, 0, 0))
    layer.paste((255, 0, 200, 128), (150, 100, 300, 200))
    layer.save(folder / "layer.png")
    return folder


def test_the_docs_have_python_snippets():
    names = [path.name for path in DOCUMENTED]
    assert "README.md" in names and "app.md" in names and sum(len(snippets(p)) for p in DOCUMENTED) >= 6


@pytest.mark.parametrize("path", DOCUMENTED, ids=[path.name for path in DOCUMENTED])
def test_a_document_s_snippets_run(path, url, folder, pipe, monkeypatch, capsys):
    """A document's snippets in order, in one namespace, as a reader runs them (a later one may use an earlier's
    names); a failure names the snippet (``file#n``)."""
    monkeypatch.chdir(folder)
    monkeypatch.setattr(rnri, "load_pipeline", lambda model=None, **_: pipe)  # no download: the tiny model
    namespace = {"__name__": "__main__"}
    for n, code in enumerate(snippets(path), 1):
        exec(compile(LOCAL_URL.sub(url, code), f"{path.name}#{n}", "exec"), namespace)  # noqa: S102
    capsys.readouterr()
