"""Diffusion and score-based families: ``ddpm`` (with its DDPM/DDIM samplers) and ``ncsn``.
The UNet, the Gaussian diffusion and its bound, the schedules, score matching, the noise
levels and the score samplers they build on are shared modules of
:mod:`geneval_plugins.models`.

Each family's entry point (:mod:`~geneval_plugins.models.diffusion.ddpm`,
:mod:`~geneval_plugins.models.diffusion.ncsn`) imports no torch: it declares the family, and its
hooks import the torch implementation (:mod:`~geneval_plugins.models.diffusion.ddpm_model`,
:mod:`~geneval_plugins.models.diffusion.ncsn_model`) when a network is built, trained or loaded.
The option choices they declare come from torch-free modules:
:mod:`~geneval_plugins.models.diffusion_schedules`,
:mod:`~geneval_plugins.models.elbo_options` and
:mod:`~geneval_plugins.models.sampler_names`."""
