"""Diffusion and score-based families: ``ddpm`` and ``ncsn``, with the conditional UNet, the
Gaussian diffusion and its schedules, the DDPM/DDIM and annealed-Langevin/predictor–corrector
samplers, and denoising score matching."""
