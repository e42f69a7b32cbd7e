"""The analytic denoisers: their eps is the exact (scaled) score of the noisy mixture."""

from __future__ import annotations

import pytest
import torch

from rnri_lab.analytic import FAMILIES, GaussianMixtureUNet, MixtureConfig


def log_density(model: GaussianMixtureUNet, z: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    """log p(z_t) of the noisy mixture, computed independently with torch.distributions."""
    dim = model.means.shape[1]
    comps = []
    for k in range(model.means.shape[0]):
        basis = model.bases[k] if model.bases.numel() else torch.eye(dim, dtype=torch.float64)
        cov = basis @ torch.diag(abar * model.variances[k] + 1 - abar) @ basis.T
        dist = torch.distributions.MultivariateNormal(abar.sqrt() * model.means[k], covariance_matrix=cov)
        comps.append(model.log_weights[k] + dist.log_prob(z))
    return torch.logsumexp(torch.stack(comps), dim=0)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("t", [999, 500, 100])
def test_eps_is_scaled_score(family, t):
    model = GaussianMixtureUNet(MixtureConfig(family=family, shape=(1, 2, 3), rank=2, components=3))
    z = torch.randn(1, 6, dtype=torch.float64, requires_grad=True)
    abar = model.alphas_cumprod[t]
    (score,) = torch.autograd.grad(log_density(model, z[0], abar), z)
    expected = -(1 - abar).sqrt() * score
    eps = model(z.detach().reshape(1, 1, 2, 3).double(), t, return_dict=False)[0]
    assert torch.allclose(eps.reshape(1, 6), expected, rtol=1e-6, atol=1e-8)


def test_prompt_shifts_mixture_weights():
    model = GaussianMixtureUNet(MixtureConfig())
    a = model.log_mixture_weights(torch.ones(1, 3, 32), 1)
    b = model.log_mixture_weights(-torch.ones(1, 3, 32), 1)
    assert not torch.allclose(a, b)


def test_families_differ_in_jacobian_structure():
    """Isotropic: one variance per component; diagonal: per dimension; subspace: dense eigenbasis."""
    iso, diag, sub = (GaussianMixtureUNet(MixtureConfig(family=f)) for f in ("isotropic", "diagonal", "subspace"))
    assert torch.allclose(iso.variances, iso.variances[:, :1].expand_as(iso.variances))
    assert diag.variances.std(dim=1).min() > 0.01 and diag.bases.numel() == 0
    assert sub.bases.numel() > 0
