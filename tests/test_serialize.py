"""Inversion files: every field comes back exactly, a loaded file regenerates identically, bad files are refused."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch
from conftest import noise_image
from PIL import Image
from safetensors.torch import save_file

import rnri
from rnri.serialize import MAX_METADATA_BYTES, InversionFileError, load_inversion, save_inversion, saved_model


def assert_same_inversion(a: rnri.Inversion, b: rnri.Inversion) -> None:
    """Field by field: tensors bit-equal with the same dtype, images pixel-equal, everything else == and same type."""
    for f in dataclasses.fields(rnri.Inversion):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, torch.Tensor):
            assert x.dtype == y.dtype and torch.equal(x, y), f.name
        elif isinstance(x, list) and any(isinstance(v, torch.Tensor) for v in x):
            assert len(x) == len(y), f.name
            for u, v in zip(x, y):
                assert (u is None and v is None) or (u.dtype == v.dtype and torch.equal(u, v)), f.name
        elif isinstance(x, Image.Image):
            assert (x.mode, x.size, x.tobytes()) == (y.mode, y.size, y.tobytes()), f.name
        else:
            assert type(x) is type(y) and x == y, f.name


@pytest.mark.parametrize(
    "options",
    [
        {},  # stochastic LCM chain: stored noises, the last one None
        {"chain": "ddim", "method": "fixed-point", "iterations": 2},  # all noises None
        {"strength": 0.5, "noise_correction": True, "seed": 7},  # a partial chain, corrected noises, seed None
    ],
)
def test_round_trip_is_exact_and_regenerates_identically(pipe, tmp_path, options):
    inv = rnri.invert(pipe, "a cat", image=noise_image(70, 50), **options)
    path = tmp_path / "inv.safetensors"
    save_inversion(inv, path, model="tiny")
    loaded = load_inversion(path)
    assert_same_inversion(inv, loaded)
    assert saved_model(path) == "tiny"
    for prompt in ("a cat", "a dog"):
        ours = rnri.regenerate(pipe, loaded, prompt, output_type="latent")
        assert torch.equal(ours, rnri.regenerate(pipe, inv, prompt, output_type="latent"))


def test_latents_input_without_image_round_trips(pipe, tmp_path):
    z0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    inv = rnri.invert(pipe, "a cat", latents=z0, method="ddim")
    assert inv.source_image is None and inv.image_size is None
    save_inversion(inv, tmp_path / "z.safetensors")
    assert_same_inversion(inv, load_inversion(tmp_path / "z.safetensors"))
    assert saved_model(tmp_path / "z.safetensors") is None


def test_every_field_is_recorded(pipe, tmp_path):
    """A field added to Inversion is saved too (or refused loudly), never dropped."""
    inv = rnri.invert(pipe, "a cat", image=noise_image(64, 64))
    save_inversion(inv, tmp_path / "a.safetensors")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "a.safetensors"), "pt") as f:
        fields = json.loads(f.metadata()["fields"])
    assert set(fields) == {f.name for f in dataclasses.fields(rnri.Inversion)}
    assert fields["image_size"]["value"] == {"__tuple__": [64, 64]}


def test_unsupported_values_are_refused_when_saving(pipe, tmp_path):
    inv = rnri.invert(pipe, "a cat", image=noise_image(64, 64), method="ddim")
    with pytest.raises(ValueError, match="solver_options.*object"):
        save_inversion(dataclasses.replace(inv, solver_options={"x": object()}), tmp_path / "bad.safetensors")


def _rewrite(path, tmp_path, edit):
    """Copy of an inversion file with its tensors and metadata changed by ``edit(tensors, metadata)``."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())  # noqa: SIM118
    edit(tensors, metadata)
    out = tmp_path / "edited.safetensors"
    save_file(tensors, str(out), metadata=metadata)
    return out


def _set_field(name, value, *, raw: str | None = None):
    """An edit that stores ``value`` as field ``name`` (or the JSON text ``raw``, for what json.dumps cannot write)."""

    def edit(tensors, metadata):
        fields = json.loads(metadata["fields"])
        fields[name] = {"kind": "json", "value": "RAW" if raw else value}
        metadata["fields"] = json.dumps(fields).replace('"RAW"', raw or '"RAW"')

    return edit


def _set_tensor(name, tensor):
    return lambda t, m: t.update({name: tensor})


@pytest.fixture(scope="module")
def good_file(pipe, tmp_path_factory):
    """An inversion file (DDIM, 4 timesteps, 64x48 input) to corrupt."""
    path = tmp_path_factory.mktemp("good") / "good.safetensors"
    save_inversion(rnri.invert(pipe, "a cat", image=noise_image(64, 48), method="ddim"), path)
    return path


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t, m: m.pop("format"), "not an rnri inversion"),
        (lambda t, m: m.update(version="99"), "version '99'"),
        (lambda t, m: m.update(fields="{not json"), "not valid JSON"),
        (lambda t, m: t.pop("trajectory.2"), "tensor 'trajectory.2' is missing"),
        (lambda t, m: t.update(latents=torch.zeros(1, 4, 3, 3)), "shape"),
        (lambda t, m: t.update(latents=torch.full((1, 4, 6, 8), float("nan"))), "NaN"),
        (_set_field("future_field", 1), "unknown field"),
        (_set_field("timesteps", [999, 759]), "noises must be a list of 2"),
        (_set_field("chain", "heun"), "chain must be one of"),  # "euler" is a chain now
        # values out of the range a front end accepts (rnri.core.settings), each named
        (_set_field("guidance_scale", 1e308), "guidance_scale must be a number from 0 to 15, got 1e+308"),
        (_set_field("guidance_scale", None, raw="NaN"), "guidance_scale must be a number from 0 to 15, got nan"),
        (_set_field("guidance_scale", "8"), "guidance_scale must be a number from 0 to 15, got '8'"),
        (_set_field("num_inference_steps", 10**9), "num_inference_steps must be an integer from 4 to 50"),
        (_set_field("num_inference_steps", 2.5), "num_inference_steps must be an integer"),
        (_set_field("seed", -1), "seed must be an integer from 0 to 2147483647, got -1"),
        (_set_field("seed", True), "seed must be an integer"),
        (_set_field("timesteps", [259, 499, 759, 999]), "timesteps must decrease"),
        (_set_field("timesteps", [999, 759, 499, -1]), "non-negative integers"),
        (_set_field("image_size", {"__tuple__": [100_000, 100_000]}), "image_size must be at least 1x1 and at most"),
        (_set_field("image_size", [64, 48]), "image_size must be (width, height)"),
        (_set_field("unet_forwards", -5), "unet_forwards must be a non-negative integer"),
        (_set_field("residuals", [["x"]] * 4), "residuals must be numbers"),
        (_set_field("prompt", None, raw="1" * 5000), "not valid JSON"),  # more digits than Python converts
        (_set_tensor("trajectory.2", torch.full((1, 4, 12, 16), float("inf"))), "trajectory contain NaN or infinite"),
        (_set_tensor("noises.0", torch.zeros(1, 4, 12, 16, dtype=torch.int64)), "float tensor"),
        (_set_tensor("source_image", torch.zeros(48, 64, 5, dtype=torch.uint8)), "not a valid 'RGB' image"),
        (_set_tensor("source_image", torch.zeros(40, 64, 3, dtype=torch.uint8)), "source_image must be an image of"),
        # the metadata is bounded before it is parsed: a RecursionError traceback took 900 levels
        (_set_field("solver_options", None, raw="[" * 900 + "]" * 900), "nested 902 levels deep, over the 16"),
        (_set_field("prompt", "x" * 2_000_000), "metadata is 2000"),
        (lambda t, m: m.update(model="evil\nrnri: ok"), "the 'model' metadata is no model name"),
    ],
)
def test_malformed_files_are_refused_clearly(good_file, tmp_path, edit, message):
    load_inversion(good_file)  # the file itself is fine
    bad = _rewrite(good_file, tmp_path, edit)
    with pytest.raises(InversionFileError, match=re.escape(message)):
        load_inversion(bad)


def test_the_model_of_a_malformed_file_is_not_read(good_file, tmp_path):
    """``saved_model`` (what ``rnri regenerate`` asks first) refuses the file as ``load_inversion`` does."""
    bad = _rewrite(good_file, tmp_path, _set_field("solver_options", None, raw="[" * 100_000 + "]" * 100_000))
    with pytest.raises(InversionFileError, match="nested 100002 levels deep"):
        saved_model(bad)


def test_an_inversion_that_could_not_be_loaded_is_not_saved(good_file, tmp_path):
    inv = load_inversion(good_file)
    for bad, message in [
        (dataclasses.replace(inv, guidance_scale=20.0), "guidance_scale must be a number from 0 to 15, got 20.0"),
        (dataclasses.replace(inv, prompt="x" * 2_000_000), "metadata is 2000"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            save_inversion(bad, tmp_path / "bad.safetensors")
        assert not (tmp_path / "bad.safetensors").exists()


def test_files_that_are_not_inversions(tmp_path):
    with pytest.raises(InversionFileError, match="no such file"):
        load_inversion(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 3 + b"definitely not safetensors")
    with pytest.raises(InversionFileError, match="not a safetensors file"):
        load_inversion(junk)
    plain = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(2)}, str(plain))
    with pytest.raises(InversionFileError, match="not an rnri inversion"):
        load_inversion(plain)


@pytest.mark.timeout(60)  # a hang guard, not a speed claim: the old scan took about an hour on this file
def test_a_crafted_string_in_the_metadata_is_scanned_in_one_pass(good_file, tmp_path):
    """The nesting check removed strings with a regular expression that backtracks over an unterminated string
    of escaped quotes: ``"`` + ``\\"`` x n took 101 s at 120 KB and about an hour at 1 MiB."""
    crafted = '"' + '\\"' * ((MAX_METADATA_BYTES - 4096) // 2)  # 1 MiB, under the size bound
    bad = _rewrite(good_file, tmp_path, lambda t, m: m.update(fields=crafted))
    with pytest.raises(InversionFileError, match="'fields' metadata is not valid JSON"):
        load_inversion(bad)
    deep = '{"a": "[[[{\\"]]]", "b": ' + "[" * 17 + "]" * 17 + "}"  # brackets in strings are no nesting
    bad = _rewrite(good_file, tmp_path, lambda t, m: m.update(fields=deep))
    with pytest.raises(InversionFileError, match="nested 18 levels deep"):
        load_inversion(bad)
