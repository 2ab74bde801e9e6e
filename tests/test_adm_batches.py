"""ADM evaluator batches (``openai/guided-diffusion/evaluations``) as sources, and
``geneval stats --format adm``.

A batch is an ``.npz`` with ``arr_0`` (uint8 NHWC images) and/or ``mu``, ``sigma`` (pool3)
and ``mu_s``, ``sigma_s`` (the spatial features of sFID). The batches here are made in the
tests; the reference values come from the transcribed evaluator
(``tests/adm_evaluator_stats_reference.py``): its ``read_statistics`` and
``FIDStatistics.frechet_distance``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from geneval.errors import InputError
from geneval_plugins.extractors.inception import InceptionV3FID
from geneval_plugins.metrics.sample_quality.fid import covariance_factor, frechet_distance
from tests import adm_evaluator_stats_reference as adm
from tests.inception_fixtures import (  # noqa: F401 - the *_fixture names register fixtures
    inception_weights_fixture,
    photo_crops,
    torch_home_fixture,
)

CPU = torch.device("cpu")
POOL, SPATIAL = 2048, 2023


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENEVAL_CACHE", str(tmp_path / "geneval-cache"))


def _moments(d: int, seed: int, rank: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A mean and a full-rank covariance (low rank plus a diagonal), float64."""
    rng = np.random.default_rng(seed)
    factor = rng.normal(size=(d, rank)) / np.sqrt(rank)
    sigma = factor @ factor.T + np.diag(rng.uniform(0.05, 0.2, size=d))
    return rng.normal(size=d) * 0.3, sigma


def _adm_batch(path: Path, seed: int, images: np.ndarray | None = None, **extra: Any) -> Path:
    """A batch in the ADM layout: ``mu``/``sigma``/``mu_s``/``sigma_s`` (and ``arr_0``)."""
    mu, sigma = _moments(POOL, seed)
    mu_s, sigma_s = _moments(SPATIAL, seed + 100)
    arrays: dict[str, Any] = {"mu": mu, "sigma": sigma, "mu_s": mu_s, "sigma_s": sigma_s}
    if images is not None:
        arrays["arr_0"] = images
    arrays.update(extra)
    np.savez(path, **arrays)
    return path


def _evaluate(samples: Any, reference: Any, metrics: list[str]) -> dict[str, Any]:
    import geneval

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the notes are read from the report
        return geneval.evaluate(
            samples=str(samples),
            reference=str(reference),
            metrics=metrics,
            device="cpu",
            batch_size=8,
            cache=False,
        )


def _adm_values(sample_path: Path, ref_path: Path, *, route: str) -> dict[str, float]:
    """FID and sFID of two batches with moments: the moments as the evaluator's
    ``read_statistics`` reads them, the distance by ``route`` (``adm``: the transcribed
    ``frechet_distance``, scipy ``sqrtm``; ``geneval``: :func:`frechet_distance`)."""
    ref, ref_s = adm.read_statistics(str(ref_path), None)
    sample, sample_s = adm.read_statistics(str(sample_path), None)
    if route == "adm":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return {
                "fid": sample.frechet_distance(ref),
                "sfid": sample_s.frechet_distance(ref_s),
            }
    return {
        "fid": frechet_distance(sample.mu, sample.sigma, ref.mu, ref.sigma),
        "sfid": frechet_distance(sample_s.mu, sample_s.sigma, ref_s.mu, ref_s.sigma),
    }


def test_batches_with_moments_give_the_evaluators_moments(torch_home: Path, tmp_path: Path) -> None:
    sample = _adm_batch(tmp_path / "sample.npz", 1)
    ref = _adm_batch(tmp_path / "ref.npz", 2)
    report = _evaluate(sample, ref, ["fid", "sfid"])
    expected = _adm_values(sample, ref, route="geneval")
    for name in ("fid", "sfid"):
        assert expected[name] > 1.0
        assert report["metrics"][name]["value"] == pytest.approx(expected[name], rel=1e-12)
        assert report["metrics"][name]["n_samples"] is None  # ADM batches record no count
    notes = " ".join(str(w) for w in report.get("warnings", []))
    assert "ADM evaluator" in notes and "inception-v3-fid" in notes and "tf1" in notes


@pytest.mark.slow
def test_batches_with_moments_equal_the_evaluator(torch_home: Path, tmp_path: Path) -> None:
    """The same through the transcribed evaluator's sqrtm route (about 90 s on one core)."""
    sample = _adm_batch(tmp_path / "sample.npz", 1)
    ref = _adm_batch(tmp_path / "ref.npz", 2)
    report = _evaluate(sample, ref, ["fid", "sfid"])
    expected = _adm_values(sample, ref, route="adm")
    for name in ("fid", "sfid"):
        assert report["metrics"][name]["value"] == pytest.approx(expected[name], rel=1e-9)


def test_batch_serves_moments_from_the_file_and_images_from_arr_0(
    torch_home: Path, tmp_path: Path
) -> None:
    u8_samples = np.stack(photo_crops(4, seed=21, sizes=((48, 48),)))
    u8_ref = np.stack(photo_crops(4, seed=22, sizes=((40, 56),)))
    np.save(tmp_path / "samples.npy", u8_samples)
    # the batch's moments are not those of its images: which served what can be told apart
    ref = _adm_batch(tmp_path / "ref.npz", 3, images=u8_ref)
    report = _evaluate(tmp_path / "samples.npy", ref, ["fid", "sfid", "kid"])
    extractor = InceptionV3FID().load(device=CPU)
    samples = extractor(torch.from_numpy(u8_samples).permute(0, 3, 1, 2).float() / 255)
    references = extractor(torch.from_numpy(u8_ref).permute(0, 3, 1, 2).float() / 255)
    ref_stats, ref_spatial = adm.read_statistics(str(ref), None)
    for name, output, file_stats in (
        ("fid", "pool", ref_stats),
        ("sfid", "spatial", ref_spatial),
    ):
        ours = adm.compute_statistics(samples[output].double().numpy())
        factor = covariance_factor(samples[output].double())  # n ≤ d: the small-side route
        expected = frechet_distance(
            ours.mu, ours.sigma, file_stats.mu, file_stats.sigma, factor1=factor
        )
        assert report["metrics"][name]["value"] == pytest.approx(expected, rel=1e-6)
    # KID reads per-sample features, extracted from arr_0: with 4 images a side every subset
    # is the whole set, so KID is the unbiased MMD² with k(a, b) = (aᵀb / d + 1)³
    x, y = samples["pool"].double().numpy(), references["pool"].double().numpy()

    def kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a @ b.T / POOL + 1.0) ** 3

    m = 4
    kxx, kyy = kernel(x, x), kernel(y, y)
    mmd2 = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    mmd2 -= 2 * kernel(x, y).mean()
    assert report["metrics"]["kid"]["subset_size"] == 4
    assert report["metrics"]["kid"]["value"] == pytest.approx(mmd2, rel=1e-4)
    assert report["inputs"]["reference"]["count"] == 4


@pytest.mark.slow
def test_batch_of_images_only_is_an_image_source(torch_home: Path, tmp_path: Path) -> None:
    u8 = np.stack(photo_crops(3, seed=31, sizes=((32, 32),)))
    np.savez(tmp_path / "samples.npz", arr_0=u8)  # what ADM's sampling scripts write
    ref = _adm_batch(tmp_path / "ref.npz", 4)
    report = _evaluate(tmp_path / "samples.npz", ref, ["fid", "sfid"])
    features = InceptionV3FID().load(device=CPU)(
        torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 255
    )
    ref_stats, ref_spatial = adm.read_statistics(str(ref), None)
    for name, output, file_stats in (("fid", "pool", ref_stats), ("sfid", "spatial", ref_spatial)):
        ours = adm.compute_statistics(features[output].double().numpy())
        factor = covariance_factor(features[output].double())
        expected = frechet_distance(
            ours.mu, ours.sigma, file_stats.mu, file_stats.sigma, factor1=factor
        )
        assert report["metrics"][name]["value"] == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mu_s": "nan"}, "mu_s contains non-finite values"),
        ({"sigma_s": "drop"}, "mu_s without sigma_s"),
        ({"mu_s": "short"}, "mu_s (2022,) and sigma_s (2023, 2023) do not match"),
        ({"sigma_s": "asymmetric"}, "sigma_s is not symmetric"),
        ({"arr_0": "float"}, "arr_0 must be uint8 images (N, H, W, 3)"),
        ({"mu": "drop"}, "an ADM batch with moments needs 'mu' and 'sigma'"),
    ],
)
def test_bad_batches_exit_2_naming_the_file_and_key(
    tmp_path: Path, run_cli: Any, change: dict[str, str], message: str
) -> None:
    mu, sigma = _moments(16, 0)
    mu_s, sigma_s = _moments(12, 1)
    arrays: dict[str, Any] = {"mu": mu, "sigma": sigma, "mu_s": mu_s, "sigma_s": sigma_s}
    arrays["arr_0"] = np.zeros((2, 8, 8, 3), np.uint8)
    ((key, how),) = change.items()
    if how == "nan":
        arrays[key] = arrays[key].copy()
        arrays[key][3] = np.nan
    elif how == "drop":
        del arrays[key]
    elif how == "short":
        mu_s, sigma_s = _moments(SPATIAL, 1, rank=4)
        arrays["mu_s"], arrays["sigma_s"] = mu_s[:-1], sigma_s
    elif how == "asymmetric":
        arrays[key] = arrays[key].copy()
        arrays[key][0, 1] += 1.0
    elif how == "float":
        arrays[key] = np.zeros((2, 8, 8, 3), np.float32)
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    result = run_cli("run", "--samples", path, "--reference", path, "--metrics", "fid")
    assert result.code == 2
    (line,) = [ln for ln in result.err_lines if not ln.startswith("geneval: warning")]
    assert message in line and "bad.npz" in line


def test_sfid_against_a_file_without_spatial_moments_names_it(
    torch_home: Path, tmp_path: Path
) -> None:
    mu, sigma = _moments(POOL, 5)
    np.savez(tmp_path / "plain.npz", mu=mu, sigma=sigma)
    np.save(tmp_path / "samples.npy", np.stack(photo_crops(3, seed=1, sizes=((32, 32),))))
    with pytest.raises(InputError, match="hold no moments of spatial"):
        _evaluate(tmp_path / "samples.npy", tmp_path / "plain.npz", ["sfid"])


def test_plain_meta_is_read_by_evaluator_keys(tmp_path: Path) -> None:
    """A batch with ``meta`` keeps its own provenance (nothing is assumed)."""
    from geneval.feature_stats import load_stats

    meta = {"extractor": "inception-v3-fid", "resize": "clean", "weights_sha256": "x"}
    path = _adm_batch(tmp_path / "ref.npz", 6, meta=np.array(json.dumps(meta)))
    stats = load_stats(path)
    assert stats.layout == "adm" and stats.meta == meta
    mean, cov = stats.outputs["spatial"]
    ref, ref_s = adm.read_statistics(str(path), None)
    np.testing.assert_array_equal(mean, ref_s.mu)
    np.testing.assert_array_equal(cov, ref_s.sigma)
    view = stats.for_output("spatial")
    assert view is not None and view.dim == SPATIAL
    assert stats.for_output("other") is None


def test_stats_format_adm_writes_what_the_evaluator_reads(
    torch_home: Path, tmp_path: Path, run_cli: Any
) -> None:
    u8 = np.stack(photo_crops(4, seed=41, sizes=((40, 48),)))
    np.save(tmp_path / "images.npy", u8)
    out = tmp_path / "ref.npz"
    result = run_cli("stats", tmp_path / "images.npy", "-o", out, "--format", "adm", "--quiet")
    assert result.code == 0, result.err
    # the evaluator's reading code: statistics from the file, images through its reader
    ref, ref_s = adm.read_statistics(str(out), None)
    np.testing.assert_array_equal(adm.read_images(str(out)), u8)
    with np.load(out) as arrays:
        assert {"arr_0", "mu", "sigma", "mu_s", "sigma_s"} <= set(arrays.files)
        assert all(arrays[k].dtype == np.float64 for k in ("mu", "sigma", "mu_s", "sigma_s"))
        assert arrays["arr_0"].dtype == np.uint8 and arrays["arr_0"].shape == (4, 40, 48, 3)
    assert ref.mu.shape == (POOL,) and ref_s.sigma.shape == (SPATIAL, SPATIAL)
    features = InceptionV3FID().load(device=CPU)(
        torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 255
    )
    for stats, output in ((ref, "pool"), (ref_s, "spatial")):
        expected = adm.compute_statistics(features[output].double().numpy())
        scale = np.abs(expected.sigma).max()
        assert np.abs(stats.mu - expected.mu).max() <= 1e-5 * np.abs(expected.mu).max()
        assert np.abs(stats.sigma - expected.sigma).max() <= 1e-5 * scale
    # round trip through geneval: the images against the batch written from them
    report = _evaluate(tmp_path / "images.npy", out, ["fid", "sfid"])
    for name, stats in (("fid", ref), ("sfid", ref_s)):
        assert abs(report["metrics"][name]["value"]) <= 1e-6 * np.trace(stats.sigma)
        assert report["metrics"][name]["n_reference"] == 4
    # the --force rules of every output file
    again = run_cli("stats", tmp_path / "images.npy", "-o", out, "--format", "adm", "--quiet")
    assert again.code == 2 and "exists" in again.err
    forced = run_cli(
        "stats", tmp_path / "images.npy", "-o", out, "--format", "adm", "--force", "--quiet"
    )
    assert forced.code == 0, forced.err


def test_class_conditional_samples_arr_0_arr_1_are_images_and_labels(tmp_path: Path) -> None:
    """guided-diffusion's image_sample.py writes np.savez(path, images, labels): arr_0, arr_1."""
    from geneval.sources import load_array_file

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5, 9])
    np.savez(tmp_path / "samples.npz", images, labels)
    read, carried = load_array_file(tmp_path / "samples.npz")
    np.testing.assert_array_equal(read, images.transpose(0, 3, 1, 2))
    assert carried["labels"].tolist() == labels.tolist()
    np.savez(tmp_path / "bad.npz", images, labels[:5])
    with pytest.raises(InputError, match="bad.npz"):
        load_array_file(tmp_path / "bad.npz")
