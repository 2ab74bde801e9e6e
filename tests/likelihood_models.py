"""Small models with exact likelihoods, for testing the likelihood metrics.

* :class:`PPCAModel` — probabilistic PCA x = Wz + μ + ε, z ~ N(0, I_L), ε ~ N(0, s² I_D)
  (Tipping & Bishop 1999): log p(x) = log N(x; μ, WWᵀ + s²I) exactly, the posterior
  p(z | x) = N(M⁻¹Wᵀ(x − μ), s²M⁻¹), M = WᵀW + s²I, and the ELBO of any Gaussian q in closed
  form. It offers :class:`geneval.capabilities.SupportsLatentProposal`.
* :class:`TinyRBM` / :class:`TinyGRBM` — RBMs built from tensors, wired to the annealing paths
  exactly as a model family would wire its parameters (``annealing_path``), with exact log Z by
  enumerating their hidden layer here, in numpy.
* :class:`GaussianEnergyModel` — E(x) = ½(x − c)ᵀA(x − c), optionally restricted to [0, 1]^D.

The exact references are computed in numpy/scipy from the definitions, never through the code
under test.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
from scipy.special import logsumexp, ndtr
from scipy.stats import multivariate_normal

from geneval_plugins.models.energy.annealing import (
    BernoulliRBMPath,
    DiagonalGaussianBase,
    EnergyPath,
    GaussianRBMPath,
    TruncatedGaussianBase,
)


def all_binary(n: int) -> np.ndarray:
    """Every vector of {0,1}^n, (2^n, n) float64."""
    return np.array(list(itertools.product([0.0, 1.0], repeat=n)))


def softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


class PPCAModel:
    """Probabilistic PCA on images of ``image_shape`` (D = C·H·W values), float64 throughout.

    ``proposal_shift`` and ``proposal_scale`` make q(z | x) = N(m(x) + shift, scale² S) instead
    of the true posterior N(m(x), S) (shift 0, scale 1).
    """

    likelihood_space = "density"

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (1, 4, 4),
        latent_dim: int = 3,
        noise_std: float = 0.1,
        seed: int = 0,
        proposal_shift: float = 0.0,
        proposal_scale: float = 1.0,
    ) -> None:
        rng = np.random.default_rng(seed)
        self.image_shape = image_shape
        self.device = torch.device("cpu")
        self.config: dict = {}
        d = math.prod(image_shape)
        self.W = 0.2 * rng.normal(size=(d, latent_dim))
        self.mu = rng.uniform(0.3, 0.7, size=d)
        self.s2 = noise_std**2
        m = self.W.T @ self.W + self.s2 * np.eye(latent_dim)
        self.post_cov = self.s2 * np.linalg.inv(m)
        self.post_gain = np.linalg.solve(m, self.W.T)  # M⁻¹Wᵀ
        self.q_shift, self.q_scale = proposal_shift, proposal_scale
        self.q_cov = proposal_scale**2 * self.post_cov
        self._q_chol = torch.from_numpy(np.linalg.cholesky(self.q_cov))
        self._w, self._mu = torch.from_numpy(self.W), torch.from_numpy(self.mu)

    # -- exact references (numpy) --------------------------------------------------------------
    def sample_images(self, n: int, seed: int) -> torch.Tensor:
        rng = np.random.default_rng(seed)
        z = rng.normal(size=(n, self.W.shape[1]))
        x = z @ self.W.T + self.mu + math.sqrt(self.s2) * rng.normal(size=(n, self.W.shape[0]))
        return torch.from_numpy(x).reshape(n, *self.image_shape)

    def exact_log_prob(self, images: torch.Tensor) -> np.ndarray:
        cov = self.W @ self.W.T + self.s2 * np.eye(self.W.shape[0])
        x = images.reshape(images.shape[0], -1).numpy()
        return multivariate_normal(self.mu, cov).logpdf(x)

    def q_mean(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mu) @ self.post_gain.T + self.q_shift

    def exact_elbo(self, images: torch.Tensor) -> np.ndarray:
        """E_q[log p(x, z) − log q(z | x)] of the (possibly imperfect) proposal, closed form."""
        x = images.reshape(images.shape[0], -1).numpy()
        m, cov = self.q_mean(x), self.q_cov
        d, latent = self.W.shape
        resid = x - m @ self.W.T - self.mu
        expected_lik = -0.5 * d * math.log(2 * math.pi * self.s2) - (
            (resid**2).sum(1) + np.trace(self.W @ cov @ self.W.T)
        ) / (2 * self.s2)
        expected_prior = -0.5 * latent * math.log(2 * math.pi) - 0.5 * (
            (m**2).sum(1) + np.trace(cov)
        )
        entropy = 0.5 * latent * math.log(2 * math.pi * math.e) + 0.5 * np.linalg.slogdet(cov)[1]
        return expected_lik + expected_prior + entropy

    # -- SupportsLatentProposal ----------------------------------------------------------------
    def log_joint(self, images: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        x = images.reshape(images.shape[0], -1).to(torch.float64)
        latent = latents.shape[-1]
        log_prior = -0.5 * latents.pow(2).sum(-1) - 0.5 * latent * math.log(2 * math.pi)
        resid = x - latents @ self._w.T - self._mu
        d = x.shape[1]
        log_lik = -0.5 * resid.pow(2).sum(-1) / self.s2 - 0.5 * d * math.log(2 * math.pi * self.s2)
        return log_prior + log_lik

    def _gaussian_log_density(self, z: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        latent = z.shape[-1]
        white = torch.linalg.solve_triangular(
            self._q_chol, (z - mean).reshape(-1, latent).T, upper=False
        ).T.reshape(z.shape)
        log_det = 2 * torch.log(torch.diagonal(self._q_chol)).sum()
        return -0.5 * white.pow(2).sum(-1) - 0.5 * log_det - 0.5 * latent * math.log(2 * math.pi)

    def sample_posterior(
        self, images: torch.Tensor, k: int, *, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.reshape(images.shape[0], -1).to(torch.float64)
        mean = torch.from_numpy(self.q_mean(x.numpy()))
        noise = torch.randn(
            (k, x.shape[0], mean.shape[1]), generator=generator, dtype=torch.float64
        )
        z = mean + noise @ self._q_chol.T
        return z, self._gaussian_log_density(z, mean)

    def sample_prior(
        self, n: int, k: int, *, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        latent = self.W.shape[1]
        z = torch.randn((k, n, latent), generator=generator, dtype=torch.float64)
        return z, -0.5 * z.pow(2).sum(-1) - 0.5 * latent * math.log(2 * math.pi)


def binarize(images: torch.Tensor) -> torch.Tensor:
    """x = [pixel > 0.5], flattened, float64."""
    return (images.reshape(images.shape[0], -1) > 0.5).to(torch.float64)


def rbm_exact_log_z(W: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """log Σ_{x,h} exp(aᵀx + bᵀh + xᵀWh), summing x out analytically for every h."""
    hs = all_binary(W.shape[1])
    return float(logsumexp(hs @ b + softplus(a + hs @ W.T).sum(1)))


def rbm_free_energy(W: np.ndarray, a: np.ndarray, b: np.ndarray, x: np.ndarray) -> np.ndarray:
    """F(x) = −aᵀx − Σ_j softplus(b_j + (Wᵀx)_j)."""
    return -(x @ a) - softplus(b + x @ W).sum(1)


class TinyRBM:
    """A binary RBM from arrays, offering energy, annealing_path, log_z and log_prob."""

    likelihood_space = "binary"

    def __init__(self, W: np.ndarray, a: np.ndarray, b: np.ndarray, image_shape) -> None:
        self.W, self.a, self.b = W, a, b
        self.image_shape = tuple(image_shape)
        assert math.prod(self.image_shape) == W.shape[0]
        self.device = torch.device("cpu")
        self.config: dict = {}
        self._log_z = rbm_exact_log_z(W, a, b)

    @classmethod
    def random(cls, n_visible: int, n_hidden: int, seed: int, scale: float = 1.0) -> TinyRBM:
        rng = np.random.default_rng(seed)
        return cls(
            scale * rng.normal(size=(n_visible, n_hidden)),
            rng.normal(size=n_visible) - 0.5,
            0.5 * rng.normal(size=n_hidden),
            (1, 1, n_visible),
        )

    def energy(self, images: torch.Tensor) -> torch.Tensor:
        x = binarize(images).numpy()
        return torch.from_numpy(rbm_free_energy(self.W, self.a, self.b, x))

    def annealing_path(self, images: torch.Tensor) -> BernoulliRBMPath:
        t = torch.from_numpy
        return BernoulliRBMPath.from_data(t(self.W), t(self.a), t(self.b), binarize(images))

    def log_z(self) -> float:
        return self._log_z

    def log_prob(self, images: torch.Tensor) -> torch.Tensor:
        return -self.energy(images) - self._log_z

    def sample_images(self, n: int, seed: int) -> torch.Tensor:
        """Exact samples: x from its enumerated marginal (small D only)."""
        xs = all_binary(self.W.shape[0])
        logp = -rbm_free_energy(self.W, self.a, self.b, xs) - self._log_z
        rng = np.random.default_rng(seed)
        idx = rng.choice(len(xs), size=n, p=np.exp(logp) / np.exp(logp).sum())
        return torch.from_numpy(xs[idx]).reshape(n, *self.image_shape)


def grbm_exact_log_z(W, mu, b, sigma) -> float:
    """log Σ_h ∫ exp(−E(v, h)) dv = log Σ_h exp(bᵀh + Σ_i (2μ_i m_i + m_i²)/(2σ_i²))
    + (D/2) log 2π + Σ log σ_i, m = Wh."""
    hs = all_binary(W.shape[1])
    m = hs @ W.T
    gauss = ((2 * mu * m + m**2) / (2 * sigma**2)).sum(1)
    const = 0.5 * W.shape[0] * math.log(2 * math.pi) + np.log(sigma).sum()
    return float(logsumexp(hs @ b + gauss) + const)


def grbm_free_energy(W, mu, b, sigma, v: np.ndarray) -> np.ndarray:
    """F(v) = ½‖(v − μ)/σ‖² − Σ_j softplus(b_j + (Wᵀ(v/σ²))_j)."""
    return 0.5 * (((v - mu) / sigma) ** 2).sum(1) - softplus(b + (v / sigma**2) @ W).sum(1)


class TinyGRBM:
    """A Gaussian–Bernoulli RBM from arrays (fixed σ), with energy and annealing_path."""

    likelihood_space = "density"

    def __init__(self, W, mu, b, sigma, image_shape) -> None:
        self.W, self.mu, self.b, self.sigma = W, mu, b, sigma
        self.image_shape = tuple(image_shape)
        self.device = torch.device("cpu")
        self.config: dict = {}
        self._log_z = grbm_exact_log_z(W, mu, b, sigma)

    @classmethod
    def random(cls, n_visible: int, n_hidden: int, seed: int, sigma: float = 0.3) -> TinyGRBM:
        rng = np.random.default_rng(seed)
        return cls(
            0.3 * rng.normal(size=(n_visible, n_hidden)),
            rng.uniform(0.2, 0.8, size=n_visible),
            0.5 * rng.normal(size=n_hidden),
            np.full(n_visible, sigma),
            (1, 1, n_visible),
        )

    def energy(self, images: torch.Tensor) -> torch.Tensor:
        v = images.reshape(images.shape[0], -1).to(torch.float64).numpy()
        return torch.from_numpy(grbm_free_energy(self.W, self.mu, self.b, self.sigma, v))

    def annealing_path(self, images: torch.Tensor) -> GaussianRBMPath:
        t = torch.from_numpy
        v = images.reshape(images.shape[0], -1).to(torch.float64)
        return GaussianRBMPath.from_data(t(self.W), t(self.mu), t(self.b), t(self.sigma), v)

    def log_z(self) -> float:
        return self._log_z


class GaussianEnergyModel:
    """E(x) = ½(x − c)ᵀA(x − c) on ℝ^D, or restricted to [0, 1]^D with a diagonal A (``box``).

    log Z = (D/2) log 2π − ½ log det A, or Σ_i log(√(2π/a_i)(Φ((1 − c_i)√a_i) − Φ(−c_i√a_i)))
    on the box.
    """

    likelihood_space = "density"

    def __init__(self, precision: np.ndarray, centre: np.ndarray, *, box: bool) -> None:
        self.A, self.c, self.box = precision, centre, box
        d = len(centre)
        self.image_shape = (1, 1, d)
        self.device = torch.device("cpu")
        self.config: dict = {}
        self._a, self._c = torch.from_numpy(precision), torch.from_numpy(centre)
        if box:
            diag = np.diag(precision)
            assert np.allclose(precision, np.diag(diag))
            mass = ndtr((1 - centre) * np.sqrt(diag)) - ndtr(-centre * np.sqrt(diag))
            self.exact_log_z = float(np.sum(0.5 * np.log(2 * np.pi / diag) + np.log(mass)))
        else:
            logdet = np.linalg.slogdet(precision)[1]
            self.exact_log_z = float(0.5 * d * math.log(2 * math.pi) - 0.5 * logdet)

    def _energy(self, x: torch.Tensor) -> torch.Tensor:
        r = x.reshape(x.shape[0], -1) - self._c
        return 0.5 * ((r @ self._a) * r).sum(-1)

    def energy(self, images: torch.Tensor) -> torch.Tensor:
        return self._energy(images.to(torch.float64))

    def annealing_path(self, images: torch.Tensor) -> EnergyPath:
        data = images.reshape(images.shape[0], -1).to(torch.float64)
        if self.box:
            return EnergyPath(self._energy, TruncatedGaussianBase.fitted(data))
        return EnergyPath(self._energy, DiagonalGaussianBase.fitted(data))
