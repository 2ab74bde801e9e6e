"""``fd_inf`` and ``is_inf`` (Chong & Forsyth 2020): FD_N / IS_N on seeded random subsets, a
line in 1/N, its intercept.

* Equal to the transcribed references on the same subsets (``tests/fid_infinity_reference.py``
  says how their unseeded draws are replayed): mchong6's ``calculate_FID_infinity_path`` and
  ``calculate_IS_infinity_path``, dgm-eval's ``compute_FD_infinity``, to 1e-9 relative.
* Every FD_N equals ``frechet_distance`` on the same subset, N ≤ d (small side) and N > d, a
  full-rank and a singular reference; the fit's slope and intercept standard error equal
  ``scipy.stats.linregress``'s.
* Sensitivity: over repeated draws, FD∞ against the population moments averages to 0 while
  FD_n does not; FD∞ of two equal halves keeps the reference half's own bias, half of FD_n
  (so one draw's FD∞ of two halves is not within its standard error of 0 in general).
* Bad input (too few samples for the grid, bad options) is an ``InputError`` / exit 2 in one
  line; ``geneval run`` with ``.npz`` features reports the function's value.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import stats as scipy_stats
from scipy.special import softmax

from geneval.errors import InputError
from geneval_plugins.metrics.sample_quality.extrapolation import (
    draw_subsets,
    fit_inverse_n,
    min_subset_size,
    subset_sizes,
)
from geneval_plugins.metrics.sample_quality.fd_inf import fd_infinity
from geneval_plugins.metrics.sample_quality.fid import frechet_distance
from geneval_plugins.metrics.sample_quality.gram import sum_and_gram_float64
from geneval_plugins.metrics.sample_quality.is_inf import is_infinity
from tests import fid_infinity_reference as ref


def _gaussian(n: int, d: int, seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    return rng.normal(size=(n, d)) @ mix + shift + rng.uniform(-1, 1, size=d)


def _orders(n: int, sizes: list[int], seed: int) -> list[np.ndarray]:
    """The full permutations behind ``draw_subsets`` with a generator seeded ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randperm(n, generator=g).numpy() for _ in sizes]


# -- equality with the references ---------------------------------------------------------------


def test_equals_mchong6_calculate_fid_infinity_on_the_same_subsets():
    samples, reference = _gaussian(600, 32, 0, 0.2), _gaussian(900, 32, 1)
    mu, sigma = reference.mean(axis=0), np.cov(reference, rowvar=False)
    ours = fd_infinity(samples, mu, sigma, min_n=100, generator=torch.Generator().manual_seed(7))
    assert ours.sizes == [int(s) for s in np.linspace(100, 600, 15).astype("int32")]
    shuffle = ref.replaying_shuffle(samples.copy(), _orders(600, ours.sizes, 7))
    theirs = ref.calculate_FID_infinity_path(
        samples.copy(), mu, sigma, min_fake=100, num_points=15, shuffle=shuffle
    )
    assert ours.value == pytest.approx(theirs, rel=1e-9)
    assert ours.slope > 0  # FD_N decreases with N: the bias the fit removes


def test_grid_mchong6_is_the_5000_minimum():
    assert min_subset_size("mchong6", 600) == 5000
    samples = _gaussian(600, 8, 2)
    with pytest.raises(InputError, match=r"^fd_inf: 600 samples are too few .* 5000"):
        fd_infinity(samples, np.zeros(8), np.eye(8), grid="mchong6")


def test_equals_dgm_eval_compute_fd_infinity_on_the_same_subsets():
    samples, reference = _gaussian(600, 32, 3, 0.1), _gaussian(700, 32, 4)
    ours = fd_infinity(
        samples,
        reference.mean(axis=0),
        np.cov(reference, rowvar=False),
        generator=torch.Generator().manual_seed(11),
    )
    assert ours.min_n == 60 and ours.sizes[0] == 60 and ours.sizes[-1] == 600
    rows = [o[:s] for o, s in zip(_orders(600, ours.sizes, 11), ours.sizes, strict=True)]
    theirs = ref.compute_FD_infinity(reference, samples, rng=ref.ReplayingChoice(rows))
    assert ours.value == pytest.approx(theirs, rel=1e-9)


def test_dgm_eval_grid_rule():
    assert [min_subset_size("dgm-eval", n) for n in (5, 600, 49_999, 50_000, 10**6)] == [
        2, 60, 4999, 5000, 5000,
    ]  # fmt: skip


def test_is_inf_equals_mchong6_calculate_is_infinity_on_the_same_subsets():
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(600, 10)) * 2 + rng.normal(size=10)
    ours = is_infinity(logits, min_n=100, generator=torch.Generator().manual_seed(3))
    probs = softmax(logits, axis=1)
    shuffle = ref.replaying_shuffle(probs.copy(), _orders(600, ours.sizes, 3))
    theirs = ref.calculate_IS_infinity_path(probs.copy(), min_fake=100, shuffle=shuffle)
    assert ours.value == pytest.approx(theirs, rel=1e-9)
    first = probs[_orders(600, ours.sizes, 3)[0][:100]]
    assert ours.is_n[0] == pytest.approx(ref.calculate_inception_score(first)[0], rel=1e-12)


# -- each point and the fit ---------------------------------------------------------------------


@pytest.mark.parametrize("n_reference", [500, 40], ids=["full-rank-reference", "singular"])
def test_each_fd_n_is_the_frechet_distance_of_its_subset(n_reference):
    """d = 64, N from 30 to 300: the first points take the N × N side (N ≤ d), the others the
    d × d one; a 40-row reference is singular (eigen square root instead of Cholesky)."""
    samples, reference = _gaussian(300, 64, 6), _gaussian(n_reference, 64, 7)
    mu, sigma = reference.mean(axis=0), np.cov(reference, rowvar=False)
    result = fd_infinity(samples, mu, sigma, generator=torch.Generator().manual_seed(1))
    subsets = draw_subsets(300, result.sizes, torch.Generator().manual_seed(1))
    assert result.sizes[0] < 64 < result.sizes[-1]
    for rows, value in zip(subsets, result.fd_n, strict=True):
        x = samples[rows.numpy()]
        expected = frechet_distance(x.mean(axis=0), np.cov(x, rowvar=False), mu, sigma)
        assert value == pytest.approx(expected, rel=1e-9)
    line = scipy_stats.linregress(1 / np.array(result.sizes, dtype=float), result.fd_n)
    assert result.value == pytest.approx(line.intercept, rel=1e-9)
    assert result.slope == pytest.approx(line.slope, rel=1e-9)
    assert result.std_err == pytest.approx(line.intercept_stderr, rel=1e-9)


def test_float64_features_are_left_unchanged():
    x = torch.from_numpy(_gaussian(300, 8, 14))
    before = x.clone()
    fd_infinity(x, np.zeros(8), np.eye(8), generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, before)


def test_fit_recovers_an_exact_line():
    sizes = [10, 20, 40, 80]
    fit = fit_inverse_n(sizes, [3.0 + 5.0 / n for n in sizes])
    assert fit.intercept == pytest.approx(3.0, rel=1e-14)
    assert fit.slope == pytest.approx(5.0, rel=1e-12)
    assert fit.std_err == pytest.approx(0.0, abs=1e-12)


def test_given_subsets_replace_the_draws():
    samples, reference = _gaussian(200, 8, 8), _gaussian(300, 8, 9)
    mu, sigma = reference.mean(axis=0), np.cov(reference, rowvar=False)
    drawn = fd_infinity(samples, mu, sigma, generator=torch.Generator().manual_seed(4))
    again = fd_infinity(
        samples, mu, sigma, subsets=draw_subsets(200, drawn.sizes, torch.Generator().manual_seed(4))
    )
    other = fd_infinity(samples, mu, sigma, generator=torch.Generator().manual_seed(5))
    assert again.fd_n == drawn.fd_n and other.value != drawn.value


def test_chunked_shifted_sums_both_routes(monkeypatch):
    """BLAS ``dsyrk`` (CPU) and torch's product (other devices) give ``Σ(x − c)`` and
    ``Σ(x − c)(x − c)ᵀ`` of the chosen rows, over several chunks."""
    monkeypatch.setattr("geneval_plugins.metrics.sample_quality.gram.CHUNK_ELEMENTS", 64)
    x = torch.from_numpy(_gaussian(50, 6, 13).astype(np.float32))
    rows = torch.tensor([3, 7, 7, 0, 49, 12, 30, 31, 2, 5, 44, 18])
    centre = torch.linspace(-1, 1, 6, dtype=torch.float64)
    y = x[rows].double() - centre
    for blas in (True, False):
        total, gram = sum_and_gram_float64(
            x, rows, device=torch.device("cpu"), centre=centre, blas=blas
        )
        torch.testing.assert_close(total, y.sum(dim=0), rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(gram, y.T @ y, rtol=1e-13, atol=1e-13)
        assert torch.equal(gram, gram.T)


# -- sensitivity ---------------------------------------------------------------------------------


def test_fd_inf_removes_the_sample_side_bias():
    """Over 30 independent Gaussian samples (d = 8, n = 2000 per side), FD∞ against the
    population moments averages to 0 within 3 standard errors of the mean, while FD_n has a
    clear positive bias (over 5 of them). Against the other half of one sample, FD∞ keeps the
    reference half's own bias: equal halves give about half of FD_n, not 0.

    One draw is not enough to test "within its fit's standard error of 0": the standard error
    of the intercept measures the scatter of the subsets around the line, not the fluctuation
    of the n samples that every subset shares (across draws FD∞ scatters about twice as much
    as its mean standard error), and the reference's statistics carry their own 1/n bias."""
    d, n = 8, 2000
    pop, halves, fd_pop, fd_halves = [], [], [], []
    for seed in range(30):
        rng = np.random.default_rng(100 + seed)
        mix = rng.normal(size=(d, d)) / 2
        x = rng.normal(size=(2 * n, d)) @ mix + 1.0
        samples, other = x[:n], x[n:]
        g = torch.Generator().manual_seed(seed)
        at_pop = fd_infinity(samples, np.ones(d), mix.T @ mix, generator=g)
        g = torch.Generator().manual_seed(seed)
        two = fd_infinity(samples, other.mean(axis=0), np.cov(other, rowvar=False), generator=g)
        pop.append(at_pop.value)
        fd_pop.append(at_pop.fd_n[-1])
        halves.append(two.value)
        fd_halves.append(two.fd_n[-1])
    pop, halves = np.array(pop), np.array(halves)
    sem = pop.std(ddof=1) / np.sqrt(len(pop))
    assert abs(pop.mean()) < 3 * sem
    assert np.mean(fd_pop) > 5 * sem
    sem_halves = halves.std(ddof=1) / np.sqrt(len(halves))
    assert abs(halves.mean() - np.mean(fd_halves) / 2) < 3 * sem_halves
    assert halves.mean() > 5 * sem_halves


# -- bad input -----------------------------------------------------------------------------------


def test_bad_input_is_one_input_error():
    samples = _gaussian(50, 4, 10)
    mu, sigma = np.zeros(4), np.eye(4)
    with pytest.raises(InputError, match="too few for the N grid from 60"):
        fd_infinity(samples, mu, sigma, min_n=60)
    with pytest.raises(InputError, match="points must be at least 3"):
        fd_infinity(samples, mu, sigma, points=2)
    with pytest.raises(InputError, match="min_n must be at least 2"):
        fd_infinity(samples, mu, sigma, min_n=1)
    with pytest.raises(InputError, match="do not match 4-d"):
        fd_infinity(samples, np.zeros(5), np.eye(5))
    bad = samples.copy()
    bad[3, 1] = np.nan
    with pytest.raises(InputError, match="non-finite"):
        fd_infinity(bad, mu, sigma)
    with pytest.raises(InputError, match="is_inf: 50 samples are too few"):
        is_infinity(samples, grid="mchong6")
    assert subset_sizes(7, points=3, min_n=2, metric="m") == [2, 4, 7]


# -- the command line ----------------------------------------------------------------------------


def test_cli_run_reports_the_function_value(run_cli, tmp_path):
    samples = _gaussian(400, 16, 20, 0.1).astype(np.float32)
    reference = _gaussian(500, 16, 21).astype(np.float32)
    np.savez(tmp_path / "s.npz", features=samples)
    np.savez(tmp_path / "r.npz", features=reference)
    out = tmp_path / "r.json"
    res = run_cli(
        "run", "--samples", tmp_path / "s.npz", "--reference", tmp_path / "r.npz",
        "--metrics", "fd_inf", "--seed", "3", "--opt", "fd_inf.points=10",
        "--json", out, "--quiet",
    )  # fmt: skip
    assert res.code == 0, res.err
    got = json.loads(out.read_text())["metrics"]["fd_inf"]
    ref64 = reference.astype(np.float64)
    expected = fd_infinity(
        samples,
        ref64.mean(axis=0),
        np.cov(ref64, rowvar=False),
        points=10,
        generator=torch.Generator().manual_seed(3),
    )
    assert got["value"] == pytest.approx(expected.value, rel=1e-9)
    assert got["std_err"] == pytest.approx(expected.std_err, rel=1e-9)
    assert got["sizes"] == expected.sizes and len(got["fd_n"]) == 10


def test_is_inf_from_a_logits_file(run_cli, tmp_path):
    rng = np.random.default_rng(24)
    logits = (rng.normal(size=(300, 8)) * 3).astype(np.float32)
    np.savez(tmp_path / "logits.npz", logits=logits)
    out = tmp_path / "r.json"
    res = run_cli(
        "run", "--samples", tmp_path / "logits.npz", "--metrics", "is_inf", "--seed", "9",
        "--json", out, "--quiet",
    )  # fmt: skip
    assert res.code == 0, res.err
    got = json.loads(out.read_text())["metrics"]["is_inf"]
    expected = is_infinity(logits, generator=torch.Generator().manual_seed(9))
    assert got["value"] == pytest.approx(expected.value, rel=1e-12)
    assert got["sizes"][0] == 30 and got["std_err"] == pytest.approx(expected.std_err, rel=1e-9)


def test_cli_too_few_samples_for_the_grid_is_exit_2_in_one_line(run_cli, tmp_path):
    np.savez(tmp_path / "s.npz", features=_gaussian(100, 8, 22).astype(np.float32))
    np.savez(tmp_path / "r.npz", features=_gaussian(300, 8, 23).astype(np.float32))
    res = run_cli(
        "run", "--samples", tmp_path / "s.npz", "--reference", tmp_path / "r.npz",
        "--metrics", "fd_inf", "--opt", "fd_inf.grid=mchong6", "--quiet",
    )  # fmt: skip
    assert res.code == 2, (res.code, res.out, res.err)
    lines = [line for line in res.err.splitlines() if line and "warning" not in line]
    assert len(lines) == 1 and "Traceback" not in res.err
    assert "fd_inf" in lines[0] and "100 samples are too few" in lines[0]
