"""``rnri.InversionSettings``: built once at the edge and passed whole; ``rnri.invert``'s keywords made into one."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from PIL import Image

import rnri
import rnri.core.solvers
import rnri.editor as ed
from rnri.core.options import settings_of
from rnri.core.settings import InversionSettings, with_method
from rnri.core.solvers import NewtonConfig


@pytest.fixture
def counted(monkeypatch) -> list[str]:
    """One entry per config of a method built, however it is built: the method's name where ``make_config`` (the one
    builder) was asked, "NewtonConfig" for each ``NewtonConfig`` made (by make_config, by hand or by a replace)."""
    calls, build, check = [], rnri.core.solvers.make_config, NewtonConfig.__post_init__

    def counting(name, options):
        calls.append(name)
        return build(name, options)

    def made(config):
        calls.append("NewtonConfig")
        check(config)

    monkeypatch.setattr(rnri.core.solvers, "make_config", counting)
    monkeypatch.setattr(NewtonConfig, "__post_init__", made)
    return calls


def test_invert_builds_the_method_config_once(pipe, counted):
    inv = rnri.invert(pipe, "a cat", latents=torch.randn(1, 4, 8, 8), method="rnri", iterations=2, norm="l1")
    assert counted == ["rnri", "NewtonConfig"] and inv.solver_options == {"iterations": 2, "norm": "l1"}


def test_settings_given_whole_build_nothing_again_and_invert_as_the_keywords(pipe, counted):
    z0 = torch.randn(1, 4, 8, 8)
    settings = with_method(InversionSettings(seed=3, num_inference_steps=2), "rnri", {"iterations": 2})
    assert counted == ["rnri", "NewtonConfig"]
    whole = rnri.invert(pipe, "a cat", latents=z0, settings=settings)
    assert counted == ["rnri", "NewtonConfig"]  # the config travelled inside the settings
    flat = rnri.invert(pipe, "a cat", latents=z0, **settings.invert_kwargs())
    assert torch.equal(whole.latents, flat.latents) and whole.residuals == flat.residuals
    assert whole.solver_options == dataclasses.asdict(settings.solver)


def test_the_editor_service_passes_the_settings_whole(pipe, counted):
    """A front end builds the settings once (the page's form, the CLI's flags); the editor inverts with them as they
    are, building no config again."""
    settings = with_method(InversionSettings(seed=3, num_inference_steps=2), "rnri", {"iterations": 2})
    image = Image.new("RGB", (64, 64), "red")
    photo = ed.Photo(image, "red square")
    cached = ed.Editor(pipe).invert_photo(photo, "a red square", settings)
    assert counted == ["rnri", "NewtonConfig"] and cached.inversion.solver_options["iterations"] == 2


def test_settings_without_options_take_the_method_defaults(pipe, counted):
    inv = rnri.invert(pipe, "a cat", latents=torch.randn(1, 4, 8, 8), settings=InversionSettings(method="gnri"))
    assert inv.method == "gnri" and counted == ["gnri"]
    assert inv.solver_options == dataclasses.asdict(rnri.core.solvers.GuidedNewtonConfig())


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ({"settings": InversionSettings(), "seed": 1}, "not both"),
        ({"settings": InversionSettings(), "iterations": 2}, "not both"),
        ({"settings": InversionSettings(method="ddim", solver=NewtonConfig())}, "no options, got a NewtonConfig"),
        ({"settings": InversionSettings(method="magic")}, "unknown inversion method 'magic'"),
        ({"method": "ddim", "iterations": 2}, "takes no option"),
    ],
)
def test_settings_and_keywords_are_refused_clearly(pipe, call, message):
    with pytest.raises(ValueError, match=message):
        rnri.invert(pipe, "a cat", latents=torch.randn(1, 4, 8, 8), **call)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"num_inference_steps": 0}, "num_inference_steps must be an integer from 1 to 50"),
        ({"strength": 0.0}, r"strength must be in \(0, 1\]"),
        ({"guidance_scale": float("nan")}, "guidance_scale must be a finite number"),
    ],
)
def test_numbers_are_checked_where_the_settings_are_made(fields, message):
    with pytest.raises(ValueError, match=message):
        InversionSettings(**fields)


def test_a_config_s_choices_are_checked_from_its_options():
    """The choices a front end offers are the ones the config accepts: one list, read by both."""
    with pytest.raises(ValueError, match="Residual norm must be one of l2, l1, got 'l3'"):
        NewtonConfig(norm="l3")
    for name, setting in settings_of(NewtonConfig).items():
        for choice in setting.option.choices or ():
            replaced = {name: choice} | ({"derivative": "autograd"} if choice == "gradient" else {})
            assert getattr(NewtonConfig(**replaced), name) == choice
