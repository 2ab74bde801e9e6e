"""Disentanglement metrics of latent representations against ground-truth factors.

One module per metric, following the definitions, default sizes and estimators of
disentanglement_lib (Locatello et al. 2019): ``beta_vae``, ``factor_vae``, ``mig``, ``sap``,
``dci``, ``modularity`` and ``explicitness``. :mod:`.codes` reads and splits latents and
factors and holds the discretised mutual information; :mod:`.interventions` draws the
fixed-factor batches that ``beta_vae`` and ``factor_vae`` encode.

References
----------
.. [1] F. Locatello et al., "Challenging Common Assumptions in the Unsupervised Learning of
   Disentangled Representations", ICML 2019 (disentanglement_lib).
"""
