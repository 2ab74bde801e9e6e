"""The bundled model families, grouped by kind.

* :mod:`~geneval_plugins.models.diffusion` — ``ddpm`` and ``ncsn``: the Gaussian diffusion and
  its samplers, the noise-conditional score model;
* :mod:`~geneval_plugins.models.energy` — ``ebm``, ``rbm`` and ``grbm``: the networks, the
  Gibbs, Langevin and replay-buffer MCMC kernels and the AIS annealing paths;
* :mod:`~geneval_plugins.models.latent` — latent-variable families;
* :mod:`~geneval_plugins.models.diffusers_pipelines` — ``diffusers``: Hugging Face diffusers
  pipelines (the ``geneval[diffusers]`` extra).

A family's modules import no other family's modules: what two families share is the SDK's
sampler shape (:mod:`geneval.plugin`: the shape, its driver and the loaded models' ``sample``)
or a module of this package: :mod:`~geneval_plugins.models.langevin` (the Langevin update),
:mod:`~geneval_plugins.models.unet` (the conditional UNet and its sinusoidal embedding),
:mod:`~geneval_plugins.models.score_matching` (denoising score matching and the noise
condition c(σ)), :mod:`~geneval_plugins.models.noise_levels` (choosing σ_1 … σ_L and the
Langevin step), :mod:`~geneval_plugins.models.score_samplers` (annealed Langevin and
predictor–corrector samplers of any score), :mod:`~geneval_plugins.models.gaussian_diffusion`
(the Gaussian diffusion and its variational bound, which the ``ddpm`` and ``diffusers``
families share), :mod:`~geneval_plugins.models.elbo_options` and
:mod:`~geneval_plugins.models.diffusion_schedules` (their torch-free option declarations).
Training and checkpoints are the SDK's too (:mod:`geneval.plugin`).
"""
