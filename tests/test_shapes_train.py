"""The training script runs end to end (a few steps), resumes exactly, and exports stock diffusers pipelines."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import DDIMScheduler, LatentConsistencyModelPipeline, LCMScheduler, StableDiffusionPipeline

from rnri_lab.shapes import train
from rnri_lab.shapes.train import Stage, TrainConfig


def toy_stage(steps: int) -> tuple[Stage, torch.nn.Module]:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    return Stage("toy", {"model": model}, torch.optim.AdamW(model.parameters(), 0.1), steps, 0.1, []), model


def toy_step(stage: Stage, model: torch.nn.Module):
    def step(g: torch.Generator) -> torch.Tensor:
        x = torch.randn(8, 3, generator=g)
        loss = (model(x) - x.sum(1, keepdim=True)).pow(2).mean()
        loss.backward()
        stage.optimizer.step()
        stage.optimizer.zero_grad()
        return loss.detach()

    return step


def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path):
    config = TrainConfig(checkpoint_every=2, warmup=1)
    for folder in ("whole", "cut"):
        (tmp_path / folder).mkdir()
    whole, model = toy_stage(6)
    train.run(whole, tmp_path / "whole", config, toy_step(whole, model))
    first, model = toy_stage(6)
    step, calls = toy_step(first, model), []

    def killed_at_step_five(g: torch.Generator) -> torch.Tensor:
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt  # after the checkpoint of step 4
        return step(g)

    with pytest.raises(KeyboardInterrupt):
        train.run(first, tmp_path / "cut", config, killed_at_step_five)
    second, model = toy_stage(6)
    train.run(second, tmp_path / "cut", config, toy_step(second, model))
    assert second.losses == whole.losses and len(whole.losses) == 6
    assert (tmp_path / "cut" / "toy-loss.png").stat().st_size > 0


def test_every_stage_runs_and_exports_stock_pipelines(tmp_path):
    workdir, out = tmp_path / "work", tmp_path / "out"
    small = ["--vae-scenes", "16", "--scenes", "16", "--checkpoint-every", "2", "--warmup", "1"]
    steps = ["--vae-steps", "2", "--decoder-steps", "2", "--teacher-steps", "2", "--student-steps", "2"]
    batches = ["--vae-batch", "2", "--teacher-batch", "2", "--student-batch", "2"]
    train.main(["--workdir", str(workdir), "--out", str(out), *small, *steps, *batches])
    times = json.loads((workdir / "times.json").read_text())
    assert set(times) == {"vae", "decoder", "latents", "teacher", "student"}
    for stage in ("vae", "decoder", "teacher", "student"):
        assert (workdir / f"{stage}-loss.png").exists()
    lcm = LatentConsistencyModelPipeline.from_pretrained(out / "lcm")  # no dtype: as a user would write it
    sd = StableDiffusionPipeline.from_pretrained(out / "sd")
    assert isinstance(lcm.scheduler, LCMScheduler) and isinstance(sd.scheduler, DDIMScheduler)
    assert lcm.unet.config.time_cond_proj_dim and sd.unet.config.time_cond_proj_dim is None
    assert not list(out.rglob("*.bin")) and list(out.rglob("*.safetensors"))
    assert {lcm.unet.dtype, lcm.vae.dtype, lcm.text_encoder.dtype, sd.unet.dtype} == {torch.float32}
    image = lcm("a small red circle on a gray background", num_inference_steps=4, output_type="pil").images[0]
    assert image.size == (64, 64)
    assert sd("a small red circle", num_inference_steps=2, output_type="pil").images[0].size == (64, 64)


def test_a_run_can_start_from_shipped_pipelines(tmp_path):
    """``--init-from``: the VAE is the shipped one and both UNets start at the shipped weights (train further)."""
    from rnri.shapes import models

    workdir, out = tmp_path / "work", tmp_path / "out"
    small = ["--scenes", "16", "--checkpoint-every", "2", "--warmup", "1", "--init-from", str(models.MODELS_DIR)]
    steps = ["--teacher-steps", "1", "--student-steps", "1", "--teacher-batch", "2", "--student-batch", "2"]
    train.main(
        ["--workdir", str(workdir), "--out", str(out), "--teacher-lr", "0", "--student-lr", "0", *small, *steps]
    )
    assert not (workdir / "vae-loss.png").exists()  # the VAE was taken, not trained
    shipped = LatentConsistencyModelPipeline.from_pretrained(models.STUDENT_DIR)
    again = LatentConsistencyModelPipeline.from_pretrained(out / "lcm")
    for part in ("vae", "unet", "text_encoder"):  # a learning rate of 0: the shipped weights come back (fp16 UNets)
        for (name, a), b in zip(
            getattr(shipped, part).state_dict().items(), getattr(again, part).state_dict().values()
        ):
            assert torch.equal(a, b), f"{part}.{name} moved"
