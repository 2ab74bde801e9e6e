"""The bundled model families, grouped by kind.

* :mod:`~geneval_plugins.models.diffusion` — ``ddpm`` and ``ncsn``: the UNet, noise schedules,
  their samplers and score matching;
* :mod:`~geneval_plugins.models.energy` — ``ebm``, ``rbm`` and ``grbm``: the networks and the
  Gibbs, Langevin and replay-buffer MCMC kernels;
* :mod:`~geneval_plugins.models.latent` — latent-variable families.

Shared by every family: :mod:`~geneval_plugins.models.sampling` (the sampler shape, its driver
and the loaded models' ``sample``) and :mod:`~geneval_plugins.models.langevin` (the Langevin
update). Training and checkpoints are the core's (:mod:`geneval.training`,
:mod:`geneval.checkpoint`).
"""
