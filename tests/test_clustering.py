"""``clustering`` equals scikit-learn's scores of the same k-means assignments."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import metrics
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits

from geneval.api import Need
from geneval.errors import InputError
from geneval.plugins import get_registry
from geneval_plugins.metrics.representation.clustering import Clustering
from tests.stub_inputs import StubInputs, compute


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    bunch = load_digits()
    return bunch.data[:600] / 16.0, bunch.target[:600]


def _expected(points: np.ndarray, labels: np.ndarray, k: int, seeds: range) -> dict:
    runs = []
    for seed in seeds:
        clusters = KMeans(n_clusters=k, n_init=1, random_state=seed).fit_predict(points)
        runs.append(
            {
                "v_measure": metrics.v_measure_score(labels, clusters),
                "homogeneity": metrics.homogeneity_score(labels, clusters),
                "completeness": metrics.completeness_score(labels, clusters),
                "ari": metrics.adjusted_rand_score(labels, clusters),
                "nmi": metrics.normalized_mutual_info_score(labels, clusters),
            }
        )
    return {name: np.array([r[name] for r in runs]) for name in runs[0]}


def test_scores_equal_scikit_learn_on_the_same_assignments(digits) -> None:
    points, labels = digits
    inputs = StubInputs(
        {
            ("latents", "samples"): torch.from_numpy(points),
            ("labels", "samples"): torch.from_numpy(labels),
        },
        seed=3,
    )
    result = compute(Clustering(), inputs, seeds=4)
    expected = _expected(points, labels, 10, range(3, 7))
    assert result["value"] == pytest.approx(expected["v_measure"].mean(), rel=1e-12)
    assert result["v_measure_std"] == pytest.approx(expected["v_measure"].std(), rel=1e-9)
    for name in ("homogeneity", "completeness", "ari", "nmi"):
        assert result[name] == pytest.approx(expected[name].mean(), rel=1e-12)
        assert result[f"{name}_std"] == pytest.approx(expected[name].std(), rel=1e-9, abs=1e-15)
    assert (result["clusters"], result["k"], result["seeds"], result["n"], result["on"]) == (
        10,
        0,
        4,
        600,
        "latents",
    )
    assert 0.5 < result["value"] < 1.0  # digits cluster well by class


def test_features_and_explicit_k(digits) -> None:
    points, labels = digits
    metric = Clustering()
    assert metric.needs_for({"on": "features"}) == (
        Need("features", "samples"),
        Need("labels", "samples"),
    )
    inputs = StubInputs(
        {
            ("features", "samples"): torch.from_numpy(points).float(),
            ("labels", "samples"): torch.from_numpy(labels),
        }
    )
    result = compute(metric, inputs, on="features", k=5, seeds=2)
    expected = _expected(points.astype(np.float32).astype(np.float64), labels, 5, range(2))
    assert result["clusters"] == result["k"] == 5 and result["on"] == "features"
    assert result["value"] == pytest.approx(expected["v_measure"].mean(), rel=1e-9)


def test_bad_input(digits) -> None:
    points, labels = digits
    latents = torch.from_numpy(points)
    with pytest.raises(InputError, match="one label per point"):
        compute(
            Clustering(),
            StubInputs(
                {
                    ("latents", "samples"): latents,
                    ("labels", "samples"): torch.from_numpy(labels[:10]),
                }
            ),
        )
    with pytest.raises(InputError, match="single class"):
        compute(
            Clustering(),
            StubInputs(
                {
                    ("latents", "samples"): latents,
                    ("labels", "samples"): torch.zeros(600, dtype=torch.long),
                }
            ),
        )
    with pytest.raises(InputError, match="clustering needs labels"):
        compute(Clustering(), StubInputs({("latents", "samples"): latents}))
    with pytest.raises(InputError, match="clustering.seeds"):
        compute(Clustering(), StubInputs(), seeds=0)
    with pytest.raises(InputError, match="clustering.on"):
        compute(Clustering(), StubInputs(), on="images")


def test_registered() -> None:
    metric = get_registry().metric("clustering")
    assert metric.uncertainty == "v_measure_std" and metric.higher_is_better
