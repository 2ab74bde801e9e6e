"""Metric ``sfid``: the spatial FID of Nash et al. (2021), as the ADM evaluator computes it.

sFID is the Fréchet distance (:func:`~geneval_plugins.metrics.sample_quality.fid.frechet_distance`)
between Gaussian fits of the ``spatial`` output of the ``inception-v3-fid`` extractor: the first
7 channels of the TF graph's ``mixed_6/conv:0`` (``Mixed_6d.branch1x1``), 7 × 17 × 17 = 2023
features per image, flattened in TF's (H, W, C) order, from the same forward pass as ``pool``
(see :func:`geneval_plugins.extractors.inception.network.spatial_features`). Being computed
before the last spatial pooling, they are sensitive to spatial structure that pool3 averages
out.

``d² = ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁Σ₂)^½`` with the unbiased covariance (``numpy.cov``),
as ``FIDStatistics.frechet_distance`` of ``guided-diffusion/evaluations/evaluator.py`` on the
statistics its ``read_statistics`` gives (``mu_s``/``sigma_s`` of a reference batch, or the
moments of the spatial activations). An ADM batch (``.npz`` with ``mu_s``, ``sigma_s``) serves
the moments without images.

References
----------
.. [1] C. Nash, J. Menick, S. Dieleman, P. Battaglia, "Generating Images with Sparse
   Representations", ICML 2021 (sFID).
.. [2] P. Dhariwal, A. Nichol, "Diffusion Models Beat GANs on Image Synthesis", NeurIPS 2021,
   and its evaluation suite ``openai/guided-diffusion/evaluations`` (MIT).
"""

from __future__ import annotations

from geneval.plugin import Need, hookimpl
from geneval_plugins.metrics.sample_quality.fid import FrechetInceptionDistance

#: The extractor and output sFID is defined on.
EXTRACTOR = "inception-v3-fid"
OUTPUT = "spatial"


class SpatialFID(FrechetInceptionDistance):
    """The ``sfid`` metric: the ``fid`` computation on the moments of the ``spatial`` output.

    ``sFID = ‖μ_s − μ_r‖² + tr Σ_s + tr Σ_r − 2 tr (Σ_s Σ_r)^½`` over the 2023-d spatial
    features (Nash et al. 2021, as ADM's evaluator), float64.
    """

    name = "sfid"
    interpretation = (
        "Fréchet distance between Gaussian fits of Inception mixed_6/conv spatial features "
        "(ADM's sFID); 0 for identical statistics, sensitive to spatial structure"
    )
    needs = (
        Need("stats", "samples", extractor=EXTRACTOR, extractor_required=True, output=OUTPUT),
        Need("stats", "reference", extractor=EXTRACTOR, extractor_required=True, output=OUTPUT),
    )
    feature_space = EXTRACTOR
    #: Below the spatial feature dimension (2023) the covariance is singular.
    min_samples = 2023
    output = OUTPUT


@hookimpl
def geneval_register_metrics(register) -> None:
    """Register ``sfid``."""
    register(SpatialFID())
