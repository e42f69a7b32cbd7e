"""Train the shapes models from scratch: ``python -m rnri_lab.shapes.train`` (seeded, resumable, with progress bars).

Stages, each resumed from its last checkpoint in ``--workdir``:
    vae      AutoencoderKL on renders (L1 + KL); its scaling factor makes the latents unit-std
    decoder  its decoder fine-tuned on the frozen encoder's posterior means (L1 + MSE), as SD's ft-MSE VAE was
    latents  the training scenes encoded once (posterior means times the scaling factor)
    teacher  text encoder and noise-prediction UNet trained jointly, captions dropped for classifier-free guidance
    student  latent consistency distillation (Luo et al. 2023, Algorithm 1): one DDIM step of the guided teacher
             over a skip of 20 timesteps, the target from an EMA copy of the student, the guidance scale embedded
    export   both as stock diffusers pipelines (safetensors) into ``--out``
Loss curves are saved as ``<stage>-loss.png`` and the wall time of each stage in ``times.json``.

Why one module of ~400 lines: the teacher and the student are trained by one resumable loop with one config.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from tqdm import trange
from transformers import CLIPTextModel

from rnri.shapes import models
from rnri.shapes.tokenizer import shapes_tokenizer
from rnri.shapes.world import scenes
from rnri_lab.shapes.data import pixels, to_unit, token_ids


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on; the defaults are the shipped models' run."""

    seed: int = 0
    vae_scenes: int = 12000  # renders the VAE learns from
    vae_steps: int = 2500
    vae_batch: int = 16
    vae_lr: float = 1e-3
    vae_kl: float = 1e-5  # weight of the KL term per latent element against L1 per pixel (1e-3 blurred small shapes)
    decoder_steps: int = 2500  # decoder fine-tuning on the frozen encoder's means (small stars were blobs)
    decoder_lr: float = 5e-4
    scenes: int = 30000  # training scenes of the teacher and student (latents encoded once)
    teacher_steps: int = 5500
    teacher_batch: int = 32
    teacher_lr: float = 5e-4
    snr_gamma: float = 5.0  # Min-SNR-gamma weighting of the teacher's loss (0: plain DDPM loss)
    uncond_rate: float = 0.1  # captions replaced by "" for classifier-free guidance
    teacher_ema: float = 0.999
    student_steps: int = 1200
    student_batch: int = 32
    student_lr: float = 2e-4
    guidance_min: float = 1.0  # w of the teacher's guided step, x0_c + w (x0_c - x0_u): CFG scale w + 1
    guidance_max: float = 8.0
    student_ema: float = 0.95  # decay of the target network
    skip: int = 20  # timesteps one teacher DDIM step spans (1000 / 50 DDIM steps)
    warmup: int = 100  # steps of linear learning-rate warm-up; then a cosine down to 10%
    checkpoint_every: int = 250
    init_from: str = ""  # a folder of exported pipelines (``lcm/``, ``sd/``, as MODELS_DIR): every stage starts from
    # its weights instead of from scratch (the VAE is taken as it is), to train a shipped run further


def lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of ``lr``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def ema_update(target: torch.nn.Module, online: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for t, o in zip(target.parameters(), online.parameters()):
            t.lerp_(o, 1.0 - decay)


def generator(config: TrainConfig, stage: str, step: int) -> torch.Generator:
    """The randomness of one training step: the same on a resumed run as on an uninterrupted one."""
    return torch.Generator().manual_seed(zlib.crc32(f"{config.seed}/{stage}/{step}".encode()))


@dataclass
class Stage:
    """A training loop's state: modules whose weights are checkpointed, one optimizer, the loss history."""

    name: str
    modules: dict[str, torch.nn.Module]
    optimizer: torch.optim.Optimizer
    steps: int
    lr: float
    losses: list[float]


def run(stage: Stage, workdir: Path, config: TrainConfig, step_fn: Callable[[torch.Generator], torch.Tensor]) -> None:
    """Train ``stage`` to its last step, resuming from ``workdir/<name>.pt``; checkpoints and plots as it goes."""
    checkpoint = workdir / f"{stage.name}.pt"
    start = 0
    if checkpoint.exists():
        state = torch.load(checkpoint, weights_only=True)
        for key, module in stage.modules.items():
            module.load_state_dict(state["modules"][key])
        stage.optimizer.load_state_dict(state["optimizer"])
        start, stage.losses[:] = state["step"], state["losses"]
    bar = trange(start, stage.steps, desc=stage.name, initial=start, total=stage.steps)
    for step in bar:
        for group in stage.optimizer.param_groups:
            group["lr"] = lr_at(step, stage.steps, stage.lr, config.warmup)
        loss = step_fn(generator(config, stage.name, step))
        stage.losses.append(loss.item())
        bar.set_postfix(loss=f"{stage.losses[-1]:.4f}")
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == stage.steps:
            save_checkpoint(stage, step + 1, checkpoint)
    plot_losses(stage, workdir / f"{stage.name}-loss.png")


def save_checkpoint(stage: Stage, step: int, path: Path) -> None:
    state = {
        "modules": {k: m.state_dict() for k, m in stage.modules.items()},
        "optimizer": stage.optimizer.state_dict(),
        "step": step,
        "losses": stage.losses,
    }
    torch.save(state, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)  # a kill mid-save leaves the previous checkpoint whole


def plot_losses(stage: Stage, path: Path) -> None:
    """The loss per step and its running mean, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = torch.tensor(stage.losses)
    window = max(1, len(losses) // 50)
    smooth = torch.nn.functional.avg_pool1d(losses[None, None], window, stride=1)[0, 0] if len(losses) else losses
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(losses, lw=0.5, alpha=0.4, label="per step")
    ax.plot(range(window - 1, window - 1 + len(smooth)), smooth, lw=1.5, label=f"mean of {window}")
    ax.set(yscale="log", xlabel="step", ylabel="loss", title=f"{stage.name}: loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def adopt(config: TrainConfig, part: str) -> Path:
    """Where ``part`` (e.g. ``"sd/unet"``) of the pipelines in ``config.init_from`` lies."""
    return Path(config.init_from) / part


def train_vae(workdir: Path, config: TrainConfig) -> None:
    """The VAE; saved to ``workdir/vae`` with the scaling factor that gives its latents unit variance."""
    if config.init_from:  # the VAE is kept: the latents the models were trained on stay valid
        AutoencoderKL.from_pretrained(adopt(config, "sd/vae"), dtype=torch.float32).save_pretrained(workdir / "vae")
        return
    data = pixels(scenes(config.seed, config.vae_scenes, "train"))
    vae = models.vae()
    stage = Stage(
        "vae", {"vae": vae}, torch.optim.AdamW(vae.parameters(), config.vae_lr), config.vae_steps, config.vae_lr, []
    )

    def step(g: torch.Generator) -> torch.Tensor:
        x = to_unit(data[torch.randint(len(data), (config.vae_batch,), generator=g)])
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=g)
        kl = posterior.kl().mean() / z[0].numel()
        loss = (vae.decode(z).sample - x).abs().mean() + config.vae_kl * kl
        loss.backward()
        stage.optimizer.step()
        stage.optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    vae.train()
    run(stage, workdir, config, step)
    vae.eval()
    with torch.no_grad():
        means = torch.cat([vae.encode(to_unit(b)).latent_dist.mean for b in data[:2048].split(256)])
    vae.register_to_config(scaling_factor=float(1.0 / means.std()))
    vae.save_pretrained(workdir / "vae")


def train_decoder(workdir: Path, config: TrainConfig) -> None:
    """The VAE's decoder fine-tuned on posterior means (encoder frozen, so the latents and the models trained on
    them stay valid), L1 plus MSE: sharper small shapes. Saved to ``workdir/vae-decoder`` as the whole VAE."""
    if config.init_from:
        AutoencoderKL.from_pretrained(workdir / "vae").save_pretrained(workdir / "vae-decoder")
        return
    data = pixels(scenes(config.seed, config.vae_scenes, "train"))
    vae = AutoencoderKL.from_pretrained(workdir / "vae")
    vae.requires_grad_(False).decoder.requires_grad_(True)
    vae.post_quant_conv.requires_grad_(True)
    trainable = [p for p in vae.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, config.decoder_lr)
    stage = Stage("decoder", {"vae": vae}, optimizer, config.decoder_steps, config.decoder_lr, [])

    def step(g: torch.Generator) -> torch.Tensor:
        x = to_unit(data[torch.randint(len(data), (config.vae_batch,), generator=g)])
        with torch.no_grad():
            z = vae.encode(x).latent_dist.mean
        error = vae.decode(z).sample - x
        loss = error.abs().mean() + error.pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    run(stage, workdir, config, step)
    vae.save_pretrained(workdir / "vae-decoder")


def encode_latents(workdir: Path, config: TrainConfig) -> None:
    """The training scenes' latents (scaled posterior means) and caption token ids, saved to ``latents.pt``."""
    vae = AutoencoderKL.from_pretrained(workdir / "vae").eval()
    scene_list = scenes(config.seed + 1, config.scenes, "train")
    tokenizer = shapes_tokenizer()
    latents = []
    with torch.no_grad():
        for start in trange(0, len(scene_list), 500, desc="latents"):
            batch = to_unit(pixels(scene_list[start : start + 500]))
            latents.append(vae.encode(batch).latent_dist.mean * vae.config.scaling_factor)
    ids = token_ids(tokenizer, [s.caption for s in scene_list])
    torch.save({"latents": torch.cat(latents), "ids": ids}, workdir / "latents.pt")


def add_noise(z0: torch.Tensor, eps: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    """``z_t = sqrt(abar_t) z0 + sqrt(1 - abar_t) eps``, abar per item (B,)."""
    abar = abar.view(-1, 1, 1, 1)
    return abar.sqrt() * z0 + (1 - abar).sqrt() * eps


def predict_x0(z_t: torch.Tensor, eps: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    abar = abar.view(-1, 1, 1, 1)
    return (z_t - (1 - abar).sqrt() * eps) / abar.sqrt()


def min_snr_weight(abar: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma loss weight for noise prediction (Hang et al. 2023): ``min(SNR, gamma) / SNR``, 1 where the
    noise is high, less where it is low and the loss is easy; ``gamma=0`` weights every timestep alike."""
    if gamma <= 0:
        return torch.ones_like(abar)
    snr = abar / (1 - abar)
    return snr.clamp(max=gamma) / snr


def train_teacher(workdir: Path, config: TrainConfig) -> None:
    """Text encoder and UNet, noise prediction (DDPM's simple loss), EMA weights saved to ``workdir/teacher``."""
    data = torch.load(workdir / "latents.pt", weights_only=True)
    tokenizer = shapes_tokenizer()
    text, unet = models.text_encoder(tokenizer), models.unet()
    if config.init_from:  # the shipped teacher is its EMA weights: both copies start there
        unet.load_state_dict(UNet2DConditionModel.from_pretrained(adopt(config, "sd/unet")).float().state_dict())
        text.load_state_dict(CLIPTextModel.from_pretrained(adopt(config, "sd/text_encoder")).float().state_dict())
    ema_text, ema_unet = copy.deepcopy(text).requires_grad_(False), copy.deepcopy(unet).requires_grad_(False)
    abar_all = models.ddim_scheduler().alphas_cumprod
    uncond = token_ids(tokenizer, [""])[0]
    optimizer = torch.optim.AdamW([*unet.parameters(), *text.parameters()], config.teacher_lr)
    modules = {"text": text, "unet": unet, "ema_text": ema_text, "ema_unet": ema_unet}
    stage = Stage("teacher", modules, optimizer, config.teacher_steps, config.teacher_lr, [])

    def step(g: torch.Generator) -> torch.Tensor:
        index = torch.randint(len(data["latents"]), (config.teacher_batch,), generator=g)
        z0, ids = data["latents"][index], data["ids"][index].clone()
        ids[torch.rand(len(ids), generator=g) < config.uncond_rate] = uncond
        t = torch.randint(0, len(abar_all), (len(ids),), generator=g)
        eps = torch.randn(z0.shape, generator=g)
        prediction = unet(add_noise(z0, eps, abar_all[t]), t, encoder_hidden_states=text(ids)[0]).sample
        loss = (min_snr_weight(abar_all[t], config.snr_gamma) * (prediction - eps).pow(2).mean((1, 2, 3))).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema_update(ema_unet, unet, config.teacher_ema)
        ema_update(ema_text, text, config.teacher_ema)
        return loss.detach()

    run(stage, workdir, config, step)
    ema_unet.save_pretrained(workdir / "teacher" / "unet")
    ema_text.save_pretrained(workdir / "teacher" / "text_encoder")


def train_student(workdir: Path, config: TrainConfig) -> None:
    """LCM distillation from the teacher; the target (EMA) network is saved to ``workdir/student``."""
    data = torch.load(workdir / "latents.pt", weights_only=True)
    tokenizer = shapes_tokenizer()
    teacher = UNet2DConditionModel.from_pretrained(workdir / "teacher" / "unet").requires_grad_(False)
    text = CLIPTextModel.from_pretrained(workdir / "teacher" / "text_encoder").requires_grad_(False)
    student = models.unet(student=True)
    if config.init_from:  # the shipped student (its target network's weights), distilled further
        student.load_state_dict(UNet2DConditionModel.from_pretrained(adopt(config, "lcm/unet")).float().state_dict())
    else:
        student.load_state_dict(teacher.state_dict(), strict=False)  # all but the guidance projection
        torch.nn.init.zeros_(student.time_embedding.cond_proj.weight)  # starts as the teacher
    target = copy.deepcopy(student).requires_grad_(False)
    pipe = models.lcm_pipeline(None, text, tokenizer, target)  # for its guidance embedding and boundary scalings
    abar_all = pipe.scheduler.alphas_cumprod
    ddim_timesteps = torch.arange(1, len(abar_all) // config.skip + 1) * config.skip - 1  # 19, 39, ..., 999
    with torch.no_grad():
        uncond = text(token_ids(tokenizer, [""]))[0]
    optimizer = torch.optim.AdamW(student.parameters(), config.student_lr)
    stage = Stage(
        "student", {"student": student, "target": target}, optimizer, config.student_steps, config.student_lr, []
    )

    def consistency(unet, z_t, t, w_emb, cond) -> torch.Tensor:
        """The boundary-conditioned consistency function ``c_skip z_t + c_out x0``."""
        c_skip, c_out = (c.view(-1, 1, 1, 1) for c in pipe.scheduler.get_scalings_for_boundary_condition_discrete(t))
        eps = unet(z_t, t, timestep_cond=w_emb, encoder_hidden_states=cond).sample
        return c_skip * z_t + c_out * predict_x0(z_t, eps, abar_all[t])

    def step(g: torch.Generator) -> torch.Tensor:
        index = torch.randint(len(data["latents"]), (config.student_batch,), generator=g)
        z0, ids = data["latents"][index], data["ids"][index]
        b = len(ids)
        t_start = ddim_timesteps[torch.randint(len(ddim_timesteps), (b,), generator=g)]
        t_end = (t_start - config.skip).clamp(min=0)
        z_start = add_noise(z0, torch.randn(z0.shape, generator=g), abar_all[t_start])
        w = config.guidance_min + (config.guidance_max - config.guidance_min) * torch.rand(b, generator=g)
        w_emb = pipe.get_guidance_scale_embedding(w, embedding_dim=models.GUIDANCE_EMBEDDING)
        with torch.no_grad():
            cond = text(ids)[0]
            eps_c, eps_u = teacher(
                z_start.repeat(2, 1, 1, 1),
                t_start.repeat(2),
                encoder_hidden_states=torch.cat([cond, uncond.expand_as(cond)]),
            ).sample.chunk(2)
            abar_s, abar_e = abar_all[t_start], abar_all[t_end]
            x0_c, x0_u = predict_x0(z_start, eps_c, abar_s), predict_x0(z_start, eps_u, abar_s)
            wv = w.view(-1, 1, 1, 1)
            x0, eps = x0_c + wv * (x0_c - x0_u), eps_c + wv * (eps_c - eps_u)
            z_end = add_noise(x0, eps, abar_e)  # the guided DDIM step t_start -> t_end
            goal = consistency(target, z_end, t_end, w_emb, cond)
        loss = (consistency(student, z_start, t_start, w_emb, cond) - goal).pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema_update(target, student, config.student_ema)
        return loss.detach()

    run(stage, workdir, config, step)
    target.save_pretrained(workdir / "student")


def export(workdir: Path, out: Path) -> None:
    """Both pipelines, stock diffusers layout, safetensors, into ``out``: UNet and VAE weights in fp16 (diffusers
    loads them into fp32 models unless asked otherwise), the text encoder in fp32 (transformers would keep fp16)."""
    tokenizer = shapes_tokenizer()
    vae = AutoencoderKL.from_pretrained(workdir / "vae-decoder").half()
    text = CLIPTextModel.from_pretrained(workdir / "teacher" / "text_encoder")
    teacher = UNet2DConditionModel.from_pretrained(workdir / "teacher" / "unet").half()
    student = UNet2DConditionModel.from_pretrained(workdir / "student").half()
    models.lcm_pipeline(vae, text, tokenizer, student).save_pretrained(out / "lcm", safe_serialization=True)
    models.sd_pipeline(vae, text, tokenizer, teacher).save_pretrained(out / "sd", safe_serialization=True)


STAGES: dict[str, tuple[Callable[[Path, TrainConfig], None], str]] = {  # name: (function, what it leaves)
    "vae": (train_vae, "vae"),
    "decoder": (train_decoder, "vae-decoder"),
    "latents": (encode_latents, "latents.pt"),
    "teacher": (train_teacher, "teacher"),
    "student": (train_student, "student"),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rnri_lab.shapes.train", description=__doc__.split("\n")[0])
    parser.add_argument("--stage", choices=[*STAGES, "export", "all"], default="all")
    parser.add_argument("--workdir", type=Path, default=Path("artifacts/shapes-train"), help="checkpoints, curves")
    parser.add_argument("--out", type=Path, default=models.MODELS_DIR, help="where export writes the pipelines")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    for f in fields(TrainConfig):
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    args = parser.parse_args(argv)
    config = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    if args.threads:
        torch.set_num_threads(args.threads)
    args.workdir.mkdir(parents=True, exist_ok=True)
    saved = args.workdir / "config.json"
    settings = json.loads(json.dumps(config.__dict__))
    before = json.loads(saved.read_text()) if saved.exists() else {}
    changed = sorted(k for k in before if before[k] != settings.get(k))
    if changed:  # settings added since the workdir was made are taken at their defaults
        parser.error(f"{saved} was written with other values of {changed}; use another --workdir or the same")
    saved.write_text(json.dumps(settings, indent=1))
    times_path = args.workdir / "times.json"
    for name, (stage_fn, product) in STAGES.items():
        if args.stage == name or (args.stage == "all" and not (args.workdir / product).exists()):
            start = time.perf_counter()
            stage_fn(args.workdir, config)
            times = json.loads(times_path.read_text()) if times_path.exists() else {}  # read late: another
            times[name] = times.get(name, 0.0) + time.perf_counter() - start  # stage may run in parallel
            times_path.write_text(json.dumps(times, indent=1))
    times = json.loads(times_path.read_text()) if times_path.exists() else {}
    if args.stage in ("export", "all"):
        export(args.workdir, args.out)
    print("wall time per stage (s): " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))


if __name__ == "__main__":
    main()
