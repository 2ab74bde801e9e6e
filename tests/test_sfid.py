"""``sfid`` and the ``spatial`` output of ``inception-v3-fid`` against their references.

* The spatial output is ADM's ``mixed_6/conv:0[..., :7]`` flattened in NHWC order: compared
  with the output of pytorch-fid's ``Mixed_6d.branch1x1`` (conv, BatchNorm, ReLU), caught by a
  forward hook, on the same random weights in the published layout
  (``tests/inception_fixtures.py``).
* ``sfid`` and ``fid`` equal the transcribed ADM evaluator's ``FIDStatistics.frechet_distance``
  (``tests/adm_evaluator_stats_reference.py``) on identical moments.
* Through the runner, ``sfid`` uses the spatial moments of one pass (beside ``fid``'s pool
  moments).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pytorch_fid.inception import InceptionV3 as PytorchFidInception

from geneval.feature_stats import FeatureStatistics
from geneval.plugins import get_registry
from geneval_plugins.extractors.inception import InceptionV3FID
from geneval_plugins.metrics.sample_quality.fid import (
    FrechetInceptionDistance,
    covariance_factor,
    frechet_distance,
)
from geneval_plugins.metrics.sample_quality.sfid import SpatialFID
from tests import adm_evaluator_stats_reference as adm
from tests.inception_fixtures import (  # noqa: F401 - the *_fixture names register fixtures
    inception_weights_fixture,
    photo_crops,
    to_float_batch,
    torch_home_fixture,
)

CPU = torch.device("cpu")
FEATURE_TOL = 1e-4  # of the features' scale: folded BatchNorm, channels-last kernels


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENEVAL_CACHE", str(tmp_path / "geneval-cache"))


class _Inputs:
    """Metric inputs holding one statistics object per (source, output)."""

    def __init__(self, stats: dict[tuple[str, str | None], FeatureStatistics]) -> None:
        self._stats = stats
        self.device = CPU
        self.seed = 0

    def stats(self, source: str, output: str | None = None) -> FeatureStatistics:
        return self._stats[(source, output)]


def _features(n: int, d: int, seed: int, scale: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    return (rng.normal(size=(n, d)) @ mix * scale + rng.normal(size=d)).astype(np.float32)


def test_registered_with_the_spatial_need() -> None:
    registry = get_registry()
    metric = registry.metric("sfid")
    assert isinstance(metric, SpatialFID)
    assert {need.output for need in metric.needs} == {"spatial"}
    extractor = registry.extractor("inception-v3-fid")
    assert extractor.outputs["spatial"] == 7 * 17 * 17 == 2023


def test_spatial_output_is_mixed_6d_branch1x1_nhwc(torch_home: Path) -> None:
    images = to_float_batch(photo_crops(3, seed=5, sizes=((96, 128),)))
    ours = InceptionV3FID().load(device=CPU, resize="pytorch-fid")(images)
    reference = PytorchFidInception([3]).eval()
    caught: dict[str, torch.Tensor] = {}
    # pytorch-fid's third block (index 2) is [Mixed_5b, 5c, 5d, 6a, 6b, 6c, 6d, 6e]: Mixed_6d is the
    # 17×17 block after Mixed_6a (reduction), 6b and 6c, i.e. the TF graph's mixed_6.
    mixed_6d = reference.blocks[2][6]
    assert type(mixed_6d).__name__ == "FIDInceptionC"
    assert mixed_6d.branch7x7_1.conv.out_channels == 160  # 6c/6d have c7 = 160, 6e 192
    handle = mixed_6d.branch1x1.register_forward_hook(
        lambda _m, _i, out: caught.__setitem__("out", out.detach().clone())
    )
    with torch.no_grad():
        pool = reference(images)[0].flatten(1)
    handle.remove()
    branch = caught["out"]  # (N, 192, 17, 17) after BatchNorm and ReLU
    assert branch.shape == (3, 192, 17, 17)
    assert float(branch.min()) >= 0.0  # the ReLU's output, as the graph's conv:0
    expected = branch[:, :7].permute(0, 2, 3, 1).numpy()  # NHWC, as TF gives it
    expected = adm.flatten_spatial(expected)
    spatial = ours["spatial"]
    assert spatial.shape == (3, 2023) and spatial.dtype == torch.float32
    scale = float(np.abs(expected).max())
    assert scale > 0 and expected.std(axis=0).mean() > 0.01 * np.abs(expected).mean()
    assert np.abs(spatial.numpy() - expected).max() <= FEATURE_TOL * scale
    # TF order: feature k is (row, column, channel) = divmod chain of k over (17, 17, 7)
    row, col, ch = 4, 11, 5
    assert spatial[1, (row * 17 + col) * 7 + ch] == pytest.approx(
        float(branch[1, ch, row, col]), abs=FEATURE_TOL * scale
    )
    # the same forward gives pool3
    assert np.abs(ours["pool"].numpy() - pool.numpy()).max() <= FEATURE_TOL * pool.abs().max()


@pytest.mark.parametrize("metric_cls", [SpatialFID, FrechetInceptionDistance])
def test_equals_adm_frechet_distance_on_identical_moments(metric_cls: type) -> None:
    d = 96
    a, b = _features(800, d, 0, 1.0), _features(700, d, 1, 1.3)
    # float64 activations: on float32 ones the evaluator's np.mean returns a float32 mean and
    # its ‖μ₁ − μ₂‖² is then summed in float32 (~1e-8 relative off the exact value)
    ref_a = adm.compute_statistics(a.astype(np.float64))
    ref_b = adm.compute_statistics(b.astype(np.float64))
    expected = ref_a.frechet_distance(ref_b)
    # the same moments as the evaluator's (np.mean, np.cov), as a statistics file holds them
    stats_a = FeatureStatistics.from_moments(ref_a.mu, ref_a.sigma, 800)
    stats_b = FeatureStatistics.from_moments(ref_b.mu, ref_b.sigma, 700)
    output = "spatial" if metric_cls is SpatialFID else None
    inputs = _Inputs({("samples", output): stats_a, ("reference", output): stats_b})
    result = metric_cls().compute(inputs)
    assert expected > 1.0
    assert result["value"] == pytest.approx(expected, rel=1e-9)
    assert result["n_samples"] == 800 and result["n_reference"] == 700
    # and from the running moments of the rows themselves (float64 sums vs numpy)
    inputs = _Inputs(
        {
            ("samples", output): FeatureStatistics.from_features(torch.from_numpy(a)),
            ("reference", output): FeatureStatistics.from_features(torch.from_numpy(b)),
        }
    )
    assert metric_cls().compute(inputs)["value"] == pytest.approx(expected, rel=1e-9)


def _evaluate(samples: Any, reference: Any, metrics: list[str], **kw: Any) -> dict[str, Any]:
    import geneval

    return geneval.evaluate(
        samples=samples,
        reference=reference,
        metrics=metrics,
        device="cpu",
        batch_size=8,
        cache=False,
        **kw,
    )


def test_run_computes_fid_and_sfid_in_one_pass(
    torch_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    u8_a = np.stack(photo_crops(5, seed=11, sizes=((64, 64),)))
    u8_b = np.stack(photo_crops(4, seed=12, sizes=((64, 64),)))
    np.save(tmp_path / "a.npy", u8_a)
    np.save(tmp_path / "b.npy", u8_b)
    calls = []
    original = InceptionV3FID.load

    def counting_load(self: Any, **kw: Any) -> Any:
        loaded = original(self, **kw)
        network = loaded.network
        forward = network.forward

        def counted(x: torch.Tensor) -> dict[str, torch.Tensor]:
            calls.append(int(x.shape[0]))
            return forward(x)

        network.forward = counted
        return loaded

    monkeypatch.setattr(InceptionV3FID, "load", counting_load)
    report = _evaluate(
        str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), ["fid", "sfid"], options=None
    )
    assert sum(calls) == 9  # each image through the network once, for both metrics
    extractor = InceptionV3FID().load(device=CPU)
    feats = {
        name: extractor(torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 255)
        for name, u8 in (("a", u8_a), ("b", u8_b))
    }
    for metric, output in (("fid", "pool"), ("sfid", "spatial")):
        first = adm.compute_statistics(feats["a"][output].double().numpy())
        second = adm.compute_statistics(feats["b"][output].double().numpy())
        expected = frechet_distance(
            first.mu,
            first.sigma,
            second.mu,
            second.sigma,
            factor1=covariance_factor(feats["a"][output].double()),
            factor2=covariance_factor(feats["b"][output].double()),
        )
        assert report["metrics"][metric]["value"] == pytest.approx(expected, rel=1e-5)
    assert report["metrics"]["sfid"]["n_samples"] == 5


@pytest.mark.slow
def test_two_ranks_equal_one_process(torch_home: Path, tmp_path: Path) -> None:
    """``--nproc 2``: each rank's spatial moments merge into those of one process."""
    import json
    import os
    import subprocess
    import sys

    np.save(tmp_path / "a.npy", np.stack(photo_crops(5, seed=13, sizes=((40, 40),))))
    np.save(tmp_path / "b.npy", np.stack(photo_crops(5, seed=14, sizes=((40, 40),))))
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", GENEVAL_CACHE=str(tmp_path / "cache"))
    env.update(TORCH_HOME=str(torch_home), GENEVAL_LOAD_PLUGINS="")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    base = [sys.executable, "-m", "geneval", "run", "--samples", str(tmp_path / "a.npy")]
    base += ["--reference", str(tmp_path / "b.npy"), "--metrics", "fid,sfid", "--quiet"]
    base += ["--batch-size", "2", "--no-cache"]
    reports = []
    for extra in ([], ["--nproc", "2"]):
        out = tmp_path / f"report{len(reports)}.json"
        done = subprocess.run(
            [*base, *extra, "--json", str(out)], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        reports.append(json.loads(out.read_text()))
    one, two = reports
    assert two["config"]["world_size"] == 2
    for name in ("fid", "sfid"):
        assert two["metrics"][name]["value"] == pytest.approx(
            one["metrics"][name]["value"], rel=1e-6
        )
