"""The sampler names of every bundled model family, in one table, without torch.

A family registers with these names (``geneval plugins`` lists them, ``--sampler`` is checked
against them) before any network is imported; the module that builds the samplers keys its
factories by the same names, and a test checks that the two agree. The first name of each
entry is the family's default.
"""

from __future__ import annotations

#: family name → its samplers' names, the default first.
SAMPLER_NAMES: dict[str, tuple[str, ...]] = {
    # Song et al. 2021 (DDIM); Ho et al. 2020 ancestral steps with σ_t² = β_t or β̃_t.
    "ddpm": ("ddim", "ancestral", "ancestral-fixedsmall"),
    # Song & Ermon 2019/2020 annealed Langevin; Song et al. 2021 predictor–corrector.
    "ncsn": ("annealed-langevin", "pc"),
    # Langevin from noise, the replay buffer of Du & Mordatch 2019, and annealed Langevin
    # over the noise levels of a noise-conditional energy.
    "ebm": ("langevin", "replay", "annealed-langevin"),
    # Block Gibbs; ``gibbs`` returns E[v | h] of the last step, ``gibbs-state`` the sampled v.
    "rbm": ("gibbs", "gibbs-state"),
    "grbm": ("gibbs", "gibbs-state"),
    # The decoder's mean, or a draw from the decoder's distribution.
    "vae": ("decoder-mean", "decoder-sample"),
    # A diffusers pipeline's own scheduler, or another diffusers scheduler built from its
    # config (geneval_plugins/models/diffusers_pipelines/schedulers.py).
    "diffusers": (
        "pipeline",
        "ddpm",
        "ddim",
        "pndm",
        "dpm-solver++",
        "unipc",
        "deis",
        "euler",
        "euler-ancestral",
        "heun",
        "lms",
    ),
}
