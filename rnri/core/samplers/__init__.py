"""Chain families: one module per sampler, each the same five pure functions of one step (docs/architecture.md,
"The math").

Every module (``lcm``, ``ddim``, ``euler``, ``flow``) defines its frozen step type and::

    step_map(z_t, eps, step, noise) -> z_next    S_i, the sampler's step with eps(z_t, t) and n_i given
    solve_frozen(y, eps, step, noise) -> z_t     the z with S_i(z) = y when eps is held fixed (affine in z)
    correct_noise(y, z_t, eps, step) -> noise    the n_i for which S_i(z_t) = y exactly (ReNoise)
    prior(y, step) -> (mean, var)                q(z_t | z_next = y), the forward process one step back
    clean_prior(z0, step) -> (mean, var)         q(z_t | z_0)

State: every chain runs on the denoiser's input ``z_t``. The diffusion families are variance preserving (``z_t =
sqrt(abar_t) x0 + sqrt(1 - abar_t) eps``), whatever coordinates their scheduler keeps: the Euler module converts to
and from sigma space inside its step. The rectified flow (``flow``, FLUX) is ``z_t = (1 - sigma) x0 + sigma n``, its
model predicts a velocity instead of eps, and its priors are written in those terms. ``noise=None`` means the
step's deterministic form. The step types carry ``t`` (the timestep the denoiser is evaluated at) and ``is_last``
(the step that ends on the clean latent and takes no stored noise).
"""
