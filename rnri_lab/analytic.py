"""Analytic denoisers with known answers: Gaussian-mixture data, whose exact ``E[eps | z_t]`` is closed-form.

Data ``x0 ~ sum_k pi_k N(mu_k, Q_k diag(v_k) Q_k^T)``. With ``z_t = sqrt(abar) x0 + sqrt(1 - abar) eps``,
``p(z_t) = sum_k pi_k N(sqrt(abar) mu_k, C_k)``, ``C_k = Q_k diag(abar v_k + 1 - abar) Q_k^T``, and

    eps*(z_t) = -sqrt(1 - abar) grad log p(z_t) = sqrt(1 - abar) sum_k w_k(z_t) C_k^{-1} (z_t - sqrt(abar) mu_k),

with ``w_k`` the posterior responsibilities (a softmax). Three families whose Jacobians differ in structure:
``isotropic`` (``v_k`` constant per component), ``diagonal`` (``v_k`` varies per dimension) and ``subspace``
(data near a random low-dimensional subspace: ``Q_k`` dense, strongly anisotropic), and ``narrow`` (16 isotropic
components whose standard deviations span two orders of magnitude, 0.01 to 1: a strong denoiser at high noise snaps
many latents onto one mode, so the inverse steps are ill-conditioned and a poor first guess lands in the wrong
basin). The prompt embedding shifts
the mixture weights through a fixed random projection, so prompts matter as they do for a real UNet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import SimpleNamespace

import torch
from torch import nn

FAMILIES = ("isotropic", "diagonal", "subspace", "narrow")


@dataclass(frozen=True)
class MixtureConfig:
    """Shape and randomness of an analytic test model."""

    family: str = "diagonal"  # one of FAMILIES
    shape: tuple[int, int, int] = (4, 8, 8)  # latent (C, H, W)
    components: int = 0  # mixture components K; 0: the family's default (4, or 16 narrow ones)
    rank: int = 8  # subspace family: dimension of each component's subspace
    seed: int = 0  # generates means, variances, bases and the prompt projection
    cross_attention_dim: int = 32  # width of the prompt embeddings it accepts
    alphas_cumprod: tuple[float, ...] = field(default=(), repr=False)  # empty: Stable Diffusion's schedule


def sd_alphas_cumprod(num_train_timesteps: int = 1000) -> torch.Tensor:
    """Stable Diffusion's ``scaled_linear`` schedule (beta 0.00085 to 0.012), as LCM uses it."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, num_train_timesteps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


class GaussianMixtureUNet(nn.Module):
    """The exact noise predictor of a Gaussian mixture, with the call signature of diffusers' UNet."""

    def __init__(self, config: MixtureConfig) -> None:
        super().__init__()
        if config.family not in FAMILIES:
            raise ValueError(f"unknown family {config.family!r}; choose one of {FAMILIES}")
        g = torch.Generator().manual_seed(config.seed)
        dim, k = math.prod(config.shape), config.components or (16 if config.family == "narrow" else 4)
        means = 0.8 * torch.randn(k, dim, generator=g, dtype=torch.float64)
        variances, bases = self._covariances(config, dim, k, g)
        acp = torch.tensor(config.alphas_cumprod, dtype=torch.float64) if config.alphas_cumprod else None
        self.register_buffer("means", means)  # (K, D)
        self.register_buffer("variances", variances)  # (K, D) eigenvalues of each covariance
        self.register_buffer("bases", bases)  # (K, D, D) eigenvectors, or (0,) where the family is axis-aligned
        self.register_buffer("log_weights", torch.log_softmax(0.5 * torch.randn(k, generator=g), 0).double())
        self.register_buffer("prompt_projection", torch.randn(config.cross_attention_dim, k, generator=g).double())
        self.register_buffer("alphas_cumprod", acp if acp is not None else sd_alphas_cumprod())
        self.shape = config.shape
        self.config = SimpleNamespace(  # what pipelines read off a UNet
            in_channels=config.shape[0],
            out_channels=config.shape[0],
            sample_size=config.shape[1],
            time_cond_proj_dim=None,
            cross_attention_dim=config.cross_attention_dim,
        )
        self.dtype = torch.float32

    @staticmethod
    def _covariances(config: MixtureConfig, dim: int, k: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        if config.family == "isotropic":
            return (0.05 + 0.3 * torch.rand(k, 1, generator=g, dtype=torch.float64)).expand(
                k, dim
            ).clone(), torch.zeros(0)
        if config.family == "narrow":  # isotropic components whose std spans two orders of magnitude, 0.01 to 1
            return torch.exp(torch.empty(k, 1, dtype=torch.float64).uniform_(math.log(1e-4), 0.0, generator=g)).expand(
                k, dim
            ).clone(), torch.zeros(0)
        if config.family == "diagonal":
            return torch.exp(torch.randn(k, dim, generator=g, dtype=torch.float64) * 1.2 - 2.0), torch.zeros(0)
        bases = torch.linalg.qr(torch.randn(k, dim, dim, generator=g, dtype=torch.float64))[0]
        variances = torch.full((k, dim), 1e-3, dtype=torch.float64)
        variances[:, : config.rank] = 0.5 + torch.rand(k, config.rank, generator=g, dtype=torch.float64)
        return variances, bases

    def log_mixture_weights(self, encoder_hidden_states: torch.Tensor | None, batch: int) -> torch.Tensor:
        """``log pi_k``, shifted by the prompt embedding's mean token: (B, K)."""
        base = self.log_weights.expand(batch, -1)
        if encoder_hidden_states is None:
            return base
        shift = encoder_hidden_states.double().mean(dim=1) @ self.prompt_projection  # (B, K)
        return torch.log_softmax(base + shift, dim=-1)

    def forward(
        self,
        sample: torch.Tensor,
        timestep,
        encoder_hidden_states: torch.Tensor | None = None,
        timestep_cond=None,
        return_dict: bool = True,
        **kwargs,
    ):
        """eps*(z_t) for z_t = ``sample`` (B, C, H, W) at integer ``timestep``; returns ``(eps,)`` or a namespace."""
        t = int(timestep.flatten()[0]) if torch.is_tensor(timestep) else int(timestep)
        abar = self.alphas_cumprod[t]
        z = sample.double().flatten(1)  # (B, D)
        centred = z[:, None, :] - abar.sqrt() * self.means  # (B, K, D)
        if self.bases.numel():
            centred = torch.einsum("kde,bkd->bke", self.bases, centred)  # into each component's eigenbasis
        c = abar * self.variances + (1.0 - abar)  # (K, D)
        log_n = -0.5 * (centred.pow(2) / c).sum(-1) - 0.5 * torch.log(c).sum(-1)  # (B, K)
        w = torch.softmax(self.log_mixture_weights(encoder_hidden_states, z.shape[0]) + log_n, dim=-1)
        precision_times = centred / c  # C_k^{-1} (z - m_k) in the eigenbasis
        if self.bases.numel():
            precision_times = torch.einsum("kde,bke->bkd", self.bases, precision_times)
        eps = (1.0 - abar).sqrt() * (w[..., None] * precision_times).sum(1)
        eps = eps.reshape(sample.shape).to(sample.dtype)
        return (eps,) if not return_dict else SimpleNamespace(sample=eps)

    def sample_data(
        self, n: int, generator: torch.Generator, encoder_hidden_states: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Draw ``n`` clean latents x0 from the mixture: (n, C, H, W), float32."""
        logits = self.log_mixture_weights(encoder_hidden_states, n)
        k = torch.multinomial(logits.exp().float(), 1, generator=generator).squeeze(1)
        white = torch.randn(n, self.means.shape[1], generator=generator, dtype=torch.float64)
        scaled = white * self.variances[k].sqrt()
        if self.bases.numel():
            scaled = torch.einsum("nde,ne->nd", self.bases[k], scaled)
        return (self.means[k] + scaled).reshape(n, *self.shape).float()
