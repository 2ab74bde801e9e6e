"""Energy-based families: the deep ``ebm`` and the restricted Boltzmann machines ``rbm`` and
``grbm``, with the block Gibbs, Langevin and replay-buffer MCMC kernels they sample with and the
annealing paths (:mod:`~geneval_plugins.models.energy.annealing`) that give their log Z to AIS.

Each family registers from a module that imports no torch (``ebm``, ``rbm``, ``grbm``, with the
RBMs' shared base ``bipartite``); its hooks import the networks, loaded models and training
objectives from the siblings (``ebm_network`` and ``ebm_model``, ``rbm_network``,
``grbm_network``, ``bipartite_network``) when the family trains or loads."""
