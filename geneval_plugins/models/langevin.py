"""The Langevin update shared by the score-based and energy-based families.

x ← x + α·s(x) + c·√(2α)·z,  z ~ N(0, I),

where s(x) = ∇ₓ log p(x) is the score (for an energy model s = −∇ₓE(x)), α the step size and c
an optional noise scale (c = 1 is the exact discretised Langevin diffusion; c < 1 is the
practical "separate noise scale" knob of deep EBM training, Du & Mordatch 2019).
References: Welling & Teh (2011); Song & Ermon (2019), Algorithm 1.
"""

from __future__ import annotations

import torch


def langevin_step(
    x: torch.Tensor,
    score: torch.Tensor,
    step_size: float | torch.Tensor,
    generator: torch.Generator,
    noise_scale: float = 1.0,
) -> torch.Tensor:
    """One Langevin update ``x + α·score + noise_scale·√(2α)·z``, ``z`` from ``generator``.

    ``step_size`` may be a scalar or a tensor broadcastable to ``x`` (one α per sample).
    """
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    alpha = torch.as_tensor(step_size, dtype=x.dtype, device=x.device)
    return x + alpha * score + noise_scale * torch.sqrt(2 * alpha) * noise
