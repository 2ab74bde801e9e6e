"""Disentanglement metrics against disentanglement_lib's formulas and sanity on known latents.

Representations of ground-truth factors: the factors themselves, a rotation that mixes every
factor into every latent, and independent noise. Expected numbers of the hand-checked
examples are computed in the tests from the published formulas, by explicit loops.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import MultiLabelBinarizer
from sklearn.svm import LinearSVC

from geneval.api import FactorDataset
from geneval.capabilities import SupportsEncode
from geneval.errors import InputError
from geneval.plugins import get_registry
from geneval_plugins.datasets.dsprites import DSpritesDataset
from geneval_plugins.metrics.representation.disentanglement import (
    beta_vae,
    codes,
    dci,
    explicitness,
    factor_vae,
    mig,
    modularity,
    sap,
)
from tests.stub_inputs import StubInputs, compute

SIZES = (3, 6, 10, 20, 8)  # every factor ≤ 20 values
N = 2000


def _factors(sizes: tuple[int, ...], n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, s, n) for s in sizes], axis=1)


def _mixing_rotation(k: int) -> np.ndarray:
    """The real discrete Fourier basis (k × k, orthogonal): every latent mixes many factors."""
    j = np.arange(k)
    basis = [np.ones(k) / math.sqrt(k)]
    for m in range(1, (k + 1) // 2):
        basis.append(np.cos(2 * math.pi * m * j / k) * math.sqrt(2 / k))
        basis.append(np.sin(2 * math.pi * m * j / k) * math.sqrt(2 / k))
    if k % 2 == 0:
        basis.append(np.cos(math.pi * j) / math.sqrt(k))
    return np.stack(basis, axis=1)


def _standardised(f: np.ndarray) -> np.ndarray:
    return (f - f.mean(axis=0)) / f.std(axis=0)


def _representations(sizes: tuple[int, ...], n: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    f = _factors(sizes, n)
    rotation = _mixing_rotation(len(sizes))
    assert np.allclose(rotation.T @ rotation, np.eye(len(sizes)))
    noise = np.random.default_rng(1).standard_normal((n, len(sizes)))
    return f, {
        "truth": f.astype(np.float64),
        "rotated": _standardised(f.astype(np.float64)) @ rotation,
        "noise": noise,
    }


def _inputs(latents: np.ndarray, factors: np.ndarray, seed: int = 0) -> StubInputs:
    return StubInputs(
        {
            ("latents", "samples"): torch.from_numpy(latents),
            ("factors", "samples"): torch.from_numpy(factors),
        },
        seed=seed,
    )


@pytest.fixture(scope="module")
def representations() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    return _representations(SIZES, N)


def _scores(metric, representations, names=("truth", "rotated", "noise")) -> dict[str, dict]:
    factors, reps = representations
    return {name: compute(metric, _inputs(reps[name], factors)) for name in names}


# --- sanity on ground truth, rotation and noise (about 2000 points) -------------------------


def test_mig_sanity(representations) -> None:
    s = _scores(mig.MutualInformationGap(), representations)
    assert s["truth"]["value"] >= 0.95
    assert s["rotated"]["value"] < s["truth"]["value"] - 0.5
    assert s["noise"]["value"] < 0.05
    assert s["truth"]["num_train"] == N and s["truth"]["num_factors"] == len(SIZES)


def test_modularity_sanity_and_noise_against_reference_formula(representations) -> None:
    s = _scores(modularity.Modularity(), representations)
    assert s["truth"]["value"] >= 0.95
    # Noise is not near 0 under the reference formula: check it against an independent
    # computation of that formula (histogram discretisation, plug-in MI, 1 − δ per latent).
    factors, reps = representations
    mi = _plug_in_mi_matrix(_digitize_reference(reps["noise"], 20), factors)
    expected = np.mean([_modularity_reference(row) for row in mi])
    assert s["noise"]["value"] == pytest.approx(expected, rel=1e-12)
    assert 0.5 < s["noise"]["value"] < 0.95


def test_sap_sanity(representations) -> None:
    s = _scores(sap.SeparatedAttributePredictability(), representations)
    # One-dimensional classifiers bound SAP of the ground truth well below 1 ...
    assert 0.2 < s["truth"]["value"] < 0.7
    # ... but it stays above the rotated and the noise representations.
    assert s["truth"]["value"] > s["rotated"]["value"] + 0.1
    assert s["truth"]["value"] > s["noise"]["value"] + 0.2
    assert s["noise"]["value"] < 0.05
    assert (s["truth"]["num_train"], s["truth"]["num_test"]) == (1334, 666)


def test_explicitness_against_reference_formula(representations) -> None:
    s = _scores(explicitness.Explicitness(), representations, names=("truth", "noise"))
    factors, reps = representations
    for name in ("truth", "noise"):
        expected_test, expected_train = _explicitness_reference(reps[name], factors, seed=0)
        assert s[name]["value"] == pytest.approx(expected_test, rel=1e-9)
        assert s[name]["explicitness_train"] == pytest.approx(expected_train, rel=1e-9)
    assert s["truth"]["value"] > 0.95
    assert s["noise"]["value"] == pytest.approx(0.5, abs=0.03)


def test_dci_sanity_small() -> None:
    factors, reps = _representations((2, 3, 4), 240)
    s = {name: compute(dci.DCI(), _inputs(z, factors)) for name, z in reps.items()}
    assert s["truth"]["value"] >= 0.95 and s["truth"]["completeness"] >= 0.95
    assert s["truth"]["informativeness"] == pytest.approx(1.0)
    assert s["rotated"]["value"] < s["truth"]["value"] - 0.5
    assert s["noise"]["value"] < 0.1


@pytest.mark.slow
def test_dci_sanity(representations) -> None:
    s = _scores(dci.DCI(), representations)
    assert s["truth"]["value"] >= 0.95
    assert s["rotated"]["value"] < s["truth"]["value"] - 0.5
    assert s["noise"]["value"] < 0.05


def test_array_metrics_on_dsprites_factors() -> None:
    """The ground-truth factors of ``dsprites:test`` (shape, scale, orientation/2, x/2, y/2:
    ≤ 20 values each) scored as the representation."""
    data = DSpritesDataset().load("test,n=2000,orientation/2,x/2,y/2")
    factors = data.factors.numpy()
    truth = _inputs(factors.astype(np.float64), factors)
    assert compute(mig.MutualInformationGap(), truth)["value"] >= 0.95
    assert compute(modularity.Modularity(), truth)["value"] >= 0.95
    noise = _inputs(np.random.default_rng(0).standard_normal(factors.shape), factors)
    assert compute(mig.MutualInformationGap(), noise)["value"] < 0.05


@pytest.mark.slow
def test_dci_and_sap_on_dsprites_factors() -> None:
    """DCI and SAP of the ``dsprites:test`` factors as the representation, of a rotation that
    mixes them, and of noise; and MIG of the rotation."""
    data = DSpritesDataset().load("test,n=1500,orientation/4,x/4,y/4")
    factors = data.factors.numpy()
    rotated = _standardised(factors.astype(np.float64)) @ _mixing_rotation(factors.shape[1])
    reps = {
        "truth": factors.astype(np.float64),
        "rotated": rotated,
        "noise": np.random.default_rng(0).standard_normal(factors.shape),
    }
    d = {name: compute(dci.DCI(), _inputs(z, factors)) for name, z in reps.items()}
    assert d["truth"]["value"] >= 0.95
    assert d["rotated"]["value"] < d["truth"]["value"] - 0.5
    assert d["noise"]["value"] < 0.1
    s = {
        name: compute(sap.SeparatedAttributePredictability(), _inputs(z, factors))
        for name, z in reps.items()
    }
    assert s["truth"]["value"] > s["rotated"]["value"] + 0.1
    assert s["truth"]["value"] > s["noise"]["value"] + 0.2 and s["noise"]["value"] < 0.05
    m = {name: compute(mig.MutualInformationGap(), _inputs(z, factors)) for name, z in reps.items()}
    assert m["rotated"]["value"] < m["truth"]["value"] - 0.5


# --- hand-checked examples of the published formulas ----------------------------------------


def _plug_in_mi(a: np.ndarray, b: np.ndarray) -> float:
    """I(a; b) in nats from the empirical joint distribution, by explicit sums."""
    n = len(a)
    total = 0.0
    for x in np.unique(a):
        for y in np.unique(b):
            joint = np.sum((a == x) & (b == y)) / n
            if joint > 0:
                total += joint * math.log(joint / (np.mean(a == x) * np.mean(b == y)))
    return total


def _plug_in_mi_matrix(z: np.ndarray, f: np.ndarray) -> np.ndarray:
    return np.array(
        [[_plug_in_mi(z[:, i], f[:, j]) for j in range(f.shape[1])] for i in range(z.shape[1])]
    )


def _digitize_reference(z: np.ndarray, bins: int) -> np.ndarray:
    out = np.zeros_like(z, dtype=np.int64)
    for i in range(z.shape[1]):
        out[:, i] = np.digitize(z[:, i], np.histogram(z[:, i], bins)[1][:-1])
    return out


def _modularity_reference(mi_row: np.ndarray) -> float:
    squared = mi_row**2
    top = squared.max()
    if top == 0:
        return 0.0
    return 1.0 - (squared.sum() - top) / (top * (len(mi_row) - 1))


def test_histogram_discretisation_by_hand() -> None:
    z = np.array([[0.0], [0.4], [0.5], [1.0]])
    # Two bins of width 0.5: edges 0, 0.5, 1; the maximum falls into the last bin.
    assert codes.histogram_discretize(z, 2)[:, 0].tolist() == [1, 1, 2, 2]


def test_mig_hand_checked() -> None:
    v = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    z0 = v.astype(float)  # carries v exactly
    z1 = np.array([0, 0, 0, 1, 1, 1, 1, 1], dtype=float)  # carries part of v
    # I(z1; v) by hand: p(v,z1) = 3/8 (0,0), 1/8 (0,1), 4/8 (1,1); p(z1) = 3/8, 5/8.
    i1 = 3 / 8 * math.log(2) + 1 / 8 * math.log(2 / 5) + 1 / 2 * math.log(8 / 5)
    expected = (math.log(2) - i1) / math.log(2)
    value, gaps = mig.mutual_information_gap(np.stack([z0, z1], 1), v[:, None], num_bins=2)
    assert value == pytest.approx(expected, rel=1e-12)
    assert gaps.tolist() == pytest.approx([expected])


def test_modularity_hand_checked() -> None:
    mi = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    # code 0 depends on one factor (1), code 1 on both equally (0), code 2 on none (0).
    assert modularity.modularity_per_code(mi).tolist() == [1.0, 0.0, 0.0]
    # K = 3: squared MI (4, 1, 0): δ = 1 / (4 · 2).
    assert modularity.modularity_per_code(np.array([[2.0, 1.0, 0.0]]))[0] == pytest.approx(0.875)


def test_sap_hand_checked() -> None:
    matrix = np.array([[0.9, 0.2], [0.5, 0.7], [0.1, 0.6]])
    value, gaps = sap.sap_from_matrix(matrix)
    assert gaps.tolist() == pytest.approx([0.4, 0.1])
    assert value == pytest.approx(0.25)


def test_sap_score_matrix_is_one_linear_svc_per_pair() -> None:
    factors, reps = _representations((2, 3, 4), 150)
    train = codes.Codes(reps["rotated"][:100], factors[:100])
    test = codes.Codes(reps["rotated"][100:], factors[100:])
    matrix = sap.sap_score_matrix(train, test, seed=0)
    for i in range(3):
        for j in range(3):
            svc = LinearSVC(C=0.01, class_weight="balanced", random_state=0)
            svc.fit(train.latents[:, i : i + 1], train.factors[:, j])
            expected = np.mean(svc.predict(test.latents[:, i : i + 1]) == test.factors[:, j])
            assert matrix[i, j] == expected


def test_dci_hand_checked() -> None:
    eye = np.eye(2)
    assert dci.disentanglement(eye) == pytest.approx(1.0, abs=1e-9)
    assert dci.completeness(eye) == pytest.approx(1.0, abs=1e-9)
    # R = [[2, 1], [0, 1]]: code 0 has P = (2/3, 1/3), code 1 (0, 1); weights ρ = (3/4, 1/4).
    r = np.array([[2.0, 1.0], [0.0, 1.0]])
    h = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))
    assert dci.disentanglement(r) == pytest.approx(0.75 * (1 - h) + 0.25 * 1.0, abs=1e-9)
    # Factor 0 is captured by code 0 alone (1), factor 1 evenly by both (0); ρ = (1/2, 1/2).
    assert dci.completeness(r) == pytest.approx(0.5, abs=1e-9)
    # One code important for every factor: nothing is disentangled, everything complete.
    assert dci.disentanglement(np.array([[1.0, 1.0], [0.0, 0.0]])) == pytest.approx(0.0, abs=1e-9)


def test_dci_importances_are_boosted_trees_per_factor() -> None:
    from sklearn.ensemble import GradientBoostingClassifier

    factors, reps = _representations((2, 3), 120)
    train = codes.Codes(reps["rotated"][:80], factors[:80])
    test = codes.Codes(reps["rotated"][80:], factors[80:])
    importance, train_acc, test_acc = dci.importance_matrix(train, test, seed=0)
    accs = []
    for j in range(2):
        model = GradientBoostingClassifier(random_state=0).fit(train.latents, train.factors[:, j])
        np.testing.assert_array_equal(importance[:, j], np.abs(model.feature_importances_))
        accs.append(np.mean(model.predict(test.latents) == test.factors[:, j]))
    assert test_acc == pytest.approx(np.mean(accs))


def _explicitness_reference(z: np.ndarray, f: np.ndarray, seed: int) -> tuple[float, float]:
    """disentanglement_lib's explicitness on the metric's shuffled 2:1 split."""
    order = np.random.default_rng(seed).permutation(len(z))
    z, f = z[order], f[order]
    n_train = math.ceil(2 * len(z) / 3)
    z_train, z_test, f_train, f_test = z[:n_train], z[n_train:], f[:n_train], f[n_train:]
    mean, std = z_train.mean(axis=0), z_train.std(axis=0)
    x_train, x_test = (z_train - mean) / std, (z_test - mean) / std
    test_aucs, train_aucs = [], []
    for j in range(f.shape[1]):
        clf = LogisticRegression(random_state=seed).fit(x_train, f_train[:, j])
        mlb = MultiLabelBinarizer()
        train_aucs.append(
            roc_auc_score(mlb.fit_transform(f_train[:, j : j + 1]), clf.predict_proba(x_train))
        )
        test_aucs.append(
            roc_auc_score(mlb.fit_transform(f_test[:, j : j + 1]), clf.predict_proba(x_test))
        )
    return float(np.mean(test_aucs)), float(np.mean(train_aucs))


def test_explicitness_hand_checked() -> None:
    labels = np.array([0, 0, 1, 1, 2])
    classes = np.array([0, 1, 2])
    perfect = np.eye(3)[labels]
    assert explicitness.one_vs_rest_auc(labels, classes, perfect) == 1.0
    # Class 0 reversed (AUC 0), classes 1 and 2 perfect: macro average 2/3.
    scores = perfect.copy()
    scores[:, 0] = 1.0 - scores[:, 0]
    assert explicitness.one_vs_rest_auc(labels, classes, scores) == pytest.approx(2 / 3)
    # A class absent from the labels has no AUC and is skipped.
    assert explicitness.one_vs_rest_auc(labels[:4], classes, perfect[:4]) == 1.0


def test_factor_vae_majority_vote_hand_checked() -> None:
    train = np.array([[3, 1, 0], [0, 2, 5]])
    test = np.array([[1, 1, 1], [1, 1, 1]])
    # Latent 0 → factor 0, latents 1 and 2 → factor 1.
    accuracy, train_accuracy = factor_vae.majority_vote_accuracy(train, test)
    assert train_accuracy == pytest.approx(10 / 11)
    assert accuracy == pytest.approx(3 / 6)


# --- beta_vae and factor_vae: fresh pairs from a factor dataset ------------------------------


class GridFactors:
    """A :class:`FactorDataset` whose "image" of a factor vector is the vector itself."""

    name = "grid-factors"
    splits = ("all",)
    default_split = "all"
    default_extractor = "none"
    factor_names = ("a", "b", "c", "d", "e")
    factor_sizes = SIZES

    def load(self, split: str):
        raise NotImplementedError

    def sample_factors(self, n: int, generator: torch.Generator) -> torch.Tensor:
        sizes = torch.tensor(self.factor_sizes, dtype=torch.float64)
        u = torch.rand(n, len(sizes), generator=generator, dtype=torch.float64)
        return (u * sizes).floor().long()

    def images_for_factors(self, factors: torch.Tensor) -> torch.Tensor:
        return factors.double().view(factors.shape[0], 1, 1, -1)


class Encoder:
    """A model whose ``encode`` applies a function to the flattened images."""

    def __init__(self, fn) -> None:
        self.fn = fn

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.fn(images.flatten(1).double())


def _encoders() -> dict[str, Encoder]:
    sizes = torch.tensor(SIZES, dtype=torch.float64)
    mean, std = (sizes - 1) / 2, ((sizes**2 - 1) / 12).sqrt()
    rotation = torch.from_numpy(_mixing_rotation(len(SIZES)))
    noise = torch.Generator().manual_seed(7)
    return {
        "truth": Encoder(lambda x: x),
        "rotated": Encoder(lambda x: ((x - mean) / std) @ rotation),
        "noise": Encoder(lambda x: torch.randn(x.shape, generator=noise, dtype=torch.float64)),
    }


def test_fresh_pair_metrics_sanity() -> None:
    dataset = GridFactors()
    assert isinstance(dataset, FactorDataset)
    for name, encoder in _encoders().items():
        assert isinstance(encoder, SupportsEncode)
        inputs = StubInputs(model=encoder, datasets={"reference": dataset})
        for metric in (beta_vae.BetaVAEMetric(), factor_vae.FactorVAEMetric()):
            result = compute(metric, inputs, num_train=1000, num_eval=500)
            assert result["chance"] == pytest.approx(1 / len(SIZES))
            if name == "truth":
                assert result["value"] >= 0.95, metric.name
            if name == "noise":  # near chance (1/5)
                assert abs(result["value"] - 0.2) < 0.1, metric.name


def test_beta_vae_points_match_a_per_point_loop() -> None:
    """disentanglement_lib draws each point in turn: index, two batches, fix, encode, mean |Δz|."""
    dataset, encoder = GridFactors(), _encoders()["rotated"]
    features, fixed = beta_vae.beta_vae_points(
        dataset, encoder, 6, batch_size=4, generator=torch.Generator().manual_seed(3)
    )
    g = torch.Generator().manual_seed(3)
    index = torch.randint(len(SIZES), (6,), generator=g)
    first = dataset.sample_factors(24, g).view(6, 4, -1)
    second = dataset.sample_factors(24, g).view(6, 4, -1)
    for p in range(6):
        pair = second[p].clone()
        pair[:, index[p]] = first[p][:, index[p]]
        z1 = encoder.encode(dataset.images_for_factors(first[p])).numpy()
        z2 = encoder.encode(dataset.images_for_factors(pair)).numpy()
        np.testing.assert_allclose(features[p], np.mean(np.abs(z1 - z2), axis=0), rtol=1e-12)
    assert fixed.tolist() == index.tolist()
    # The ground truth leaves the fixed factor's coordinate exactly unchanged.
    truth, fixed = beta_vae.beta_vae_points(
        dataset, _encoders()["truth"], 50, batch_size=8, generator=torch.Generator()
    )
    assert np.all(truth[np.arange(50), fixed] == 0.0)


def test_factor_vae_votes_of_the_ground_truth_are_diagonal() -> None:
    dataset = GridFactors()
    scale = np.array([(s**2 - 1) / 12 for s in SIZES])
    counts = factor_vae.votes(
        dataset,
        _encoders()["truth"],
        200,
        scale=scale,
        active=np.ones(len(SIZES), dtype=bool),
        batch_size=16,
        generator=torch.Generator().manual_seed(0),
    )
    assert counts.sum() == 200 and np.all(counts == np.diag(np.diag(counts)))


def test_fresh_pair_metrics_on_dsprites() -> None:
    """Images drawn by dsprites with one factor fixed: a centroid encoder (x, y of the white
    pixels) keeps the fixed position coordinate (almost) constant."""

    def centroid(images: torch.Tensor) -> torch.Tensor:
        w = images[:, 0].double()
        grid = torch.arange(64, dtype=torch.float64) + 0.5
        mass = w.sum(dim=(1, 2))
        return torch.stack(
            [(w.sum(1) * grid).sum(1) / mass, (w.sum(2) * grid).sum(1) / mass], dim=1
        )

    dataset, encoder = DSpritesDataset(), Encoder(lambda x: x)
    encoder.encode = centroid  # type: ignore[method-assign]
    features, fixed = beta_vae.beta_vae_points(
        dataset, encoder, 60, batch_size=8, generator=torch.Generator().manual_seed(0)
    )
    x_fixed, y_fixed = fixed == 3, fixed == 4
    assert x_fixed.any() and y_fixed.any()
    assert features[x_fixed, 0].max() < 1.0 < features[~x_fixed & ~y_fixed, 0].mean()
    assert features[y_fixed, 1].max() < 1.0 < features[~x_fixed & ~y_fixed, 1].mean()
    result = compute(
        factor_vae.FactorVAEMetric(),
        StubInputs(model=encoder, datasets={"reference": dataset}),
        num_train=40,
        num_eval=40,
        num_variance_estimate=200,
        batch_size=8,
    )
    assert result["active_latents"] == 2 and 0.0 <= result["value"] <= 1.0


# --- bad input ---------------------------------------------------------------------------


def test_bad_input_is_one_line_input_error() -> None:
    f = _factors((3, 4), 30)
    z = np.random.default_rng(0).standard_normal((30, 2))
    metric = mig.MutualInformationGap()
    with pytest.raises(InputError, match="30 latent rows but 29 factor rows"):
        compute(metric, _inputs(z, f[:29]))
    with pytest.raises(InputError, match="factor 1 holds non-integer"):
        compute(metric, _inputs(z, f + np.array([0.0, 0.5])))
    with pytest.raises(InputError, match="needs ground-truth factors"):
        compute(metric, StubInputs({("latents", "samples"): torch.from_numpy(z)}))
    with pytest.raises(InputError, match="needs latents"):
        compute(metric, StubInputs({("factors", "samples"): torch.from_numpy(f)}))
    with pytest.raises(InputError, match="at least 2 latent dimensions"):
        compute(metric, _inputs(z[:, :1], f))
    bad = z.copy()
    bad[3, 1] = np.nan
    with pytest.raises(InputError, match="non-finite"):
        compute(metric, _inputs(bad, f))
    with pytest.raises(InputError, match="every factor is constant"):
        compute(metric, _inputs(z, np.zeros((30, 2), dtype=np.int64)))
    for fresh in (beta_vae.BetaVAEMetric(), factor_vae.FactorVAEMetric()):
        with pytest.raises(InputError, match="needs --reference a dataset with factors"):
            compute(fresh, _inputs(z, f))
        with pytest.raises(InputError, match="has no ground-truth factors"):
            compute(fresh, StubInputs(model=_encoders()["truth"], datasets={"reference": object()}))
        with pytest.raises(InputError, match="num_train"):
            compute(fresh, StubInputs(), num_train=0)
    for message in (str(e) for e in [_error(mig.MutualInformationGap(), z, f[:29])]):
        assert "\n" not in message


def _error(metric, z, f) -> InputError:
    with pytest.raises(InputError) as info:
        compute(metric, _inputs(z, f))
    return info.value


def test_constant_factor_is_left_out_with_a_warning() -> None:
    f = _factors((3, 4), 200)
    f = np.concatenate([f, np.full((200, 1), 2)], axis=1)
    result = compute(mig.MutualInformationGap(), _inputs(f[:, :2].astype(float), f))
    assert result["num_factors"] == 2 and result["value"] >= 0.95
    assert any("factor(s) 2 constant" in w for w in result["warnings"])


def test_split_sizes_follow_two_to_one_capped_at_defaults() -> None:
    assert codes.split_sizes(20_000, 10_000, 5_000) == (10_000, 5_000)
    assert codes.split_sizes(15_000, 10_000, 5_000) == (10_000, 5_000)
    assert codes.split_sizes(2_000, 10_000, 5_000) == (1_334, 666)
    assert codes.split_sizes(14_000, 10_000, 5_000) == (9_334, 4_666)
    assert codes.split_sizes(3_000, 1_000, 5_000) == (1_000, 1_000)


def test_registered_with_declared_options() -> None:
    registry = get_registry()
    for name in ("beta_vae", "factor_vae", "mig", "sap", "dci", "modularity", "explicitness"):
        metric = registry.metric(name)
        assert metric.higher_is_better and metric.interpretation
        assert metric.options and isinstance(metric.fields, dict)


@pytest.mark.parametrize("name", ["sap", "dci", "mig"])
def test_seed_dependence_is_stated_and_seeds_average_it(name: str) -> None:
    """``--opt NAME.seeds=S`` is the mean of the metric at seeds s … s + S − 1."""
    rng = np.random.default_rng(3)
    factors = rng.integers(0, 4, size=(600, 2))
    latents = np.concatenate(
        [factors + 0.8 * rng.standard_normal((600, 2)), rng.standard_normal((600, 1))], axis=1
    )
    metric = get_registry().metric(name)
    assert "depends on --seed" in metric.interpretation
    assert metric.options["seeds"].default == 1
    options = {"num_train": 300} if name == "mig" else {"num_train": 300, "num_test": 150}
    single = [
        compute(metric, _inputs(latents, factors, seed=seed), **options)["value"]
        for seed in (5, 6, 7)
    ]
    assert len(set(single)) > 1  # the seed does move the score
    averaged = compute(metric, _inputs(latents, factors, seed=5), seeds=3, **options)
    assert averaged["seeds"] == [5, 6, 7]
    assert averaged["seed_values"] == single
    assert averaged["value"] == pytest.approx(np.mean(single), abs=1e-15)
    assert averaged["seed_std"] == pytest.approx(np.std(single, ddof=1), abs=1e-15)
    one = compute(metric, _inputs(latents, factors, seed=5), **options)
    assert one["value"] == single[0] and one["seeds"] == [5] and "seed_std" not in one
