"""The command line on the tiny model, in process: edit, invert + regenerate, batch, dispatch, and every user error."""

from __future__ import annotations

import importlib
import json
import math
import os
import subprocess
import sys
import types
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
from conftest import noise_image
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file
from test_app import png_header

import rnri
import rnri.cli.batch as cli_batch
import rnri.cli.commands as cli_commands
import rnri.cli.files as cli_files
from rnri import cli
from rnri.serialize import load_inversion

TINY = ["--model", "tiny", "--device", "cpu"]


@pytest.fixture
def photo(tmp_path) -> Path:
    path = tmp_path / "cat.jpg"
    noise_image(70, 50).save(path, quality=95)
    return path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def rnri_process(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    return subprocess.run([sys.executable, "-m", "rnri", *argv], capture_output=True, text=True, timeout=300, env=env)


def test_help_runs_as_a_module_and_loads_nothing_heavy():
    """``rnri --help`` imports neither torch nor diffusers (it took 11 s when it did) and prints no library notices."""
    result = rnri_process("--help")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    for command in ("edit", "invert", "regenerate", "batch", "bench", "eval"):
        assert command in result.stdout
    probe = (
        "import sys; from rnri import cli\ntry: cli.main(['--help'])\nexcept SystemExit: print(sorted(sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120).stdout
    assert "'torch'" not in loaded and "'diffusers'" not in loaded and "'rnri.cli'" in loaded


def test_a_command_prints_no_library_notices_and_logs_at_the_chosen_level(photo, tmp_path):
    """transformers' "requires torchvision" notices are not the user's business; --log-level shows rnri's own."""
    argv = ["edit", str(photo), "--source", "a cat", "--target", "a dog", "-o", str(tmp_path / "x.png"), *TINY]
    quiet = rnri_process(*argv)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    chatty = rnri_process(*argv, "--log-level", "info", "--overwrite")  # the same -o again
    assert chatty.returncode == 0 and "INFO rnri.editor.models: fast path: sdpa" in chatty.stderr
    assert "torchvision" not in chatty.stderr


def test_edit_writes_an_image_of_the_input_size(capsys, photo, tmp_path):
    out = tmp_path / "tiger.png"
    code, stdout, _ = run(capsys, "edit", photo, "--source", "a cat", "--target", "a tiger", "-o", out, *TINY)
    assert code == 0 and f"wrote {out}" in stdout and "7 UNet forwards + 0 backwards to invert" in stdout  # the
    # default, DDIM: 4 steps, and 3 more for noise correction (on by default where the chain injects noise)
    assert "reconstruction PSNR" in stdout
    with Image.open(out) as image:
        assert image.size == (70, 50) and image.format == "PNG"


def test_edit_default_output_and_options(capsys, photo, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = [
        "edit",
        photo,
        "--source",
        "a cat",
        "--target",
        "a fox",
        "--method",
        "fixed-point",
        "--option",
        "iterations=1",
    ]
    code, stdout, _ = run(capsys, *argv, "--steps", "2", *TINY)
    assert code == 0 and (tmp_path / "cat-edit.png").is_file()
    assert "fixed-point, 6 UNet forwards" in stdout  # 2 steps x (DDIM guess + 1 iteration), + 1: noise correction,
    # + 1: the guard's check (rnri/core/solvers/guard.py)


@pytest.mark.parametrize(
    "model, counted",
    [("tiny-sd-turbo", "4 UNet forwards"), ("tiny-sdxl-turbo", "7 UNet forwards")],  # DDIM, one a step; Euler
    # ancestral injects noise: + 3 for noise correction (on by default there)
)
def test_edit_on_other_backbones_takes_their_defaults(capsys, photo, tmp_path, model, counted):
    """--model of another family: its chain, steps and guidance, not LCM's (Turbo: 4 steps, guidance 0)."""
    out = tmp_path / "edit.png"
    argv = ["edit", photo, "--source", "a cat", "--target", "a tiger", "-o", out, "--resolution", "64"]
    code, stdout, _ = run(capsys, *argv, "--model", model, "--device", "cpu")
    assert code == 0 and counted in stdout
    with Image.open(out) as image:
        assert image.size == (70, 50)


def test_saved_inversion_round_trip(capsys, photo, tmp_path, pipe):
    inv_path, out = tmp_path / "cat.safetensors", tmp_path / "fox.png"
    argv = ["invert", photo, "--source", "a cat", "-o", inv_path, "--seed", "3", "--no-noise-correction", *TINY]
    assert run(capsys, *argv)[0] == 0  # without noise correction the stock pipeline replays it: the seed is kept
    loaded = load_inversion(inv_path)
    direct = rnri.invert(pipe, "a cat", image=Image.open(photo), seed=3, noise_correction=False)
    assert torch.equal(loaded.latents, direct.latents) and loaded.seed == 3 and loaded.prompt == "a cat"
    code, stdout, _ = run(capsys, "regenerate", inv_path, "--prompt", "a fox", "-o", out, "--device", "cpu")
    assert code == 0 and f"wrote {out}" in stdout  # the model came from the file
    with Image.open(out) as image:
        assert image.tobytes() == rnri.regenerate(pipe, direct, "a fox").tobytes()


def test_an_existing_output_is_replaced_only_with_overwrite(capsys, photo, tmp_path, monkeypatch):
    """-o silently replaced any file; now an existing one (also the default output) is refused, named, untouched."""
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "tiger.png"
    mine.write_bytes(b"the user's own file")
    argv = ["edit", photo, "--source", "a cat", "--target", "a tiger", *TINY]
    code, _, err = run(capsys, *argv, "-o", mine)
    assert (
        code == 1
        and err == f"rnri: error: {mine}: already exists; pass --overwrite to replace it, or choose another -o\n"
    )
    (tmp_path / "cat-edit.png").write_bytes(b"an earlier edit")
    code, _, err = run(capsys, *argv)
    assert code == 1 and "cat-edit.png: already exists" in err
    assert (
        mine.read_bytes() == b"the user's own file" and (tmp_path / "cat-edit.png").read_bytes() == b"an earlier edit"
    )
    code, stdout, _ = run(capsys, *argv, "-o", mine, "--overwrite")
    assert code == 0 and f"wrote {mine}" in stdout
    with Image.open(mine) as image:
        assert image.format == "PNG"


@pytest.mark.parametrize(
    "argv, output, message",
    [
        (["edit", "{photo}", "--source", "a", "--target", "b"], "{photo}", "is the input photo"),
        (["edit", "{photo}", "--source", "a", "--target", "b"], "{dir}/link.jpg", "is the input photo"),  # symlink
        (["edit", "{photo}", "--source", "a", "--target", "b"], "{dir}/hard.jpg", "is the input photo"),  # hard link
        (["edit", "{photo}", "--source", "a", "--target", "b", "--mask", "{dir}/mask.png"], "{dir}/mask.png", "mask"),
        (["invert", "{dir}/photo.safetensors", "--source", "a"], "{dir}/photo.safetensors", "is the input photo"),
        (["regenerate", "{dir}/inv.png", "--prompt", "a"], "{dir}/inv.png", "is the input inversion file"),
    ],
)
def test_an_input_is_never_written_over_even_with_overwrite(capsys, photo, tmp_path, argv, output, message):
    (tmp_path / "link.jpg").symlink_to(photo)
    os.link(photo, tmp_path / "hard.jpg")
    for name in ("mask.png", "photo.safetensors", "inv.png"):
        noise_image(8, 8).save(tmp_path / name, format="PNG")
    before = {p: p.read_bytes() for p in tmp_path.iterdir()}
    filled = [a.format(dir=tmp_path, photo=photo) for a in [*argv, "-o", output]]
    code, _, err = run(capsys, *filled, "--overwrite", *TINY)
    assert code == 1 and message in err and "rnri never writes over an input" in err and "Traceback" not in err
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_file_that_appears_while_rnri_works_is_not_replaced(tmp_path):
    """The check before the work is repeated as the output is moved into place (a hard link fails on a file)."""
    target = tmp_path / "out.png"

    def write(tmp: str) -> None:
        Path(tmp).write_bytes(b"rnri's output")
        target.write_bytes(b"written meanwhile")

    with pytest.raises(cli.CliError, match="a file appeared there while rnri worked; not replaced"):
        cli_files.save_atomically(target, write)
    assert target.read_bytes() == b"written meanwhile" and sorted(tmp_path.iterdir()) == [target]
    cli_files.save_atomically(target, write, overwrite=True)
    assert target.read_bytes() == b"rnri's output" and sorted(tmp_path.iterdir()) == [target]


@pytest.fixture(scope="module")
def hub_file(pipe, tmp_path_factory) -> Path:
    """An inversion file that names a Hub model."""
    path = tmp_path_factory.mktemp("hub") / "hub.safetensors"
    rnri.save_inversion(rnri.invert(pipe, "a cat", image=noise_image(64, 48), method="ddim"), path, model="evil/x")
    return path


def test_regenerate_loads_no_model_a_file_names_unasked(capsys, hub_file, tmp_path, monkeypatch):
    """The file's ``model`` made regenerate download whatever Hub id it named; now it asks for --model, loading
    nothing, and takes the file's model only where rnri would load it unasked (built in, or the default)."""
    loaded = []

    def load_model(args, model):
        loaded.append(model)
        raise cli.CliError("stopped before loading")

    monkeypatch.setattr(cli_commands, "load_model", load_model)
    monkeypatch.delenv(cli.MODEL_ENV, raising=False)
    argv = ["regenerate", hub_file, "--prompt", "a fox", "-o", tmp_path / "fox.png", "--device", "cpu"]
    code, _, err = run(capsys, *argv)
    assert code == 1 and loaded == [] and not (tmp_path / "fox.png").exists()
    assert err == (
        f"rnri: error: {hub_file} was made with the model 'evil/x'; rnri loads no model just because a file names "
        "it: pass --model evil/x to regenerate with it\n"
    )
    monkeypatch.setenv(cli.MODEL_ENV, "evil/x")  # the user's own default: loaded as without a file
    assert run(capsys, *argv)[0] == 1 and loaded == ["evil/x"]
    assert run(capsys, *argv, "--model", "tiny")[0] == 1 and loaded == ["evil/x", "tiny"]


def test_regenerate_with_another_model_says_which_the_file_was_made_with(capsys, hub_file, tmp_path):
    out = tmp_path / "fox.png"
    code, stdout, err = run(capsys, "regenerate", hub_file, "--prompt", "a fox", "-o", out, *TINY)
    assert code == 0 and f"wrote {out}" in stdout
    assert err == f"rnri: note: {hub_file} was made with 'evil/x'; regenerating with 'tiny'\n"


def test_a_guidance_out_of_range_in_a_file_is_refused_before_anything_is_written(capsys, pipe, tmp_path):
    """A guidance of 1e308 in the file wrote an all-black PNG with exit code 0."""
    inv = rnri.invert(pipe, "a cat", image=noise_image(64, 48), method="ddim")
    path, out = tmp_path / "inv.safetensors", tmp_path / "fox.png"
    rnri.save_inversion(inv, path, model="tiny")
    bad = tmp_path / "bad.safetensors"
    with safe_open(str(path), "pt") as f:
        tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()  # noqa: SIM118
    metadata["fields"] = metadata["fields"].replace('"value": 8.5', '"value": 1e308')
    save_file(tensors, str(bad), metadata=metadata)
    code, _, err = run(capsys, "regenerate", bad, "--prompt", "a fox", "-o", out, *TINY)
    assert code == 1 and not out.exists()
    assert err == f"rnri: error: {bad}: guidance_scale must be a number from 0 to 15, got 1e+308\n"


@pytest.mark.timeout(60)  # a hang guard: the old nesting scan took about an hour on this file
def test_regenerate_refuses_a_crafted_metadata_string_at_once(capsys, pipe, tmp_path):
    """A ``fields`` metadata of ``"`` + ``\\"`` x n made the nesting check quadratic (120 KB: 101 s)."""
    path, out = tmp_path / "inv.safetensors", tmp_path / "fox.png"
    rnri.save_inversion(rnri.invert(pipe, "a cat", image=noise_image(64, 48), method="ddim"), path, model="tiny")
    with safe_open(str(path), "pt") as f:
        tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()  # noqa: SIM118
    metadata["fields"] = '"' + '\\"' * (2**19 - 2048)  # 1 MiB
    save_file(tensors, str(path), metadata=metadata)
    code, _, err = run(capsys, "regenerate", path, "--prompt", "a fox", "-o", out, *TINY)
    assert code == 1 and not out.exists()
    assert err.startswith(f"rnri: error: {path}: the 'fields' metadata is not valid JSON")


@pytest.mark.parametrize("command", ["regenerate", "edit"])
def test_non_finite_output_is_an_error_and_writes_nothing(capsys, pipe, photo, tmp_path, monkeypatch, command):
    """Where the decoder gives NaN (a diverged chain, an fp16 overflow), no black image is written with exit 0."""
    inv_path, out = tmp_path / "inv.safetensors", tmp_path / "out.png"
    rnri.save_inversion(rnri.invert(pipe, "a cat", image=noise_image(64, 48), method="ddim"), inv_path, model="tiny")
    decode = type(pipe.vae).decode
    monkeypatch.setattr(type(pipe.vae), "decode", lambda vae, z, **kw: (decode(vae, z, **kw)[0] * math.nan,))
    argv = {
        "regenerate": ["regenerate", inv_path, "--prompt", "a fox"],
        "edit": ["edit", photo, "--source", "a cat", "--target", "a fox"],
    }[command]
    code, _, err = run(capsys, *argv, "-o", out, *TINY)
    assert code == 1 and not out.exists() and "Traceback" not in err
    assert err.endswith(
        "rnri: error: the decoded image has NaN or infinite values (the chain diverged); no image was made\n"
    )


def make_folder(tmp_path: Path) -> tuple[Path, Path]:
    photos = tmp_path / "photos"
    photos.mkdir()
    noise_image(64, 48, seed=1).save(photos / "a.png")
    noise_image(40, 60, seed=2).save(photos / "b.jpg")
    (photos / "b.txt").write_text("a photo of a dog\n")  # caption: b's source prompt
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    (photos / "notes.md").write_text("not an image, not listed")
    targets = tmp_path / "targets.txt"
    targets.write_text("# augmentations\na tiger\n\nA fox, in the snow!\n")
    return photos, targets


def test_batch_goes_on_past_a_bad_file_and_resumes(capsys, tmp_path):
    photos, targets = make_folder(tmp_path)
    out = tmp_path / "out"
    argv = ["batch", photos, "--targets", targets, "-o", out, "--source", "a photo", "--quiet", *TINY]
    code, stdout, stderr = run(capsys, *argv)
    assert code == 1
    assert "broken.jpg: 'broken.jpg' is not an image rnri can read" in stderr and "Traceback" not in stderr
    assert "3 image(s): 2 edited (4 file(s) written), 0 already done, 1 failed" in stdout
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == [
        "a-png/00-a-tiger.png",
        "a-png/01-a-fox-in-the-snow.png",
        "b-jpg/00-a-tiger.png",
        "b-jpg/01-a-fox-in-the-snow.png",
    ]
    with Image.open(out / "b-jpg/00-a-tiger.png") as image:
        assert image.size == (40, 60)
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert {m["output"] for m in manifest} == set(written) and manifest[0]["target"] == "a tiger"

    stamp = (out / "a-png/00-a-tiger.png").stat().st_mtime_ns
    (out / "b-jpg/01-a-fox-in-the-snow.png").unlink()
    (photos / "broken.jpg").unlink()
    code, stdout, _ = run(capsys, *argv)
    assert code == 0 and "2 image(s): 1 edited (1 file(s) written), 1 already done, 0 failed" in stdout
    assert (out / "b-jpg/01-a-fox-in-the-snow.png").is_file()
    assert (out / "a-png/00-a-tiger.png").stat().st_mtime_ns == stamp  # finished outputs are not redone
    assert not list(out.rglob("*.tmp"))


def test_batch_needs_a_source_prompt_per_image(capsys, tmp_path):
    photos, targets = make_folder(tmp_path)
    (photos / "broken.jpg").unlink()
    targets.write_text("a tiger\n")
    argv = ["batch", photos, "--targets", targets, "-o", tmp_path / "out", "--method", "ddim", *TINY]
    code, _, stderr = run(capsys, *argv)
    assert code == 1 and "a.png: no source prompt: give --source or write a caption file a.txt" in stderr
    assert (tmp_path / "out/b-jpg/00-a-tiger.png").is_file()  # b has a caption


def test_batch_images_of_one_stem_get_their_own_outputs(capsys, tmp_path):
    """a.jpg and a.png were both given a/NN-PROMPT.png: one was refused, and the next run called it done with the
    other's edits in the manifest (exit code 0). Now each has its own folder, from its whole file name."""
    photos, targets = make_folder(tmp_path)
    (photos / "broken.jpg").unlink()
    noise_image(64, 64, seed=3).save(photos / "a.jpg")
    targets.write_text("a tiger\n")
    out = tmp_path / "o"
    argv = ["batch", photos, "--targets", targets, "-o", out, "--source", "x", "--method", "ddim", "--quiet", *TINY]
    code, stdout, _ = run(capsys, *argv)
    assert code == 0 and "3 image(s): 3 edited (3 file(s) written)" in stdout
    manifest = {m["image"]: m["output"] for m in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}
    assert manifest == {
        str(photos / "a.jpg"): "a-jpg/00-a-tiger.png",
        str(photos / "a.png"): "a-png/00-a-tiger.png",
        str(photos / "b.jpg"): "b-jpg/00-a-tiger.png",
    }
    with Image.open(out / "a-jpg/00-a-tiger.png") as jpg, Image.open(out / "a-png/00-a-tiger.png") as png:
        assert (jpg.size, png.size) == ((64, 64), (64, 48))
    code, stdout, _ = run(capsys, *argv)
    assert code == 0 and "3 image(s): 0 edited (0 file(s) written), 3 already done" in stdout


def test_batch_refuses_images_whose_folders_differ_only_in_case_on_every_run(capsys, tmp_path):
    """On a case-insensitive disk a-JPG/ and a-jpg/ are one folder: the second image fails, also when resumed."""
    photos, targets = make_folder(tmp_path)
    (photos / "broken.jpg").unlink()
    noise_image(64, 64, seed=3).save(photos / "a.JPG")
    noise_image(64, 64, seed=4).save(photos / "a.jpg")
    targets.write_text("a tiger\n")
    out = tmp_path / "o"
    argv = ["batch", photos, "--targets", targets, "-o", out, "--source", "x", "--method", "ddim", "--quiet", *TINY]
    for _ in range(2):
        code, stdout, err = run(capsys, *argv)
        assert code == 1 and "1 failed" in stdout
        assert f"rnri: error: {photos / 'a.jpg'}: its outputs would share a folder with a.JPG's" in err
        assert str(photos / "a.jpg") not in (out / "manifest.jsonl").read_text()
    assert not (out / "a-jpg").exists()


@pytest.mark.parametrize(
    "argv, code, message",
    [
        (["edit", "{dir}/missing.jpg", "--source", "a", "--target", "b"], 1, "'missing.jpg': no such file"),
        (["edit", "{dir}/bad.jpg", "--source", "a", "--target", "b"], 1, "'bad.jpg' is not an image rnri can read"),
        (["edit", "{dir}/cut.png", "--source", "a", "--target", "b"], 1, "'cut.png' is truncated or damaged"),
        (["edit", "{dir}/bomb.png", "--source", "a", "--target", "b"], 1, "images over 89 megapixels are refused"),
        (["edit", "{photo}", "--source", "a", "--target", "b", "--method", "newton"], 2, "invalid choice: 'newton'"),
        (["edit", "{photo}", "--source", "a", "--target", "b", "-o", "{photo}/x.png"], 1, "is not a folder"),
        (["edit", "{photo}", "--source", "a", "--target", "b", "-o", "{dir}/x.gif"], 1, "must end in .png"),
        (["edit", "{photo}", "--source", "a", "--target", "b", "--option", "speed=9"], 1, "has no option 'speed'"),
        (
            ["edit", "{photo}", "--source", "a", "--target", "b", "--method", "rnri", "--option", "iterations=0"],
            1,
            "from 1 to 5",
        ),
        (["edit", "{photo}", "--source", "a", "--target", "b", "--steps", "0"], 2, "Steps must be a whole number"),
        (["edit", "{photo}", "--source", "a", "--target", "b", "--strength", "2"], 2, "from 0.05 to 1, got '2'"),
        (["edit", "{photo}", "--source", "a", "--target", " "], 1, "The target prompt is empty"),
        (["invert", "{photo}", "--source", "a", "-o", "{dir}/inv.pt"], 1, "must end in .safetensors"),
        (["regenerate", "{photo}", "--prompt", "a"], 1, "not a safetensors file"),
        (["regenerate", "{dir}/none.safetensors", "--prompt", "a"], 1, "none.safetensors: no such file"),
        (["batch", "{dir}/nowhere", "--targets", "{dir}/t.txt", "-o", "{dir}/o"], 1, "nowhere: no such folder"),
        (["batch", "{dir}", "--targets", "{dir}/none.txt", "-o", "{dir}/o"], 1, "cannot read the prompts file"),
        (["batch", "{dir}", "--targets", "{dir}/empty.txt", "-o", "{dir}/o"], 1, "empty.txt: no prompts"),
        (["batch", "{dir}", "--targets", "{dir}/t.txt", "-o", "{photo}/o"], 1, "cannot create the output folder"),
    ],
)
def test_user_errors_are_one_clear_line(capsys, tmp_path, photo, argv, code, message):
    (tmp_path / "bad.jpg").write_text("not an image")
    noise_image(64, 64).save(tmp_path / "full.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "full.png").read_bytes()[:200])
    (tmp_path / "bomb.png").write_bytes(png_header(12_000, 12_000))  # the editor's size refusal, here too
    (tmp_path / "t.txt").write_text("a tiger\n")
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    filled = [a.format(dir=tmp_path, photo=photo) for a in argv]
    with pytest.raises(SystemExit) if code == 2 else nullcontext() as caught:
        result = cli.main([*filled, *TINY])
    _, err = capsys.readouterr()
    assert (caught.value.code if code == 2 else result) == code
    assert message in err and "Traceback" not in err


def test_bench_and_eval_get_the_remaining_arguments(capsys, monkeypatch):
    seen = []
    fake = types.ModuleType("rnri_lab.bench")
    fake.main = lambda argv: seen.append(argv) or 3
    monkeypatch.setitem(sys.modules, "rnri_lab.bench", fake)
    assert cli.main(["bench", "--quick", "--help"]) == 3 and seen == [["--quick", "--help"]]


@pytest.mark.parametrize(
    "missing, message",
    [
        ("rnri_lab.evaluation", "the lab's (rnri_lab.evaluation), which is not installed with rnri"),
        ("torchmetrics", "needs the module 'torchmetrics'"),
    ],
)
def test_dispatch_to_a_missing_module_is_a_clear_error(capsys, monkeypatch, missing, message):
    def fail(name):
        raise ModuleNotFoundError(f"No module named {missing!r}", name=missing)

    monkeypatch.setattr(importlib, "import_module", fail)
    code, _, err = run(capsys, "eval", "--anything")
    assert code == 1 and message in err


def test_options_are_read_in_the_one_syntax_typed_by_their_field_and_slug():
    newton = rnri.METHODS["rnri"].config_type
    options = cli_commands.read_options(newton, ["iterations=2,norm=l1", "prior_weight=0.5"], "--method rnri")
    assert options == {"iterations": 2, "norm": "l1", "prior_weight": 0.5}
    with pytest.raises(cli.CliError, match="KEY=VALUE"):
        cli_commands.read_options(newton, ["iterations"], "--method rnri")
    with pytest.raises(cli.CliError, match="Residual norm must be one of l2, l1, got 'l3'"):
        cli_commands.read_options(newton, ["norm=l3"], "--method rnri")
    assert cli_batch.slug("A fox, in the snow!") == "a-fox-in-the-snow" and cli_batch.slug("???") == "prompt"


@pytest.mark.parametrize(
    ("flags", "inverted_at", "edited_at"),
    [
        ([], 1.0, 7.5),  # Stable Diffusion's: inverts without CFG, edits with it
        (["--guidance", "1"], 1.0, 7.5),  # the documented inversion default changes only the inversion
        (["--guidance", "2", "--edit-guidance", "3"], 2.0, 3.0),
    ],
)
def test_edit_on_stable_diffusion_edits_at_the_edit_guidance(
    capsys, photo, tmp_path, monkeypatch, flags, inverted_at, edited_at
):
    """``--guidance`` is the inversion's, ``--edit-guidance`` the edit's; each left out is the backbone's own (one
    flag drove both: ``--guidance 1``, the documented inversion default, edited at 1 too)."""
    from rnri.editor import service

    seen: dict[str, list[float]] = {"invert": [], "edit": []}
    invert, regenerate = service.invert, service.regenerate

    def inverting(pipe, prompt, **kwargs):
        inv = invert(pipe, prompt, **kwargs)
        seen["invert"].append(inv.guidance_scale)  # as it ran: the settings' own, else the backbone's
        return inv

    def regenerating(pipe, inv, prompt, **kwargs):
        if "guidance_scale" in kwargs:  # the edit's (the reconstruction replays the inversion's)
            seen["edit"].append(kwargs["guidance_scale"])
        return regenerate(pipe, inv, prompt, **kwargs)

    monkeypatch.setattr(service, "invert", inverting)
    monkeypatch.setattr(service, "regenerate", regenerating)
    out = tmp_path / "tiger.png"
    argv = ["edit", photo, "--source", "a cat", "--target", "a tiger", "-o", out, "--steps", "2", *flags]
    code, _, err = run(capsys, *argv, "--model", "tiny-sd", "--device", "cpu")
    assert code == 0 and out.exists(), err
    assert seen == {"invert": [inverted_at], "edit": [edited_at]}
