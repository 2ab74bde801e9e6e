"""Energy-based families: the deep ``ebm`` and the restricted Boltzmann machines ``rbm`` and
``grbm``, with the block Gibbs, Langevin and replay-buffer MCMC kernels they sample with."""
