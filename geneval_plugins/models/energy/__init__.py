"""Energy-based families: the deep ``ebm`` and the restricted Boltzmann machines ``rbm`` and
``grbm``, with the block Gibbs, Langevin and replay-buffer MCMC kernels they sample with and the
annealing paths (:mod:`~geneval_plugins.models.energy.annealing`) that give their log Z to AIS."""
