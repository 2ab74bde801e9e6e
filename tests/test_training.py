"""The one training loop (``geneval.training``) and checkpoint layout, for every model family.

Tiny networks trained for a few steps through ``geneval train`` (in-process): an interrupted
run resumed with ``--resume`` equals the uninterrupted run tensor for tensor, the checkpoint
has the one layout, options are checked before any work, and a family trains on a folder or an
array of the user's own images whose size and channels come from the data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from geneval.checkpoint import CONFIG_KEYS, PREFIXES, load_checkpoint
from geneval.errors import InputError
from geneval.plugins import get_registry
from geneval.sources import ArraySource, FolderSource
from geneval.training import MinibatchStream, images_from_source

#: ``--opt`` of a network small enough to train a few steps in a test, per family (``ebm`` also
#: with contrastive divergence and a replay buffer, ``rbm`` also with persistent CD).
TINY = {
    "rbm": ["hidden=8"],
    "rbm-pcd": ["hidden=8", "method=pcd", "k=2"],
    "grbm": ["hidden=8", "sigma=0.2"],
    "ebm": ["channels=4", "langevin_steps=2", "data_noise=0.01", "spectral_norm=true"],
    "ebm-cd": [
        "objective=cd",
        "channels=4",
        "langevin_steps=2",
        "buffer_size=64",
        "step_size=1",
        "noise_scale=0.007",
    ],
    "ebm-annealed": ["channels=4", "noise_levels=3", "sample_steps=2"],
    "ddpm": ["base_channels=8", "timesteps=20", "dropout=0.1", "warmup=2", "batch_size=32"],
    "ncsn": ["base_channels=8", "channel_mults=1,2", "batch_size=32"],
    "vae": ["latent_dim=2", "channels=4", "hidden=8", "beta=2"],
}
FAMILIES = sorted(name for name in TINY if "-" not in name)


def _family(variant: str) -> str:
    return variant.split("-")[0]


def _train(run_cli, name: str, out: Path, *args: object, dataset: object = "digits"):
    options = [x for opt in TINY[name] for x in ("--opt", opt)]
    return run_cli(
        "train",
        "--model",
        _family(name),
        "--dataset",
        dataset,
        "-o",
        out,
        "--quiet",
        *options,
        *args,
    )


def _tensors_equal(a: Path, b: Path) -> None:
    ta, tb = (
        load_checkpoint(a, family=a.stem.split("-")[0]),
        load_checkpoint(b, family=b.stem.split("-")[0]),
    )
    assert ta.tensors.keys() == tb.tensors.keys()
    for key in ta.tensors:
        assert torch.equal(ta.tensors[key], tb.tensors[key]), key


@pytest.mark.parametrize("name", sorted(TINY))
def test_resume_equals_an_uninterrupted_run(run_cli, tmp_path, name):
    """``--steps 6`` equals ``--steps 3`` then ``--resume --steps 6``, tensor for tensor."""
    whole, part = tmp_path / f"{name}-whole.safetensors", tmp_path / f"{name}-part.safetensors"
    assert _train(run_cli, name, whole, "--steps", 6, "--seed", 4).code == 0
    assert _train(run_cli, name, part, "--steps", 3, "--seed", 4).code == 0
    resumed = run_cli(
        "train",
        "--model",
        _family(name),
        "--dataset",
        "digits",
        "-o",
        part,
        "--resume",
        "--steps",
        6,
    )
    assert resumed.code == 0, resumed.err
    assert "trained to step 6" in resumed.err  # the closing line with the final loss
    _tensors_equal(whole, part)
    ckpt = load_checkpoint(part, family=_family(name))
    assert ckpt.train["steps_done"] == 6 and ckpt.train["seed"] == 4
    if name == "ebm-cd":
        assert ckpt.group("state")["buffer"].shape == (64, 1, 8, 8)
    if name == "rbm-pcd":
        assert ckpt.group("state")["chains"].shape == (100, 64)
    assert len(ckpt.train["commands"]) == 2  # the command line of each run (sys.argv)


@pytest.mark.parametrize("name", FAMILIES)
def test_one_checkpoint_layout(run_cli, tmp_path, name):
    out = tmp_path / f"{name}.safetensors"
    assert _train(run_cli, name, out, "--steps", 2).code == 0
    ckpt = load_checkpoint(out, family=name)
    assert set(ckpt.config) == set(CONFIG_KEYS)
    assert ckpt.image_shape == (1, 8, 8) and ckpt.sampling["sampler"] in ckpt.sampling
    assert {"seed", "steps_done", "options", "data", "commands"} <= set(ckpt.train)
    assert ckpt.train["data"]["count"] == 1257
    declared = get_registry().model(name).train_options
    assert set(ckpt.train["options"]) == set(declared)
    prefixes = {key.split(".", 1)[0] for key in ckpt.tensors}
    assert prefixes <= set(PREFIXES) and {"net", "opt", "rng", "state"} <= prefixes
    assert {"data_generator", "data_order", "data_position"} <= set(ckpt.group("state"))
    assert ("ema" in prefixes) == ("ema_decay" in declared)
    # weights only: what sampling needs, and --resume refuses it
    small = tmp_path / f"{name}-small.safetensors"
    assert (
        _train(run_cli, name, small, "--steps", 2, "--opt", "save_training_state=false").code == 0
    )
    kept = {key.split(".", 1)[0] for key in load_checkpoint(small, family=name).tensors}
    assert kept == ({"ema"} if "ema" in prefixes else {"net"})
    res = run_cli(
        "train", "--model", name, "--dataset", "digits", "-o", small, "--resume", "--steps", 4
    )
    assert res.code == 2 and "sampling weights only" in res.err
    family = get_registry().model(name)
    model = family.load(small, device=torch.device("cpu"))
    # the family's declared capabilities are protocols its models satisfy
    assert family.capabilities and all(isinstance(model, p) for p in family.capabilities)
    assert not hasattr(model, "capabilities")
    assert model.sample(2, batch_size=2, generator=torch.Generator()).shape == (2, 1, 8, 8)


def test_options_are_checked_before_any_work(run_cli, tmp_path, monkeypatch):
    def no_data(*args, **kwargs):
        raise AssertionError("the data were loaded before the options were checked")

    monkeypatch.setattr("geneval.training.images_from_source", no_data)
    out = tmp_path / "m.safetensors"
    cases = {
        "batch_size=0": "--opt batch_size=0",
        "lr=-1": "--opt lr=-1",
        "ema_decay=1": "--opt ema_decay=1",
        "method=sgd": "--opt method=sgd",
        "nonsense=1": "nonsense",
    }
    for opt, culprit in cases.items():
        model = "ddpm" if opt.startswith("ema") else "rbm"
        res = run_cli("train", "--model", model, "--dataset", "digits", "-o", out, "--opt", opt)
        assert res.code == 2 and culprit in res.err_lines[0], (opt, res.err)
        assert len(res.err_lines) == 1 and not out.exists()


def test_resume_guards(run_cli, tmp_path):
    out = tmp_path / "rbm.safetensors"
    assert _train(run_cli, "rbm", out, "--steps", 2).code == 0
    base = ["train", "--model", "rbm", "-o", out, "--resume", "--steps", 4]
    res = run_cli(*base, "--dataset", "digits", "--opt", "hidden=9")
    assert res.code == 2 and "hidden" in res.err and "cannot change" in res.err
    res = run_cli(*base, "--dataset", "digits:test")
    assert res.code == 2 and "training data differ" in res.err
    res = run_cli(*base[:-2], "--steps", 2, "--dataset", "digits")
    assert res.code == 2 and "already has 2 steps" in res.err
    res = run_cli(*base[:3], "-o", tmp_path / "none.safetensors", "--resume", "--dataset", "digits")
    assert res.code == 2 and "does not exist" in res.err
    # options that do not fix the architecture may change on resume
    res = run_cli(*base, "--dataset", "digits", "--opt", "lr=2e-3", "--opt", "sample_steps=7")
    assert res.code == 0, res.err
    ckpt = load_checkpoint(out, family="rbm")
    assert ckpt.train["options"]["lr"] == 2e-3 and ckpt.train["options"]["hidden"] == 8
    assert ckpt.sampling["gibbs"]["steps"] == 7


def test_checkpoint_every_writes_intermediate_checkpoints(run_cli, tmp_path, monkeypatch):
    import geneval.training as training

    written: list[int] = []
    save = training.save_checkpoint

    def record(path, checkpoint, *, force):
        written.append(checkpoint.train["steps_done"])
        return save(path, checkpoint, force=force)

    monkeypatch.setattr(training, "save_checkpoint", record)
    out = tmp_path / "rbm.safetensors"
    assert _train(run_cli, "rbm", out, "--steps", 7, "--checkpoint-every", 3).code == 0
    assert written == [3, 6, 7]
    res = run_cli(
        "train",
        "--model",
        "rbm",
        "--dataset",
        "digits",
        "-o",
        tmp_path / "x",
        "--checkpoint-every",
        -1,
    )
    assert res.code == 2 and "checkpoint_every" in res.err


def test_sampler_errors_are_exit_2(run_cli, tmp_path):
    res = run_cli(
        "sample",
        "--model",
        "ddpm",
        "-n",
        2,
        "-o",
        tmp_path / "s.npz",
        "--sampler",
        "ancestral",
        "--steps",
        10,
    )
    assert res.code == 2 and "ancestral" in res.err and len(res.err_lines) == 1
    res = run_cli("sample", "--model", "rbm", "-n", 2, "-o", tmp_path / "s.npz", "--steps", 0)
    assert res.code == 2 and "steps" in res.err


# -- the user's own data -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def rgb_crops(tmp_path_factory) -> Path:
    """A folder of 16×16 RGB crops of scikit-image's astronaut photograph."""
    from skimage import data

    photo = data.astronaut()
    folder = tmp_path_factory.mktemp("crops")
    for i in range(24):
        y, x = divmod(i, 6)
        crop = photo[100 + 40 * y : 116 + 40 * y, 120 + 40 * x : 136 + 40 * x]
        Image.fromarray(crop).save(folder / f"crop{i:02d}.png")
    return folder


def test_ddpm_trains_on_a_folder_of_rgb_crops(run_cli, rgb_crops, tmp_path):
    out = tmp_path / "ddpm-crops.safetensors"
    res = run_cli(
        "train",
        "--model",
        "ddpm",
        "--dataset",
        rgb_crops,
        "-o",
        out,
        "--steps",
        3,
        "--quiet",
        "--opt",
        "base_channels=8",
        "--opt",
        "timesteps=20",
        "--opt",
        "batch_size=8",
    )
    assert res.code == 0, res.err
    ckpt = load_checkpoint(out, family="ddpm")
    assert ckpt.image_shape == (3, 16, 16)
    assert ckpt.arch["channel_mults"] == [1, 2, 2, 2]  # 16 → 8 → 4 → 2
    assert ckpt.train["data"]["count"] == 24
    samples = tmp_path / "samples.npz"
    assert (
        run_cli(
            "sample", "--model", "ddpm", "--checkpoint", out, "-n", 3, "-o", samples, "--steps", 4
        ).code
        == 0
    )
    with np.load(samples) as data:
        assert data["images"].shape == (3, 16, 16, 3)


def test_ebm_trains_on_an_array_and_scales_its_convolutions(run_cli, rgb_crops, tmp_path):
    images = images_from_source(FolderSource(rgb_crops)).images
    array = tmp_path / "crops.npy"
    np.save(array, (images.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8))
    out = tmp_path / "ebm-crops.safetensors"
    res = run_cli(
        "train",
        "--model",
        "ebm",
        "--dataset",
        array,
        "-o",
        out,
        "--steps",
        2,
        "--quiet",
        "--opt",
        "channels=4",
        "--opt",
        "langevin_steps=2",
        "--opt",
        "batch_size=8",
    )
    assert res.code == 0, res.err
    model = get_registry().model("ebm").load(out, device=torch.device("cpu"))
    assert model.image_shape == (3, 16, 16)
    strided = [m for m in model.net.body if getattr(m, "stride", (1,))[0] == 2]
    assert len(strided) == 3  # 16 → 8 → 4 → 2
    x = model.sample(2, batch_size=2, generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, 3, 16, 16)


def test_images_from_source_keeps_grey_folders_grey_and_refuses_mixed_sizes(tmp_path):
    grey = tmp_path / "grey"
    grey.mkdir()
    for i in range(3):
        Image.fromarray(np.full((5, 6), 40 * i, dtype=np.uint8)).save(grey / f"{i}.png")
    images = images_from_source(FolderSource(grey)).images
    assert images.shape == (3, 1, 5, 6)
    torch.testing.assert_close(images[2, 0, 0, 0], torch.tensor(80 / 255))
    Image.fromarray(np.zeros((7, 7, 3), dtype=np.uint8)).save(grey / "odd.png")
    with pytest.raises(InputError, match="one size"):
        images_from_source(FolderSource(grey))
    array = tmp_path / "a.npz"
    np.savez(array, images=np.random.default_rng(0).random((4, 3, 5, 5)).astype(np.float32))
    assert images_from_source(ArraySource(array)).images.shape == (4, 3, 5, 5)


def test_images_from_source_keeps_the_labels_and_factors_the_source_carries(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.int64)
    factors = rng.integers(0, 4, size=(5, 2)).astype(np.int64)
    array = tmp_path / "labelled.npz"
    np.savez(array, images=rng.random((5, 1, 4, 4)).astype(np.float32), labels=labels,
             factors=factors)  # fmt: skip
    data = images_from_source(ArraySource(array), batch_size=2)
    assert data.labels is not None and data.factors is not None
    assert data.labels.tolist() == labels.tolist()
    assert data.factors.tolist() == factors.tolist()
    assert data.latents is None
    unlabelled = tmp_path / "plain.npz"
    np.savez(unlabelled, images=rng.random((2, 1, 4, 4)).astype(np.float32))
    assert images_from_source(ArraySource(unlabelled)).labels is None


def test_minibatch_stream_restores_exactly():
    data = torch.arange(10)
    stream = MinibatchStream(data, 4, torch.Generator().manual_seed(0))
    seen = [next(stream) for _ in range(3)]
    # epochs without replacement: two batches of 4 per epoch, the last 2 images skipped
    assert len(torch.cat(seen[:2]).unique()) == 8
    state = stream.state_dict()
    ahead = [next(stream) for _ in range(5)]
    again = MinibatchStream(data, 4, torch.Generator().manual_seed(123))
    again.load_state_dict(state)
    assert all(
        torch.equal(a, b) for a, b in zip(ahead, [next(again) for _ in range(5)], strict=True)
    )
