"""The HTML report and the Markdown grid: self-contained, images that decode to the samples,
the nearest-neighbour panel on samples that are copies of reference images, safe outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from geneval.cache import sha256_of
from geneval.report.grids import GAP, MIN_CELL, image_grid
from geneval.runner import Evaluation, RunConfig
from geneval.sources import quantize_to_uint8_levels, sample_block_seed
from geneval_plugins.datasets.digits import DigitsDataset
from geneval_plugins.extractors.digits_cnn import shipped_weights_path
from tests.fake_plugins import FakePlugins, ToySet
from tests.html_checks import check_self_contained

#: Reference images (digits:train indices) the samples copy, in this order.
COPIED = [3, 500, 17, 1200, 42, 999, 250, 7, 640, 88, 1000, 321]


@pytest.fixture
def fake(add_plugin) -> FakePlugins:
    plugins = FakePlugins()
    add_plugin(plugins)
    return plugins


@pytest.fixture(scope="module")
def train_images() -> torch.Tensor:
    return DigitsDataset().load("train").images


@pytest.fixture
def copies(tmp_path: Path, train_images: torch.Tensor) -> Path:
    """An .npz of 300 samples: exact copies of digits:train images, the first 12 of COPIED."""
    rng = np.random.default_rng(0)
    rest = rng.choice(np.setdiff1d(np.arange(len(train_images)), COPIED), 300 - len(COPIED))
    order = np.concatenate([COPIED, rest])
    path = tmp_path / "copies.npz"
    np.savez(path, images=train_images[order].numpy())  # float32 NCHW, exact k/16 levels
    return path


def _cell(grid: np.ndarray, index: int, columns: int, size: int) -> np.ndarray:
    r, c = divmod(index, columns)
    top, left = GAP + r * (size + GAP), GAP + c * (size + GAP)
    return grid[top : top + size, left : left + size]


def _upscaled(image: torch.Tensor, size: int) -> np.ndarray:
    """A (1, 8, 8) float image as the grid shows it: 8-bit RGB, pixels repeated to ``size``."""
    grey = (image[0].numpy() * 255).round().astype(np.uint8)
    factor = size // grey.shape[0]
    big = np.repeat(np.repeat(grey, factor, axis=0), factor, axis=1)
    return np.stack([big] * 3, axis=-1)


def test_html_is_self_contained_and_shows_the_samples(run_cli, copies, train_images, tmp_path):
    """Static checks: CSP meta, no outside reference, every image decodes; the samples grid
    holds the samples pixel for pixel, the reference grid the reference's first images; the
    table says what better means and where the gate came from."""
    html_path = tmp_path / "report.html"
    res = run_cli(
        "run", "--samples", copies, "--reference", "digits:train", "--metrics", "fid,kid",
        "--html", html_path, "--grid", "16", "--fail-if", "fid>1000", "--quiet",
    )  # fmt: skip
    assert res.code == 0, res.err
    page = html_path.read_text(encoding="utf-8")
    images, text = check_self_contained(page)
    samples_grid, reference_grid = images[0], images[1]
    size = 8 * (MIN_CELL // 8)  # 8×8 digits are enlarged to 32×32 cells
    assert samples_grid.shape == (4 * size + 5 * GAP, 4 * size + 5 * GAP, 3)
    for i in range(16):
        expected = _upscaled(train_images[COPIED[i] if i < len(COPIED) else 0], size)
        if i < len(COPIED):
            np.testing.assert_array_equal(_cell(samples_grid, i, 4, size), expected)
        np.testing.assert_array_equal(
            _cell(reference_grid, i, 4, size), _upscaled(train_images[i], size)
        )
    assert "The first 16 of 300 samples." in text
    assert "The first 16 of 1257 reference images." in text
    assert "lower" in text and "Fréchet distance between Gaussian fits" in text
    assert "fid>1000" in text and "--fail-if" in text and "passed" in text
    assert "digits-cnn" in text and "grey-luma601-area-8x8" in text
    assert sha256_of(shipped_weights_path()) in text  # the weights' provenance


def test_neighbour_panel_shows_the_copied_reference_images(copies, train_images):
    """Samples that are copies of reference images: each sample's nearest reference image is
    its original, at a distance far below the reference's typical neighbour distance."""
    evaluation = Evaluation(
        RunConfig(
            metrics=["fid", "kid"], samples=str(copies), reference="digits:train", grid=8,
            neighbours=8, device="cpu",
        )
    )  # fmt: skip
    evaluation.execute()
    visuals = evaluation.visuals
    assert visuals is not None and visuals.space == "digits-cnn features"
    assert len(visuals.neighbours) == 8
    for row, copied in zip(visuals.neighbours, COPIED, strict=False):
        original = train_images[copied]
        nearest = row.images[0]
        assert torch.equal(row.sample, original)
        # the copy itself, or an identical duplicate of it in the reference
        assert torch.equal(nearest, original), (copied, row.indices)
        assert torch.equal(train_images[row.indices[0]], original)
        assert row.distances[0] < 1e-2 * visuals.typical_distance
        assert row.distances == sorted(row.distances)
        assert row.distances[1] > 0.1 * visuals.typical_distance  # the rest are other images


def test_neighbour_panel_in_html_marks_the_copies(run_cli, copies, tmp_path):
    html_path = tmp_path / "r.html"
    res = run_cli(
        "run", "--samples", copies, "--reference", "digits:train", "--metrics", "fid",
        "--html", html_path, "--quiet",
    )  # fmt: skip
    assert res.code == 0, res.err
    images, text = check_self_contained(html_path.read_text(encoding="utf-8"))
    # 2 grids, then 8 rows of one sample and 4 neighbours
    assert len(images) == 2 + 8 * 5
    assert text.count("near copy") == 8
    for i in range(8):
        sample, nearest = images[2 + 5 * i], images[3 + 5 * i]
        np.testing.assert_array_equal(sample, nearest)
        assert f"#{COPIED[i]}" in text or "near copy" in text


def test_model_samples_are_kept_from_their_pass(fake):
    """A model's samples cannot be fetched again: the pass keeps the first ones, exactly the
    images the metrics saw (seeded, quantised to 8 bits)."""
    evaluation = Evaluation(
        RunConfig(
            metrics=["feat-dist"], model="toy-noise", num_samples=50, reference="toyset:train",
            grid=10, neighbours=3, device="cpu", seed=5,
        )
    )  # fmt: skip
    evaluation.execute()
    visuals = evaluation.visuals
    generator = torch.Generator().manual_seed(sample_block_seed(5, 0))  # the first block
    expected = quantize_to_uint8_levels(torch.rand((50, 1, 6, 6), generator=generator))
    assert len(visuals.samples) == 10
    for i, image in enumerate(visuals.samples):
        assert torch.equal(image, expected[i])
    toyset = ToySet().load("train").images
    assert all(torch.equal(a, b) for a, b in zip(visuals.reference, toyset[:10], strict=True))
    assert len(visuals.neighbours) == 3 and visuals.space == "counting features"
    # the neighbours are the reference rows nearest in the counting extractor's space
    feats = torch.nn.functional.adaptive_avg_pool2d(expected[:3].repeat(1, 3, 1, 1), 2).flatten(1)
    ref = torch.nn.functional.adaptive_avg_pool2d(toyset.repeat(1, 3, 1, 1), 2).flatten(1)
    exact = torch.cdist(feats.double(), ref.double()).argsort(dim=1)[:, :4]
    assert [row.indices for row in visuals.neighbours] == exact.tolist()


def test_statistics_reference_says_why_there_is_no_panel(run_cli, copies, tmp_path):
    stats = tmp_path / "train.npz"
    assert run_cli("stats", "digits:train", "-o", stats, "--quiet").code == 0
    html_path = tmp_path / "r.html"
    res = run_cli(
        "run", "--samples", copies, "--reference", stats, "--metrics", "fid",
        "--html", html_path, "--quiet",
    )  # fmt: skip
    assert res.code == 0, res.err
    images, text = check_self_contained(html_path.read_text(encoding="utf-8"))
    assert len(images) == 1  # the samples' grid only
    assert "holds no images (a statistics file)" in text


def test_markdown_grid_png_is_planned_with_the_other_outputs(run_cli, copies, tmp_path):
    """--markdown writes NAME-grid.png beside it; an existing PNG is refused before the run
    without --force (nothing written), and replaced with it."""
    md = tmp_path / "r.md"
    png = tmp_path / "r-grid.png"
    png.write_bytes(b"old")
    args = ("run", "--samples", copies, "--reference", "digits:train", "--metrics", "fid")
    refused = run_cli(*args, "--markdown", md, "--quiet")
    assert refused.code == 2 and "r-grid.png" in refused.err and "--force" in refused.err
    assert not md.exists() and png.read_bytes() == b"old"
    done = run_cli(*args, "--markdown", md, "--grid", "9", "--quiet", "--force")
    assert done.code == 0, done.err
    assert "](r-grid.png)" in md.read_text(encoding="utf-8")
    with Image.open(png) as img:
        grid = np.asarray(img.convert("RGB"))
    samples = [torch.from_numpy(a) for a in np.load(tmp_path / "copies.npz")["images"][:9]]
    left = image_grid(samples)
    np.testing.assert_array_equal(grid[: left.shape[0], : left.shape[1]], left)
    assert grid.shape[1] > 2 * left.shape[1]  # the reference grid beside it


def test_markdown_to_stdout_has_no_grid_file(run_cli, copies, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = run_cli(
        "run", "--samples", copies, "--reference", "digits:train", "--metrics", "fid",
        "--markdown", "-", "--quiet",
    )  # fmt: skip
    assert res.code == 0 and res.out.startswith("# geneval report")
    assert "grid.png" not in res.out and not list(tmp_path.glob("*.png"))


def test_html_refused_without_force_and_written_atomically(run_cli, copies, tmp_path):
    html_path = tmp_path / "r.html"
    html_path.write_text("keep")
    args = ("run", "--samples", copies, "--reference", "digits:train", "--metrics", "fid")
    res = run_cli(*args, "--html", html_path, "--quiet")
    assert res.code == 2 and "--force" in res.err and html_path.read_text() == "keep"
    link = tmp_path / "link.html"
    link.symlink_to(html_path)
    res = run_cli(*args, "--html", link, "--quiet", "--force")
    assert res.code == 2 and "symbolic link" in res.err
    res = run_cli(*args, "--html", html_path, "--quiet", "--force")
    assert res.code == 0 and html_path.read_text().startswith("<!DOCTYPE html>")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".r.html")]


@pytest.mark.slow
def test_report_of_10000_samples_stays_under_5_mb(tmp_path):
    """10 000 samples of incompressible noise at the grid's largest cell size (64×64): the
    HTML report (two grids of 64 and the neighbour panel) stays under 5 MB."""
    from geneval.report.html import to_html

    rng = np.random.default_rng(0)
    samples = rng.integers(0, 256, size=(10_000, 64, 64, 3), dtype=np.uint8)
    reference = rng.integers(0, 256, size=(2_000, 64, 64, 3), dtype=np.uint8)
    evaluation = Evaluation(
        RunConfig(
            metrics=["fid"], samples=samples, reference=reference, extractor="digits-cnn",
            grid=64, neighbours=8, device="cpu", batch_size=500,
        )
    )  # fmt: skip
    report = evaluation.execute()
    report["passed"] = True
    page = to_html(report, evaluation.visuals)
    size = len(page.encode("utf-8"))
    images, _ = check_self_contained(page)
    assert len(images) == 2 + 8 * 5
    assert size < 5 * 1024 * 1024, size
