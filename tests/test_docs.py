"""Every Python snippet of the README and docs/ runs as written: against the app served on the tiny model (the
snippets' local URLs point at it), in a folder with the photos of assets/ and the mask files they open, with
``rnri.load_pipeline()`` loading the tiny model instead of downloading the real one. And every number the docs quote
from a command is the command's: the local-edit and reconstruction tables (``python -m rnri_lab.edit_testbeds``), what
an edit costs, how many examples the page shows, and each message of the bad-input tables."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import rnri
import rnri.server.handlers as server_handlers

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


# The numbers the docs quote, read from the commands and the code that make them.

LOCAL_EDITS, APP = (ROOT / "docs" / name for name in ("local-edits.md", "app.md"))
NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}


def table_after(path: Path, heading: str) -> list[list[str]]:
    """The body rows (cells stripped) of the first Markdown table from the line of ``path`` holding ``heading`` on
    (that line may be the table's header)."""
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if heading in line)
    rows, begun = [], False
    for line in lines[start:]:
        if line.startswith("|"):
            begun = True
            if not set(line) <= set("|-: "):
                rows.append([cell.strip() for cell in line.strip("|").split("|")])
        elif begun:
            break
    return rows[1:]  # without the header


def quoted(cell: str) -> float:
    """A PSNR as a table writes it: a number, or 'inf' (with words after it)."""
    return math.inf if cell.startswith("inf") else float(cell.split()[0])


def same(documented: float, measured: float, tolerance: float) -> bool:
    return (
        documented == measured
        if math.isinf(documented) or math.isinf(measured)
        else abs(documented - measured) <= tolerance
    )


@pytest.fixture(scope="module")
def measured():
    """What ``python -m rnri_lab.edit_testbeds`` prints, as data (about 15 s of CPU on one thread)."""
    from rnri_lab import edit_testbeds

    return edit_testbeds.mask_rows(), edit_testbeds.reconstruction_rows(), edit_testbeds.analytic_table()


def test_the_local_edit_numbers_are_the_command_s(measured):
    """docs/local-edits.md's tables and the README's sentence are what ``python -m rnri_lab.edit_testbeds`` prints now
    (they said "random weights" and 13.57 dB long after the tiny model was trained)."""
    rows, _, analytic = measured
    documented = table_after(LOCAL_EDITS, "Local edits on the tiny shapes model")
    assert [(d[0], d[1]) for d in documented] == [(r.photo, r.mask) for r in rows]
    for d, r in zip(documented, rows):
        assert d[2] == f"{r.coverage:.0%}", (d, r)
        assert same(quoted(d[3]), r.background_psnr, 0.05) and same(quoted(d[4]), r.inside_psnr, 0.05), (d, r)
    printed = [line.strip("|").split("|") for line in analytic.splitlines()[2:]]
    for d, p in zip(table_after(LOCAL_EDITS, "Analytic testbeds"), printed, strict=True):
        assert d[:2] == [c.strip() for c in p[:2]] and all(
            abs(float(a) - float(b)) <= 1e-3 for a, b in zip(d[2:], p[2:])
        )
    plain = next(r for r in rows if r.photo == "shapes-red-circle.png" and r.mask == "none")
    readme = re.search(r"background keeps ([\d.]+) dB without a mask", (ROOT / "README.md").read_text())
    assert readme and same(float(readme.group(1)), plain.background_psnr, 0.05)


def test_the_reconstruction_words_split_the_tiny_model_s_world_from_real_photos(measured):
    """docs/app.md's table is the command's, and the summary's poor line lies between the two worlds on the tiny
    model: every shapes photo above it, every real photo below, so a real photo there is never called fair."""
    from rnri.editor.report import GOOD_PSNR_DB, POOR_PSNR_DB

    _, rows, _ = measured
    documented = dict((d[0], d[1]) for d in table_after(APP, "| photos | reconstruction PSNR (dB) |"))
    world = rows.pop("shapes")
    low, high, median = map(float, re.findall(r"[\d.]+", next(v for k, v in documented.items() if "shapes" in k)))
    assert same(low, min(world), 0.05) and same(high, max(world), 0.05) and same(median, float(np.median(world)), 0.05)
    assert {name: float(value) for name, value in documented.items() if "shapes" not in name} == pytest.approx(
        {name: values[0] for name, values in rows.items()}, abs=0.05
    )
    assert min(world) > POOR_PSNR_DB > max(v[0] for v in rows.values())
    app = APP.read_text()
    assert f"good from {GOOD_PSNR_DB:.0f} dB" in app and f"poor under {POOR_PSNR_DB:.0f} dB" in app


def test_the_costs_the_docs_quote_are_what_an_edit_costs(url):
    """The first edit's and a re-edit's UNet forwards in docs/app.md and the README are those the app reports (the
    docs said 20 for a first edit when the app reported 21)."""
    from gradio_client import Client, handle_file

    client, photo = Client(url, verbose=False), handle_file(str(ROOT / "assets" / "cat.jpg"))
    *_, first, _ = client.predict(photo, "a photo of a cat", "a photo of a tiger", seed=17, api_name="/edit")
    *_, again, _ = client.predict(photo, "a photo of a cat", "a photo of a lion", seed=17, api_name="/edit")
    text, readme = APP.read_text(), (ROOT / "README.md").read_text()
    rows = {d[0]: d[1] for d in table_after(APP, "| request | UNet evaluations |")}
    assert (
        rows["first edit"]
        == f"{first['request_unet_forwards']} forwards + {first['request_unet_backwards']} backwards"
    )
    assert rows["new target prompt (cached inversion)"] == f"{again['request_unet_forwards']} forwards + 0 backwards"
    words = r"(\d+) of the (\d+) UNet forwards of a first edit \((\d+) to invert, (\d+) to reconstruct, (\d+) to edit"
    split = re.search(words.replace(" ", r"\s+"), text)
    assert split and tuple(map(int, split.groups())) == (
        again["request_unet_forwards"],
        first["request_unet_forwards"],
        first["inversion_unet_forwards"],
        first["request_unet_forwards"] - first["inversion_unet_forwards"] - first["edit_unet_forwards"],
        first["edit_unet_forwards"],
    )
    cited = re.search(r"\((\d+) UNet forwards at 4 steps instead of (\d+)\)".replace(" ", r"\s+"), readme)
    assert cited and tuple(map(int, cited.groups())) == (
        again["request_unet_forwards"],
        first["request_unet_forwards"],
    )


def test_the_docs_count_the_examples_the_page_shows(app):
    text = APP.read_text()
    photos = re.search(r"(\w+) photos from `assets/`", text).group(1)
    renders = re.search(r"(\w+) renders of its own world", text).group(1)
    assert (NUMBER_WORDS[photos], NUMBER_WORDS[renders]) == (len(app.EXAMPLES), len(app.SHAPES_EXAMPLES))


def test_each_message_the_bad_input_tables_quote_is_the_app_s(app, pipe, tmp_path):
    """The input of each row made, and what the app says about it found word for word in docs/app.md (it quoted
    "not an image this editor can read" and "Unknown method" long after the app said otherwise)."""
    from conftest import noise_image
    from test_app import (
        animated,
        box_mask,
        png_header,
        rotated,
        saved,
        sixteen_bit,
        truncated,
        with_transparency,
        write,
    )

    import rnri.editor as ed

    def said(make, *args) -> str:
        try:
            make(*args)
        except ed.InputError as error:
            return str(error)
        raise AssertionError(f"{make.__name__}{args} was not refused")

    size, refused = (451, 300), []
    for name, data in [("notes.txt", b"just some text\n"), ("big.png", png_header(6000, 5000))]:
        refused.append(said(ed.load_photo, write(tmp_path / name, data)))
    refused += [
        said(ed.load_photo, truncated(tmp_path / "truncated.jpg")),
        said(ed.load_photo, write(tmp_path / "strip.png", png_header(100_000, 16))),
        said(ed.load_photo, write(tmp_path / "huge.png", png_header(40_000, 40_000))),
        said(ed.load_photo, saved(tmp_path / "tiny.png", noise_image(8, 8))),
        said(ed.load_photo, None),
        said(server_handlers.prompts_of, 5, "a tiger"),
        said(server_handlers.prompts_of, "a cat", "a tiger \ud800"),
        said(server_handlers.prompts_of, "a cat", "   "),
        said(ed.read_region, [str(box_mask(tmp_path / "square.png", size=(100, 100)))], size),
        said(ed.read_region, [str(write(tmp_path / "mask.png", b"not a mask"))], size),
        said(ed.read_region, [str(write(tmp_path / "bomb.png", png_header(12_000, 12_000)))], size),
        said(ed.read_region, [str(box_mask(tmp_path / "layer.png"))] * 8, size),
    ]
    for setting in [{"dilation": -1}, {"feather": 100}, {"auto_mask": "yes"}, {"num_inference_steps": 0}]:
        refused.append(said(ed.read_form, setting, pipe))
    refused += [said(ed.read_form, {"prior_weight": "lots"}, pipe), said(ed.read_form, {"method": "magic"}, pipe)]
    repairs = [
        (lambda p: saved(p, noise_image(2400, 1600)), "large.jpg"),
        (rotated, "rotated.jpg"),
        (lambda p: saved(p, with_transparency(noise_image(64, 48, "RGBA"))), "rgba.png"),
        (lambda p: saved(p, noise_image(64, 48, "CMYK")), "cmyk.jpg"),
        (sixteen_bit, "16bit.png"),
        (animated, "animated.gif"),
    ]
    repaired = [ed.load_photo(make(tmp_path / name)).notices[0] for make, name in repairs]
    text = APP.read_text()
    missing = [message for message in refused + repaired if message not in text]
    assert not missing, missing


ARCHITECTURE = ROOT / "docs" / "architecture.md"
SOURCES = [ROOT / "app.py", *sorted((ROOT / "rnri").rglob("*.py")), *sorted((ROOT / "tests").glob("*.py")), *DOCS]


def test_the_design_is_cited_from_the_repository():
    """Code and docs cite docs/architecture.md, by a section it has, never a design file outside the repository."""
    outside = "DESIGN" + ".md"  # spelled apart, so that this file does not cite it
    assert [path.name for path in SOURCES if outside in path.read_text()] == []
    sections = set(re.findall(r"^#+ (.+)$", ARCHITECTURE.read_text(), flags=re.M))
    cited = {
        (path.name, section)
        for path in SOURCES
        for section in re.findall(r'docs/architecture\.md,\s+"([^"]+)"', path.read_text())
    }
    assert cited and {(name, section) for name, section in cited if section not in sections} == set()


def test_every_file_the_architecture_names_exists():
    """Where each concern lives, as the files are: a path it names (``rnri/api.py``, ``rnri/core/solvers/``) or a
    module named alone in its package's list (``service.py``) is in the repository."""
    text = ARCHITECTURE.read_text()
    paths = set(re.findall(r"\b((?:rnri_lab|rnri|tests|docs)/[\w/.-]*\w/?|app\.py)", text))
    alone = {name for name in re.findall(r"`(\w+\.py)`", text) if name != "app.py"}
    assert len(paths) > 15 and len(alone) > 30
    assert sorted(path for path in paths if not (ROOT / path).exists()) == []
    found = lambda name: any((ROOT / "rnri").rglob(name)) or any((ROOT / "rnri_lab").rglob(name))  # noqa: E731
    assert sorted(name for name in alone if not found(name)) == []
