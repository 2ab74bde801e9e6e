"""The options of the DDPM's variational bound, declared once.

:class:`~geneval_plugins.models.diffusion.ddpm_model.DDPMModel` declares them as its
``elbo_options`` (docs/contracts.md §2: the options a capability method takes are declared in
an attribute named after it), and the ``nll`` metric offers the same declarations as its
``--opt nll.KEY=VALUE`` options, passing each on to a model's ``elbo`` when that model's
``elbo_options`` declares it. No torch here: the metric imports it at plugin load, and the
``ddpm`` family (:mod:`~geneval_plugins.models.diffusion.ddpm`) registers without torch.
"""

from __future__ import annotations

from geneval.plugin import Option

#: Reverse-process variances σ_t² = β_t or β̃_t (Ho et al. 2020, §3.2), of the ancestral
#: sampler and of the bound.
VARIANCES = ("fixedlarge", "fixedsmall")

#: The keyword options ``DDPMModel.elbo`` takes besides ``generator``.
ELBO_OPTIONS: dict[str, Option] = {
    "timesteps": Option(
        100,
        "KL terms per image: strata of an unbiased Monte-Carlo estimate; 0 = all T−1",
        low=0,
    ),
    "variance": Option(
        "fixedsmall",
        "σ_t² of p_θ in the bound: fixedsmall (β̃_t) or fixedlarge (β_t)",
        choices=VARIANCES,
    ),
    "bins": Option(256, "levels of the discretised decoder (256 for 8-bit images)", low=2),
}
