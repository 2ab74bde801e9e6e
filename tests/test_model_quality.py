"""Quality of every bundled checkpoint, judged by a classifier independent of geneval.

The judge is an RBF support-vector classifier on raw pixels, trained on ``digits:train`` with
libsvm's probability estimates (Platt scaling of the one-vs-one classifiers, pairwise coupling;
Wu, Lin & Weng 2004); it shares nothing with ``digits-cnn``, the network whose features the FID
uses; it finds 92 % of the held-out ``digits:test`` images confident. 500 samples (seed 1) of
each bundled model, quantised to 8 bits as the runner does, count as *confident* when the
judge's top-class probability is at least 0.8, and a class is *present* when it holds at least
3 % of them. The FID (``digits-cnn``) against ``digits:train`` of 270 samples (seed 1) must stay
within 3× the held-out floor, the FID of the 270 ``digits:test`` images.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.svm import SVC

from geneval.plugins import get_registry
from geneval.sources import quantize_to_uint8_levels
from geneval_plugins.datasets.digits import DigitsDataset
from geneval_plugins.extractors.digits_cnn import DigitsCNNExtractor
from geneval_plugins.metrics.sample_quality.fid import frechet_distance

CPU = torch.device("cpu")
CONFIDENT = 0.8
PRESENT = 0.03
#: Per family: the least share of confident samples, how many classes must be present, and the
#: largest FID at n = 270 as a multiple of the held-out floor. ``rbm`` may not fall below what
#: its previous checkpoint reached with this judge (55.8 %). The floor multiple is 3 (the
#: target) except for the RBMs: with at most 24 hidden units (kept for exact log Z) their
#: visible means are far smoother than the data (measured 7.3× and 17.5×), so for them the
#: bound only guards against a regression. The held-out digits binarised at 0.5, the data the
#: binary RBM models, are themselves at 6.5× the floor, and the GRBM's reconstructions of them at
#: 11.6× (scripts/README.md). The ``vae``'s decoder means are blurred too (46 %
#: confident, 7.7×); its bounds guard against a regression.
ACCEPTANCE = {
    "ebm": (0.60, 10, 3.0),
    "grbm": (0.55, 10, 20.0),
    "rbm": (0.558, 10, 8.5),
    "ddpm": (0.85, 10, 3.0),
    "ncsn": (0.80, 10, 3.0),
    "vae": (0.40, 10, 9.0),
}


@pytest.fixture(scope="module")
def judge() -> SVC:
    train = DigitsDataset().load("train")
    classifier = SVC(kernel="rbf", probability=True, random_state=0)
    with warnings.catch_warnings():
        # scikit-learn 1.9 deprecates probability=True in favour of CalibratedClassifierCV,
        # whose one-vs-rest calibration is far more confident on model samples (it finds 82 %
        # of the previous rbm's samples confident, libsvm's estimates 56 %)
        warnings.simplefilter("ignore", FutureWarning)
        return classifier.fit(train.images.flatten(1).numpy(), train.labels.numpy())


def verdict(judge: SVC, images: torch.Tensor) -> tuple[float, np.ndarray]:
    """Share of confident images, and the share of images in each class."""
    pixels = quantize_to_uint8_levels(images).flatten(1).numpy()
    probs = judge.predict_proba(pixels)
    shares = np.bincount(probs.argmax(1), minlength=10) / len(probs)
    return float((probs.max(1) >= CONFIDENT).mean()), shares


@pytest.fixture(scope="module")
def moments():
    extractor = DigitsCNNExtractor().load(device=CPU)  # not the registry: module scope

    def of(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            f = extractor(quantize_to_uint8_levels(images))["features"].double()
        return f.mean(0), torch.cov(f.T)

    return of


def test_the_judge_recognises_held_out_digits(judge):
    confident, shares = verdict(judge, DigitsDataset().load("test").images)
    assert confident >= 0.9 and (shares >= PRESENT).all(), (confident, shares)
    noise = torch.rand(500, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert verdict(judge, noise)[0] < 0.2


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ACCEPTANCE))
def test_bundled_samples_are_recognised_and_near_the_held_out_fid(name, judge, moments):
    model = get_registry().model(name).load(None, device=CPU)
    samples = model.sample(500, batch_size=500, generator=torch.Generator().manual_seed(1))
    confident, shares = verdict(judge, samples)
    least, classes, ratio = ACCEPTANCE[name]
    assert confident >= least, (confident, shares)
    assert (shares >= PRESENT).sum() >= classes, shares

    digits = DigitsDataset()
    train = moments(digits.load("train").images)
    floor = frechet_distance(*moments(digits.load("test").images), *train)
    n = len(digits.load("test").images)
    few = model.sample(n, batch_size=500, generator=torch.Generator().manual_seed(1))
    fid = frechet_distance(*moments(few), *train)
    assert fid <= ratio * floor, (fid, floor)


def test_binarised_held_out_digits_are_beyond_three_times_the_floor(moments):
    """Why the binary RBM's FID bound is a regression guard and not 3×: the data it models,
    the held-out digits binarised at 0.5, already lie at 6.5× the held-out floor."""
    digits = DigitsDataset()
    train = moments(digits.load("train").images)
    test = digits.load("test").images
    floor = frechet_distance(*moments(test), *train)
    binarised = frechet_distance(*moments((test > 0.5).float()), *train)
    assert 6.0 * floor < binarised < ACCEPTANCE["rbm"][2] * floor, (binarised, floor)
