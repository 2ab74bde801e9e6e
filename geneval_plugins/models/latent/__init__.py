"""Latent-variable model families (variational autoencoders): p(x) = ∫ p(x | z) p(z) dz with an
encoder q(z | x). Its families train in the core loop (:mod:`geneval.training`) and sample
through :mod:`geneval.sampling` like the others.

``vae`` registers without torch; its hooks import the loaded model and the training objective
(``vae_model``), the networks (``networks``) and the decoders (``decoders``) when it trains or
loads."""
