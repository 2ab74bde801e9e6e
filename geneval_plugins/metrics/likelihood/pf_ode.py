"""The probability-flow ODE of a score model and its log-likelihood (Song et al. 2021, §4.3,
App. D.2), solved by an adaptive Dormand–Prince RK4(5) batched over images.

For the forward SDE dx = f(x, t) dt + g(t) dw (:class:`~geneval.capabilities.ProbabilityFlowSDE`)
and a score s_θ(x, t) ≈ ∇ₓ log p_t(x), the ODE

    dx/dt = f̃(x, t) = f(x, t) − ½ g(t)² s_θ(x, t)

has the marginals p_t, and the instantaneous change of variables (Chen et al. 2018) gives

    log p_ε(x) = log p_T(x_T) + ∫_ε^T ∇·f̃(x_t, t) dt,

integrated forward from x_ε = x together with the running integral (kept in float64). The
divergence is exact (Σ_j ∂f̃_j/∂x_j over all D dimensions, one vector-Jacobian product per
dimension, chunks of dimensions batched as copies of the images) or Hutchinson's estimate
E_v[vᵀ(∂f̃/∂x)v] with Rademacher or Gaussian probes v held fixed for the whole solve, as
score_sde does (``likelihood.py``, ``get_likelihood_fn``).

The solver is the Dormand–Prince 5(4) pair (Dormand & Prince 1980) with scipy's ``RK45``
conventions (first-same-as-last, error estimate E, initial step of Hairer et al. II.4, safety
0.9, step factors in [0.2, 10], RMS error norm with scale atol + rtol·max(|y|, |y_new|) over the
D + 1 components), but one step-size controller per image: every image takes its own steps
at its own times, and a finished image leaves the batch.

References
----------
.. [1] Y. Song, J. Sohl-Dickstein, D. P. Kingma, A. Kumar, S. Ermon, B. Poole, "Score-Based
   Generative Modeling through Stochastic Differential Equations", ICLR 2021, §4.3, App. D.2.
.. [2] J. R. Dormand, P. J. Prince, "A family of embedded Runge-Kutta formulae", J. Comp.
   Appl. Math. 6 (1980).
.. [3] E. Hairer, S. P. Nørsett, G. Wanner, "Solving Ordinary Differential Equations I",
   §II.4 (starting step size).
.. [4] M. F. Hutchinson, "A stochastic estimator of the trace of the influence matrix for
   Laplacian smoothing splines", 1989.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from geneval.plugin import ProbabilityFlowSDE

#: A score s(x, t): x (N, C, H, W) in the model's space, t (N,) → (N, C, H, W).
ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# Dormand–Prince 5(4) tableau (scipy.integrate.RK45).
_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0)
_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
)
_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84)
_E = (-71 / 57600, 0.0, 71 / 16695, -71 / 1920, 17253 / 339200, -22 / 525, 1 / 40)
_SAFETY, _MIN_FACTOR, _MAX_FACTOR = 0.9, 0.2, 10.0


# -- the SDE ------------------------------------------------------------------------------------


def drift_coefficients(
    sde: ProbabilityFlowSDE, t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(a(t), g(t)²) with f(x, t) = a(t)·x: a = −½β(t) (vp, subvp) or 0 (ve); g² as in
    :class:`~geneval.capabilities.ProbabilityFlowSDE`."""
    if sde.kind == "ve":
        sigma = sde.marginal_std(t)
        return torch.zeros_like(t), sigma**2 * (2 * math.log(sde.sigma_max / sde.sigma_min))
    beta = sde.beta_min + t * (sde.beta_max - sde.beta_min)
    g2 = beta if sde.kind == "vp" else beta * -torch.expm1(4 * sde.log_mean_coeff(t))
    return -0.5 * beta, g2


def prior_log_prob(sde: ProbabilityFlowSDE, z: torch.Tensor) -> torch.Tensor:
    """log p_T(z) per row of z (N, D), float64: N(0, I) (vp, subvp), N(0, σ_max² I) (ve)."""
    z = z.to(torch.float64)
    dims = z.shape[1]
    var = sde.sigma_max**2 if sde.kind == "ve" else 1.0
    return -0.5 * dims * math.log(2 * math.pi * var) - (z**2).sum(1) / (2 * var)


def probability_flow_drift(
    sde: ProbabilityFlowSDE, score: ScoreFn, shape: tuple[int, ...]
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """f̃(x, t) = a(t)x − ½g(t)² s(x, t) on flattened states x (N, D) and times t (N,), with a
    and g² of :func:`drift_coefficients` and the score called on x reshaped to (N, *shape)."""

    def drift(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, g2 = drift_coefficients(sde, t.to(torch.float64))
        a = a.to(x.dtype)[:, None]
        g2 = g2.to(x.dtype)[:, None]
        s = score(x.reshape(-1, *shape), t.to(x.dtype)).reshape(x.shape[0], -1)
        return a * x - 0.5 * g2 * s

    return drift


# -- the divergence ---------------------------------------------------------------------------


def drift_and_exact_divergence(
    drift: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    t: torch.Tensor,
    *,
    max_rows: int = 4096,
) -> tuple[torch.Tensor, torch.Tensor]:
    """f̃(x, t) and its exact divergence Σ_j ∂f̃_j/∂x_j (float64) for x (N, D).

    Dimensions are taken c at a time: the N images are copied c times, one forward pass on the
    N·c rows, and one vector-Jacobian product with the c unit vectors e_j gives row j of each
    image's Jacobian, of which the diagonal entry is kept. c = max(1, ``max_rows`` // N).
    """
    n, dims = x.shape
    chunk = max(1, min(dims, max_rows // max(n, 1)))
    div = torch.zeros(n, dtype=torch.float64, device=x.device)
    value = None
    eye = torch.eye(dims, dtype=x.dtype, device=x.device)
    for start in range(0, dims, chunk):
        c = min(chunk, dims - start)
        with torch.enable_grad():
            rows = x.detach().repeat(c, 1).requires_grad_(True)
            out = drift(rows, t.repeat(c))
            basis = eye[start : start + c].repeat_interleave(n, dim=0)  # copy k ↦ e_{start+k}
            (grad,) = torch.autograd.grad(out, rows, grad_outputs=basis)
        div += (grad * basis).sum(1).reshape(c, n).to(torch.float64).sum(0)
        if value is None:
            value = out[:n].detach()
    assert value is not None
    return value, div


def drift_and_hutchinson_divergence(
    drift: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    t: torch.Tensor,
    probes: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """f̃(x, t) and Hutchinson's divergence (1/P) Σ_p v_pᵀ (∂f̃/∂x) v_p for x (N, D) and probes
    (P, N, D), one vector-Jacobian product per probe batched over the P·N rows (float64)."""
    p, n, _ = probes.shape
    with torch.enable_grad():
        rows = x.detach().repeat(p, 1).requires_grad_(True)
        out = drift(rows, t.repeat(p))
        v = probes.reshape(p * n, -1).to(out.dtype)
        (grad,) = torch.autograd.grad(out, rows, grad_outputs=v)
    div = (grad * v).sum(1).to(torch.float64).reshape(p, n).mean(0)
    return out[:n].detach(), div


# -- the solver -------------------------------------------------------------------------------


@dataclass
class FlowSolution:
    """The end of a probability-flow solve: x_T (N, D), ∫∇·f̃ dt (float64, (N,)), the number of
    drift evaluations per image (N,) and log p_ε(x) (float64, (N,)) in the model's space."""

    z: torch.Tensor
    delta_logp: torch.Tensor
    nfe: torch.Tensor
    log_likelihood: torch.Tensor


def _rms(values: torch.Tensor) -> torch.Tensor:
    return values.pow(2).mean(1).sqrt()


def solve_probability_flow(
    sde: ProbabilityFlowSDE,
    score: ScoreFn,
    x: torch.Tensor,
    *,
    probes: torch.Tensor | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_rows: int = 4096,
    max_steps: int = 100_000,
    on_done: Callable[[int], None] | None = None,
) -> FlowSolution:
    """Integrate the probability-flow ODE from t = ε to T for each image of x (N, C, H, W), in
    the model's space, with one Dormand–Prince step-size controller per image.

    ``probes`` (P, N, C, H, W) selects Hutchinson's divergence with those probes fixed for the
    solve; ``None`` the exact divergence. Returns log p_ε(x) = log p_T(x_T) + ∫_ε^T ∇·f̃ dt
    (:class:`FlowSolution`). ``on_done(k)`` is called when k more images have finished.
    """
    shape = tuple(x.shape[1:])
    n = x.shape[0]
    dims = math.prod(shape)
    device = x.device
    drift = probability_flow_drift(sde, score, shape)
    flat_probes = None if probes is None else probes.reshape(probes.shape[0], n, dims)

    def rhs(idx: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if flat_probes is None:
            return drift_and_exact_divergence(drift, y, t, max_rows=max_rows)
        return drift_and_hutchinson_divergence(drift, y, t, flat_probes[:, idx])

    y = x.reshape(n, dims).detach().clone()
    logp = torch.zeros(n, dtype=torch.float64, device=device)
    t = torch.full((n,), float(sde.eps), dtype=torch.float64, device=device)
    t_end = float(sde.t_end)
    nfe = torch.zeros(n, dtype=torch.long, device=device)
    all_idx = torch.arange(n, device=device)

    def err_scale(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return atol + torch.maximum(a.abs(), b.abs()) * rtol

    def joint(yv: torch.Tensor, lv: torch.Tensor) -> torch.Tensor:
        return torch.cat([yv.to(torch.float64), lv[:, None]], 1)

    # Initial step (Hairer et al. II.4, as scipy's select_initial_step with order 4).
    f0, d0 = rhs(all_idx, y, t.to(y.dtype))
    nfe += 1
    state0 = joint(y, logp)
    slope0 = joint(f0, d0)
    scale = atol + state0.abs() * rtol
    n0, n1 = _rms(state0 / scale), _rms(slope0 / scale)
    h0 = torch.where((n0 < 1e-5) | (n1 < 1e-5), torch.full_like(n0, 1e-6), 0.01 * n0 / n1)
    h0 = torch.minimum(h0, t_end - t)
    y1 = y + h0[:, None].to(y.dtype) * f0
    f1, d1 = rhs(all_idx, y1, (t + h0).to(y.dtype))
    nfe += 1
    n2 = _rms((joint(f1, d1) - slope0) / scale) / h0
    big = torch.maximum(n1, n2)
    h1 = torch.where(
        big <= 1e-15, torch.maximum(torch.full_like(h0, 1e-6), h0 * 1e-3), (0.01 / big) ** 0.2
    )
    h = torch.minimum(torch.minimum(100 * h0, h1), t_end - t)

    f, d = f0, d0
    active = all_idx.clone()
    rejected_before = torch.zeros(n, dtype=torch.bool, device=device)
    steps = 0
    while active.numel():
        steps += 1
        if steps > max_steps:
            raise RuntimeError(f"the probability-flow solve took more than {max_steps} steps")
        ya, la, ta, ha = y[active], logp[active], t[active], h[active]
        ks = [f[active]]
        kd = [d[active]]
        hy = ha[:, None].to(y.dtype)
        for stage in range(1, 6):
            dy = sum(a * k for a, k in zip(_A[stage], ks, strict=False))
            yi = ya + hy * dy
            fi, di = rhs(active, yi, (ta + _C[stage] * ha).to(y.dtype))
            ks.append(fi)
            kd.append(di)
        y_new = ya + hy * sum(b * k for b, k in zip(_B, ks, strict=False))
        l_new = la + ha * sum(b * k for b, k in zip(_B, kd, strict=False))
        t_new = ta + ha
        f_new, d_new = rhs(active, y_new, t_new.to(y.dtype))
        ks.append(f_new)
        kd.append(d_new)
        nfe[active] += 6
        err_y = hy.to(torch.float64) * sum(
            e * k.to(torch.float64) for e, k in zip(_E, ks, strict=True)
        )
        err_l = ha * sum(e * k for e, k in zip(_E, kd, strict=True))
        err = joint(err_y, err_l) / err_scale(joint(ya, la), joint(y_new, l_new))
        norm = _rms(err)
        accept = norm < 1
        with torch.no_grad():
            factor = torch.where(
                norm == 0,
                torch.full_like(norm, _MAX_FACTOR),
                (_SAFETY * norm.clamp_min(1e-300) ** -0.2).clamp(max=_MAX_FACTOR),
            )
            factor_acc = torch.where(rejected_before[active], factor.clamp(max=1.0), factor)
            factor_rej = factor.clamp(min=_MIN_FACTOR)
        acc_idx = active[accept]
        rej_idx = active[~accept]
        y[acc_idx] = y_new[accept]
        logp[acc_idx] = l_new[accept]
        t[acc_idx] = t_new[accept]
        f[acc_idx] = f_new[accept]
        d[acc_idx] = d_new[accept]
        rejected_before[acc_idx] = False
        rejected_before[rej_idx] = True
        h[acc_idx] = ha[accept] * factor_acc[accept]
        h[rej_idx] = ha[~accept] * factor_rej[~accept]
        finished = t >= t_end - 1e-12 * max(1.0, abs(t_end))
        h = torch.minimum(h, (t_end - t).clamp_min(0.0))
        still = active[~finished[active]]
        if on_done is not None and still.numel() < active.numel():
            on_done(active.numel() - still.numel())
        active = still
    prior = prior_log_prob(sde, y)
    return FlowSolution(z=y, delta_logp=logp, nfe=nfe, log_likelihood=prior + logp)


def draw_probes(
    shape: tuple[int, ...], kind: str, generator: torch.Generator, device: torch.device | str
) -> torch.Tensor:
    """Hutchinson probes of ``shape``: ±1 with equal probability (``rademacher``) or N(0, 1)
    (``gaussian``), drawn on the CPU from ``generator`` and moved to ``device``."""
    if kind == "rademacher":
        v = torch.randint(0, 2, shape, generator=generator).to(torch.float32) * 2 - 1
    elif kind == "gaussian":
        v = torch.randn(shape, generator=generator)
    else:
        raise ValueError(f"unknown probe kind {kind!r}")
    return v.to(device)
