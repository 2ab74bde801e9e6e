"""A transcription of score_sde's probability-flow likelihood, the reference for ``ode_ll``.

Transcribed from yang-song/score_sde_pytorch, ``likelihood.py`` (``get_div_fn``,
``get_likelihood_fn``), with the pieces of ``sde_lib.py`` (``VPSDE.sde``, ``marginal_prob``,
``prior_logp``, the same of ``VESDE`` for :func:`ve_likelihood_bpd`, ``SDE.reverse`` with
``probability_flow=True``) and ``models/utils.py`` (``get_score_fn`` for a continuous VP SDE,
``to_flattened_numpy``, ``from_flattened_numpy``) that
it calls. Copyright 2020 The Google Research Authors, licensed under the Apache License,
Version 2.0 (http://www.apache.org/licenses/LICENSE-2.0); changes: the functions are
flattened into one, the network is any ε-predictor ``eps_model(x, labels)`` called at
``labels = t·N`` (the bundled UNet counts timesteps from 1, where score_sde's count from 0 at
``t·(N − 1)``), and the probe noise is passed in (score_sde draws it with ``randint_like`` /
``randn_like``) so that both implementations use the same draw.

The solver is scipy's ``solve_ivp`` (RK45) on the whole batch as one system, as in score_sde.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy import integrate


def vp_likelihood_bpd(
    eps_model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    data: torch.Tensor,
    epsilon: torch.Tensor,
    *,
    beta_min: float = 0.1,
    beta_max: float = 20.0,
    num_scales: int = 1000,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: float = 1e-5,
    inverse_scaler_of_minus_one: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """score_sde's ``likelihood_fn(model, data)`` for a VP SDE: bits/dim per image (with its
    offset 7 − inverse_scaler(−1)), the latent z and the NFE of ``solve_ivp``.

    ``data`` is already dequantised and scaled to the model's space ([−1, 1]), as score_sde's
    ``run_lib.evaluate`` passes it; ``epsilon`` is the Hutchinson probe (same shape).
    """
    shape = data.shape
    big_t = 1.0

    def marginal_std(t: torch.Tensor) -> torch.Tensor:
        log_mean_coeff = -0.25 * t**2 * (beta_max - beta_min) - 0.5 * t * beta_min
        return torch.sqrt(1.0 - torch.exp(2.0 * log_mean_coeff))

    def score_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        labels = t * num_scales
        score = eps_model(x, labels)
        std = marginal_std(t)
        return -score / std[:, None, None, None]

    def drift_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        beta_t = beta_min + t * (beta_max - beta_min)
        drift = -0.5 * beta_t[:, None, None, None] * x
        diffusion = torch.sqrt(beta_t)
        score = score_fn(x, t)
        return drift - diffusion[:, None, None, None] ** 2 * score * 0.5

    def div_fn(x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            x.requires_grad_(True)
            fn_eps = torch.sum(drift_fn(x, t) * noise)
            grad_fn_eps = torch.autograd.grad(fn_eps, x)[0]
        x.requires_grad_(False)
        return torch.sum(grad_fn_eps * noise, dim=tuple(range(1, len(x.shape))))

    def to_flattened_numpy(x: torch.Tensor) -> np.ndarray:
        return x.detach().cpu().numpy().reshape((-1,))

    def from_flattened_numpy(x: np.ndarray, shape) -> torch.Tensor:
        return torch.from_numpy(x.reshape(shape))

    with torch.no_grad():

        def ode_func(t: float, x: np.ndarray) -> np.ndarray:
            sample = from_flattened_numpy(x[: -shape[0]], shape).to(data.device).type(torch.float32)
            vec_t = torch.ones(sample.shape[0], device=sample.device) * t
            drift = to_flattened_numpy(drift_fn(sample, vec_t))
            logp_grad = to_flattened_numpy(div_fn(sample, vec_t, epsilon))
            return np.concatenate([drift, logp_grad], axis=0)

        init = np.concatenate([to_flattened_numpy(data), np.zeros((shape[0],))], axis=0)
        solution = integrate.solve_ivp(
            ode_func, (eps, big_t), init, rtol=rtol, atol=atol, method="RK45"
        )
        nfe = solution.nfev
        zp = solution.y[:, -1]
        z = from_flattened_numpy(zp[: -shape[0]], shape).to(data.device).type(torch.float32)
        delta_logp = (
            from_flattened_numpy(zp[-shape[0] :], (shape[0],)).to(data.device).type(torch.float32)
        )
        n = np.prod(shape[1:])
        prior_logp = -n / 2.0 * np.log(2 * np.pi) - torch.sum(z**2, dim=(1, 2, 3)) / 2.0
        bpd = -(prior_logp + delta_logp) / np.log(2)
        bpd = bpd / n
        offset = 7.0 - inverse_scaler_of_minus_one
        bpd = bpd + offset
        return bpd, z, nfe


def ve_likelihood_bpd(
    score_model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    data: torch.Tensor,
    epsilon: torch.Tensor,
    *,
    sigma_min: float = 0.01,
    sigma_max: float = 50.0,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: float = 1e-5,
    inverse_scaler_of_minus_one: float = -1.0,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """score_sde's ``likelihood_fn(model, data)`` for a VE SDE (``VESDE.sde``: f = 0,
    g = σ(t)·√(2 ln(σ_max/σ_min)), σ(t) = σ_min(σ_max/σ_min)^t; ``get_score_fn`` of a VE
    model: the network called at labels σ(t) returns the score; ``VESDE.prior_logp``:
    N(0, σ_max² I)): bits/dim per image with the offset 7 − inverse_scaler(−1) (data in
    [0, 1], not centred: inverse_scaler(−1) = −1), the latent z and the NFE of ``solve_ivp``."""
    shape = data.shape
    big_t = 1.0

    def drift_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        sigma = sigma_min * (sigma_max / sigma_min) ** t
        diffusion = sigma * np.sqrt(2 * (np.log(sigma_max) - np.log(sigma_min)))
        score = score_model(x, sigma)
        return -(diffusion[:, None, None, None] ** 2) * score * 0.5

    def div_fn(x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            x.requires_grad_(True)
            fn_eps = torch.sum(drift_fn(x, t) * noise)
            grad_fn_eps = torch.autograd.grad(fn_eps, x)[0]
        x.requires_grad_(False)
        return torch.sum(grad_fn_eps * noise, dim=tuple(range(1, len(x.shape))))

    with torch.no_grad():

        def ode_func(t: float, x: np.ndarray) -> np.ndarray:
            sample = torch.from_numpy(x[: -shape[0]].reshape(shape)).type(torch.float32)
            vec_t = torch.ones(sample.shape[0]) * t
            drift = drift_fn(sample, vec_t).detach().numpy().reshape((-1,))
            logp_grad = div_fn(sample, vec_t, epsilon).detach().numpy().reshape((-1,))
            return np.concatenate([drift, logp_grad], axis=0)

        init = np.concatenate([data.detach().numpy().reshape((-1,)), np.zeros((shape[0],))])
        solution = integrate.solve_ivp(
            ode_func, (eps, big_t), init, rtol=rtol, atol=atol, method="RK45"
        )
        zp = solution.y[:, -1]
        z = torch.from_numpy(zp[: -shape[0]].reshape(shape)).type(torch.float32)
        delta_logp = torch.from_numpy(zp[-shape[0] :]).type(torch.float32)
        n = np.prod(shape[1:])
        prior_logp = -n / 2.0 * np.log(2 * np.pi * sigma_max**2) - torch.sum(
            z**2, dim=(1, 2, 3)
        ) / (2 * sigma_max**2)
        bpd = -(prior_logp + delta_logp) / np.log(2) / n
        return bpd + 7.0 - inverse_scaler_of_minus_one, z, solution.nfev
