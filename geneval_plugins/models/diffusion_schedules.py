"""The names of the diffusion noise schedules and DDIM timestep sub-sequences, without torch.

Declared once, here (a module the model families share), so that the ``ddpm`` family
(:mod:`~geneval_plugins.models.diffusion.ddpm`) offers them as option choices at registration
without importing torch; the torch code that
builds them, :func:`~geneval_plugins.models.gaussian_diffusion.make_betas` and
:class:`~geneval_plugins.models.diffusion.ddpm_samplers.DDIMSampler`, imports them from here.

References
----------
.. [1] J. Ho, A. Jain, P. Abbeel, "Denoising Diffusion Probabilistic Models", NeurIPS 2020.
.. [2] A. Nichol, P. Dhariwal, "Improved Denoising Diffusion Probabilistic Models", ICML 2021.
.. [3] J. Song, C. Meng, S. Ermon, "Denoising Diffusion Implicit Models", ICLR 2021.
"""

from __future__ import annotations

#: Noise schedules accepted by ``make_betas`` (the first is the default): the linear β
#: schedule of Ho et al. (2020, §4) and the cosine ᾱ schedule of Nichol & Dhariwal (2021, eq. 17).
SCHEDULES = ("linear", "cosine")

#: DDIM timestep sub-sequences (Song et al. 2021, App. D.2).
SKIPS = ("uniform", "quadratic")
