"""``lpips`` against the ``lpips`` package (0.1.4) on the same images and the same weights.

The published backbones cannot be downloaded here. Seeded random weights are written in the
published layouts instead: torchvision's ``features.*`` keys for the backbone, the package's
``lin{l}.model.1.weight`` keys for the linear layers. geneval reads them from files; the
package gets the same linear-layer file through ``model_path`` and the same backbone tensors
loaded into its ``net.slice*`` modules (built with ``pnet_rand=True``, so nothing is
downloaded): the package's ``sliceK.<i>.*`` is torchvision's ``features.<i>.*``.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import threading
import warnings
from pathlib import Path

import lpips as lpips_package
import numpy as np
import pytest
import torch
import torchvision

from geneval.api import PairedImages
from geneval.errors import InputError
from geneval.plugins import get_registry
from geneval_plugins.metrics.representation import lpips as lpips_metric
from geneval_plugins.metrics.representation.lpips import (
    BACKBONES,
    LearnedPerceptualSimilarity,
    load_lpips,
    locate_weights,
    lpips_distance,
)
from tests.stub_inputs import StubInputs, compute

NETS = ("alex", "vgg", "squeeze")
PACKAGE_WEIGHTS = Path(lpips_package.__file__).parent / "weights" / "v0.1"


def _random_backbone(net: str, seed: int) -> dict[str, torch.Tensor]:
    """He-scaled Gaussian weights and small biases under torchvision's ``features.*`` keys."""
    g = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        model = getattr(torchvision.models, BACKBONES[net].builder)(weights=None)
    state = {}
    for key, meta in model.state_dict().items():
        if key.startswith("features."):
            scale = (2.0 / meta[0].numel()) ** 0.5 if meta.ndim > 1 else 0.05
            state[key] = torch.randn(meta.shape, generator=g) * scale
    return state


def _random_linear(net: str, seed: int) -> dict[str, torch.Tensor]:
    """Non-negative weights (as the trained layers are) under the package's keys."""
    g = torch.Generator().manual_seed(seed)
    return {
        f"lin{i}.model.1.weight": torch.rand((1, c, 1, 1), generator=g)
        for i, c in enumerate(BACKBONES[net].channels)
    }


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    """``{net: {"backbone": path, "linear": path}}`` of seeded random weights."""
    folder = tmp_path_factory.mktemp("lpips-weights")
    out = {}
    for seed, net in enumerate(NETS):
        paths = {"backbone": folder / f"{net}-backbone.pth", "linear": folder / f"{net}-lin.pth"}
        torch.save(_random_backbone(net, seed), paths["backbone"])
        torch.save(_random_linear(net, 100 + seed), paths["linear"])
        out[net] = paths
    return out


@functools.cache
def _package(net: str, backbone: Path, linear: Path) -> lpips_package.LPIPS:
    """The package's LPIPS with the linear layers at ``linear`` and the backbone at ``backbone``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's deprecation of ``pretrained=``
        model = lpips_package.LPIPS(
            pretrained=True, net=net, model_path=str(linear), pnet_rand=True, verbose=False
        )
    state = torch.load(backbone, weights_only=True)
    model.net.load_state_dict(
        {k: state["features." + k.split(".", 1)[1]] for k in model.net.state_dict()}
    )
    return model.eval()


def package_lpips(net: str, paths: dict[str, Path], x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """The package's per-pair values: ``LPIPS(...)(x, y, normalize=True)`` in float32."""
    model = _package(net, paths["backbone"], paths["linear"])
    if x.shape[1] == 1:
        x, y = x.repeat(1, 3, 1, 1), y.repeat(1, 3, 1, 1)
    with torch.no_grad():
        return model(x.float(), y.float(), normalize=True).flatten().double().numpy()


def _pairs(n: int, channels: int, h: int, w: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Originals in [0, 1] and reconstructions: noisy copies, clipped to [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, channels, h, w, generator=g)
    noise = torch.linspace(0.02, 0.4, n).view(n, 1, 1, 1)
    y = (x + noise * torch.randn(x.shape, generator=g)).clamp(0, 1)
    return y, x


def _options(paths: dict[str, Path], net: str) -> dict[str, str]:
    return {"net": net, "weights": str(paths["linear"]), "backbone_weights": str(paths["backbone"])}


@pytest.mark.parametrize("net", NETS)
def test_equals_the_lpips_package(weights, net: str) -> None:
    recon, orig = _pairs(6, 3, 67, 45, seed=1)
    expected = package_lpips(net, weights[net], recon, orig)
    result = compute(
        LearnedPerceptualSimilarity(),
        StubInputs(reconstructions=PairedImages(recon, orig)),
        **_options(weights[net], net),
    )
    np.testing.assert_allclose(result["per_image"], expected, rtol=0, atol=1e-6)
    assert result["value"] == pytest.approx(expected.mean(), abs=1e-6)
    assert result["std_err"] == pytest.approx(expected.std(ddof=1) / np.sqrt(6), abs=1e-6)
    assert result["std"] == pytest.approx(expected.std(), abs=1e-6)
    assert result["n"] == 6 and result["net"] == net and result["version"] == "0.1"
    assert np.all(np.diff(expected) > 0)  # more noise, further apart: the inputs do differ
    digest = hashlib.sha256(weights[net]["linear"].read_bytes()).hexdigest()
    assert result["linear_sha256"] == digest


def test_grey_images_are_repeated_to_rgb(weights) -> None:
    recon, orig = _pairs(3, 1, 40, 33, seed=2)
    got = lpips_distance(recon, orig, load_lpips("alex", **_paths_kw(weights["alex"]))[0])
    np.testing.assert_allclose(
        got.numpy(), package_lpips("alex", weights["alex"], recon, orig), atol=1e-6
    )


def _paths_kw(paths: dict[str, Path]) -> dict[str, str]:
    return {"weights": str(paths["linear"]), "backbone_weights": str(paths["backbone"])}


def test_the_published_linear_layers_of_the_installed_package(weights, monkeypatch, tmp_path):
    """With no option, variable or hub file, the installed package's own v0.1 file is used
    (its sha256 is the published one), and equals the package's default layers."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("GENEVAL_LPIPS_ALEX_WEIGHTS", raising=False)
    recon, orig = _pairs(4, 3, 64, 64, seed=3)
    result = compute(
        LearnedPerceptualSimilarity(),
        StubInputs(reconstructions=PairedImages(recon, orig)),
        backbone_weights=str(weights["alex"]["backbone"]),
    )
    published = {"backbone": weights["alex"]["backbone"], "linear": PACKAGE_WEIGHTS / "alex.pth"}
    np.testing.assert_allclose(
        result["per_image"], package_lpips("alex", published, recon, orig), atol=1e-6
    )
    assert result["linear_sha256"] == BACKBONES["alex"].linear.sha256


@pytest.mark.parametrize("net", NETS)
def test_declared_linear_files_are_the_package_files(net: str) -> None:
    declared = BACKBONES[net].linear
    data = (PACKAGE_WEIGHTS / f"{net}.pth").read_bytes()
    assert declared.sha256 == hashlib.sha256(data).hexdigest()
    assert declared.size == len(data)
    assert declared.url.endswith(f"/lpips/weights/v0.1/{net}.pth")


def test_identical_pairs_are_zero(weights) -> None:
    _, orig = _pairs(3, 3, 48, 48, seed=4)
    for net in NETS:
        result = compute(
            LearnedPerceptualSimilarity(),
            StubInputs(reconstructions=PairedImages(orig, orig.clone())),
            **_options(weights[net], net),
        )
        assert result["per_image"] == [0.0, 0.0, 0.0]


def test_chunks_equal_one_batch(weights) -> None:
    recon, orig = _pairs(5, 3, 40, 40, seed=5)
    network, _ = load_lpips("vgg", **_paths_kw(weights["vgg"]))
    whole = lpips_distance(recon, orig, network, chunk=5)
    np.testing.assert_allclose(lpips_distance(recon, orig, network, chunk=2), whole, rtol=1e-12)


def test_smallest_accepted_side(weights) -> None:
    """Each net's ``min_side`` is the smallest side its last stage accepts."""
    for net in NETS:
        side = BACKBONES[net].min_side
        ok, _ = _pairs(1, 3, side, side + 5, seed=6)
        inputs = StubInputs(reconstructions=PairedImages(ok, ok))
        assert (
            compute(LearnedPerceptualSimilarity(), inputs, **_options(weights[net], net))["value"]
            == 0.0
        )
        network, _ = load_lpips(net, **_paths_kw(weights[net]))
        with pytest.raises(RuntimeError):  # one pixel less: the network itself fails
            network(ok[..., : side - 1, :], ok[..., : side - 1, :])
        small = StubInputs(
            reconstructions=PairedImages(ok[..., : side - 1, :], ok[..., : side - 1, :])
        )
        with pytest.raises(InputError, match=f"needs both sides ≥ {side} px"):
            compute(LearnedPerceptualSimilarity(), small, **_options(weights[net], net))


def _one_line_error(inputs: StubInputs, **options: str) -> str:
    with pytest.raises(InputError) as info:
        compute(LearnedPerceptualSimilarity(), inputs, **options)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_bad_input_is_one_line(weights, tmp_path) -> None:
    recon, orig = _pairs(2, 3, 48, 48, seed=7)
    good = StubInputs(reconstructions=PairedImages(recon, orig))
    alex = _options(weights["alex"], "alex")
    sizes = StubInputs(reconstructions=PairedImages(recon, orig[..., :40]))
    assert "differ in shape" in _one_line_error(sizes, **alex)
    nan = recon.clone()
    nan[1, 0, 3, 3] = float("nan")
    assert "non-finite" in _one_line_error(
        StubInputs(reconstructions=PairedImages(nan, orig)), **alex
    )
    # the vgg linear layers with the alex backbone: wrong shapes
    message = _one_line_error(good, **{**alex, "weights": str(weights["vgg"]["linear"])})
    assert "linear-layer layout" in message and "lin1.model.1.weight (1, 128, 1, 1)" in message
    # the alex backbone given for vgg
    message = _one_line_error(
        good,
        **{**_options(weights["vgg"], "vgg"), "backbone_weights": str(weights["alex"]["backbone"])},
    )
    assert "not torchvision's vgg16 key layout" in message
    # not a state dict at all, and a file that is not a torch file
    torch.save([1, 2, 3], tmp_path / "list.pth")
    (tmp_path / "text.pth").write_text("not weights\n")
    for bad in ("list.pth", "text.pth"):
        message = _one_line_error(good, **{**alex, "backbone_weights": str(tmp_path / bad)})
        assert bad in message
    # a linear file missing a layer, and one with an extra key
    layers = _random_linear("alex", 0)
    torch.save({k: v for k, v in layers.items() if k != "lin4.model.1.weight"}, tmp_path / "l.pth")
    assert "missing keys lin4.model.1.weight" in _one_line_error(
        good, **{**alex, "weights": str(tmp_path / "l.pth")}
    )
    torch.save({**layers, "net.slice1.0.weight": torch.zeros(1)}, tmp_path / "x.pth")
    assert "unknown keys net.slice1.0.weight" in _one_line_error(
        good, **{**alex, "weights": str(tmp_path / "x.pth")}
    )
    message = _one_line_error(good, **{**alex, "weights": str(tmp_path / "absent.pth")})
    assert message.startswith("--opt lpips.weights: ") and "does not exist" in message
    with pytest.raises(InputError, match="net=resnet"):
        compute(LearnedPerceptualSimilarity(), good, net="resnet")


def test_full_torchvision_state_dict_is_accepted(weights, tmp_path) -> None:
    """The published backbone files hold the classifier too; it is read and left unused."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        full = torchvision.models.squeezenet1_1(weights=None).state_dict()
    full.update(_random_backbone("squeeze", 2))
    torch.save(full, tmp_path / "squeezenet1_1-b8a52dc0.pth")
    network, _ = load_lpips(
        "squeeze",
        weights=str(weights["squeeze"]["linear"]),
        backbone_weights=str(tmp_path / "squeezenet1_1-b8a52dc0.pth"),
    )
    recon, orig = _pairs(2, 3, 32, 32, seed=8)
    np.testing.assert_allclose(
        lpips_distance(recon, orig, network).numpy(),
        package_lpips("squeeze", weights["squeeze"], recon, orig),
        atol=1e-6,
    )


def test_lookup_order(weights, monkeypatch, tmp_path) -> None:
    """The option, then the variable, then the hub cache, then the installed package."""
    spec = BACKBONES["alex"]
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    monkeypatch.delenv(spec.linear.env, raising=False)
    hub = tmp_path / "home" / "hub" / "checkpoints"
    assert locate_weights(spec.linear, "", "--opt lpips.weights", net="alex") == (
        PACKAGE_WEIGHTS / "alex.pth"
    )
    hub.mkdir(parents=True)
    (hub / spec.linear.filename).write_bytes((PACKAGE_WEIGHTS / "alex.pth").read_bytes())
    assert locate_weights(spec.linear, "", "--opt lpips.weights", net="alex") == (
        hub / spec.linear.filename
    )
    monkeypatch.setenv(spec.linear.env, str(weights["alex"]["linear"]))
    assert (
        locate_weights(spec.linear, "", "--opt lpips.weights", net="alex")
        == (weights["alex"]["linear"])
    )
    given = weights["vgg"]["linear"]
    assert locate_weights(spec.linear, str(given), "--opt lpips.weights", net="alex") == given


def test_download_into_the_hub_cache(monkeypatch, tmp_path) -> None:
    """With the file nowhere, it is fetched from its URL (here a local server) into the hub
    cache, its sha256 checked; a server with other bytes leaves nothing behind."""
    served = tmp_path / "served"
    served.mkdir()
    (served / "alex.pth").write_bytes((PACKAGE_WEIGHTS / "alex.pth").read_bytes())
    (served / "bad.pth").write_bytes(b"other bytes")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
        monkeypatch.delenv("GENEVAL_LPIPS_ALEX_WEIGHTS", raising=False)
        monkeypatch.setattr(lpips_metric, "installed_package_file", lambda file, net: None)
        from dataclasses import replace

        base = f"http://127.0.0.1:{server.server_address[1]}"
        bad = replace(BACKBONES["alex"].linear, url=f"{base}/bad.pth")
        with pytest.raises(InputError, match="does not match the published") as info:
            locate_weights(bad, "", "--opt lpips.weights", net="alex")
        assert "--opt lpips.weights=PATH" in str(info.value)
        hub = tmp_path / "home" / "hub" / "checkpoints"
        assert not any(hub.iterdir())
        good = replace(BACKBONES["alex"].linear, url=f"{base}/alex.pth")
        path = locate_weights(good, "", "--opt lpips.weights", net="alex")
        assert path == hub / "lpips-v0.1-alex-df73285e.pth"
        assert path.read_bytes() == (PACKAGE_WEIGHTS / "alex.pth").read_bytes()
    finally:
        server.shutdown()
        server.server_close()


def test_registered() -> None:
    metric = get_registry().metric("lpips")
    assert metric.higher_is_better is False and metric.uncertainty == "std_err"
    assert metric.options["net"].default == "alex"
    names = {file.name for file in metric.published_weights}
    assert names == {
        "lpips-alex",
        "lpips-vgg",
        "lpips-squeeze",
        "alexnet",
        "vgg16",
        "squeezenet1_1",
    }


def test_geneval_run_equals_the_package(weights, run_cli, monkeypatch, tmp_path) -> None:
    """``geneval run --samples recon.npz --reference orig.npz --metrics lpips``, the weights
    named by their environment variables."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GENEVAL_LPIPS_ALEX_WEIGHTS", str(weights["alex"]["linear"]))
    monkeypatch.setenv("GENEVAL_ALEXNET_WEIGHTS", str(weights["alex"]["backbone"]))
    recon, orig = _pairs(5, 3, 64, 56, seed=9)
    as_uint8 = lambda t: np.round(t.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)  # noqa: E731
    np.savez(tmp_path / "recon.npz", images=as_uint8(recon))
    np.savez(tmp_path / "orig.npz", images=as_uint8(orig))
    out = tmp_path / "report.json"
    res = run_cli(
        "run", "--samples", tmp_path / "recon.npz", "--reference", tmp_path / "orig.npz",
        "--metrics", "lpips", "--json", out, "--quiet",
    )  # fmt: skip
    assert res.code == 0, res.err
    metric = json.loads(out.read_text())["metrics"]["lpips"]
    to_float = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255  # noqa: E731
    expected = package_lpips(
        "alex", weights["alex"], to_float(as_uint8(recon)), to_float(as_uint8(orig))
    )
    np.testing.assert_allclose(metric["per_image"], expected, atol=1e-6)
    assert metric["value"] == pytest.approx(expected.mean(), abs=1e-6)
    assert metric["n"] == 5 and metric["net"] == "alex"
    # images of different sizes: exit 2, one line
    np.savez(tmp_path / "small.npz", images=as_uint8(orig)[:, :40])
    res = run_cli(
        "run", "--samples", tmp_path / "recon.npz", "--reference", tmp_path / "small.npz",
        "--metrics", "lpips", "--json", tmp_path / "bad.json", "--quiet",
    )  # fmt: skip
    assert res.code == 2 and len(res.err_lines) == 1, res.err
    assert "lpips" in res.err or "shape" in res.err
