"""Diffusion and score-based families: ``ddpm`` (with its Gaussian diffusion, schedules and
DDPM/DDIM samplers) and ``ncsn``. The UNet, score matching, the noise levels and the score
samplers they build on are shared modules of :mod:`geneval_plugins.models`."""
