"""End to end against torch-fidelity's ``calculate_metrics`` on the same PNG folders (slow).

Both sides read the same folders and run the same random weights in the published layouts
(``tests/inception_fixtures.py``, ``tests/vgg16_fixtures.py``), found through ``TORCH_HOME``.

* Precision and recall: geneval's extractor and :func:`manifold_metrics` against
  ``calculate_metrics(prc=True, prc_neighborhood=3)``, with torch-fidelity's default VGG-16 and
  with its Inception (``feature_layer_prc="2048"``). Float32 features of the two
  implementations differ by ~1e-5, which may flip one nearest-neighbour decision: the values
  may differ by at most ``1/n``.
* IS and KID with ``rng=torch-fidelity`` through ``geneval run`` against torch-fidelity's
  defaults (10 splits; 100 subsets, here of 50 from 120 images): equal to 1e-4.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from geneval.plugins import get_registry
from geneval_plugins.metrics.sample_quality.manifold import manifold_metrics
from tests.inception_fixtures import (  # noqa: F401 - the *_fixture names register fixtures
    inception_weights_fixture,
    photo_crops,
    png_folders_fixture,
    to_float_batch,
    torch_home_fixture,
    write_png_folder,
)
from tests.vgg16_fixtures import (  # noqa: F401
    vgg16_home_fixture,
    vgg16_weights_fixture,
)

CPU = torch.device("cpu")
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENEVAL_CACHE", str(tmp_path / "geneval-cache"))


def _read_folder(folder: Path) -> torch.Tensor:
    """The folder's PNGs (one size), sorted by name, as float [0, 1] (N, 3, H, W)."""
    files = sorted(folder.glob("*.png"))
    return to_float_batch([np.asarray(Image.open(f).convert("RGB")) for f in files])


def _features(extractor: str, output: str, folder: Path, batch: int = 8) -> torch.Tensor:
    loaded = get_registry().extractor(extractor).load(device=CPU)
    images = _read_folder(folder)
    return torch.cat([loaded(images[i : i + batch])[output] for i in range(0, len(images), batch)])


def _compare_prc(samples: torch.Tensor, reference: torch.Tensor, ref: dict[str, float]) -> None:
    ours = manifold_metrics(samples, reference, {"precision": 3, "recall": 3})
    print("geneval", ours, "torch-fidelity", ref)
    assert abs(ours["precision"] - ref["precision"]) <= 1 / len(samples) + 1e-6
    assert abs(ours["recall"] - ref["recall"]) <= 1 / len(reference) + 1e-6


def test_precision_recall_with_vgg16_match_torch_fidelity(
    vgg16_home: Path, png_folders: tuple[Path, Path]
) -> None:
    from torch_fidelity import calculate_metrics

    samples = _features("vgg16", "fc2_relu", png_folders[0])
    reference = _features("vgg16", "fc2_relu", png_folders[1])
    ref = calculate_metrics(
        input1=str(png_folders[0]),
        input2=str(png_folders[1]),
        cuda=False,
        prc=True,
        prc_neighborhood=3,
        cache=False,
        verbose=False,
    )
    _compare_prc(samples, reference, ref)


def test_precision_recall_with_inception_match_torch_fidelity(
    torch_home: Path, png_folders: tuple[Path, Path]
) -> None:
    from torch_fidelity import calculate_metrics

    samples = _features("inception-v3-fid", "pool", png_folders[0])
    reference = _features("inception-v3-fid", "pool", png_folders[1])
    ref = calculate_metrics(
        input1=str(png_folders[0]),
        input2=str(png_folders[1]),
        cuda=False,
        prc=True,
        prc_neighborhood=3,
        feature_extractor="inception-v3-compat",
        feature_layer_prc="2048",
        cache=False,
        verbose=False,
    )
    _compare_prc(samples, reference, ref)


@pytest.fixture(scope="module")
def folders_of_120(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("folders_120")
    samples = write_png_folder(root / "samples", photo_crops(120, seed=21, sizes=((64, 64),)))
    reference = write_png_folder(root / "reference", photo_crops(120, seed=22, sizes=((72, 72),)))
    return samples, reference


def test_is_and_kid_with_torch_fidelity_rng_match_its_defaults(
    torch_home: Path,
    inception_weights: Path,
    folders_of_120: tuple[Path, Path],
    run_cli,
    tmp_path: Path,
) -> None:
    from torch_fidelity import calculate_metrics

    out = tmp_path / "report.json"
    res = run_cli(
        "run",
        "--samples",
        folders_of_120[0],
        "--reference",
        folders_of_120[1],
        "--metrics",
        "is,kid",
        "--inception-weights",
        inception_weights,
        "--opt",
        "is.rng=torch-fidelity",
        "--opt",
        "kid.rng=torch-fidelity",
        "--opt",
        "kid.subset_size=50",
        "--json",
        out,
        "--quiet",
    )
    assert res.code == 0, res.err
    ours = json.loads(out.read_text())["metrics"]
    ref = calculate_metrics(
        input1=str(folders_of_120[0]),
        input2=str(folders_of_120[1]),
        cuda=False,
        isc=True,
        kid=True,
        kid_subset_size=50,
        cache=False,
        verbose=False,
    )
    print("geneval", ours, "torch-fidelity", ref)
    assert ours["is"]["splits"] == 10 and ours["kid"]["subsets"] == 100
    assert ours["is"]["value"] == pytest.approx(ref["inception_score_mean"], rel=1e-4)
    assert ours["is"]["std"] == pytest.approx(ref["inception_score_std"], rel=1e-3)
    assert ours["kid"]["value"] == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-4)
    assert ours["kid"]["std"] == pytest.approx(ref["kernel_inception_distance_std"], rel=1e-3)
