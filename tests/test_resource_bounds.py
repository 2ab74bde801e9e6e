"""Bounded resources, checked before any work (issue 21, "Resources"):

* a folder's batches are bounded in decoded pixels (``FOLDER_BATCH_PIXELS``), read from the
  files' headers, not in images; an image over the whole budget is refused naming the file;
* a checkpoint's config is checked (types, nesting, bounds) and the network it describes is
  compared with the tensors the file holds before anything is allocated;
* dataset split sizes are bounded (``dsprites:test,n=N``);
* ``geneval sample`` checks the output's size up front and streams uint8 blocks to it, with the
  same samples as before for the same seed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

import geneval.sources as sources
from geneval.errors import InputError
from geneval.plugins import get_registry
from geneval.sources import FolderSource, ModelSource, budget_parts, decode_image
from tests.fake_plugins import FakePlugins, ToyNoiseModel


@pytest.fixture
def fake(add_plugin) -> FakePlugins:
    plugins = FakePlugins()
    add_plugin(plugins)
    return plugins


def _ru_maxrss_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


# -- folders: one pixel budget per batch -------------------------------------------------------


@given(
    pixels=st.lists(st.integers(min_value=0, max_value=5000), max_size=40),
    budget=st.integers(min_value=1, max_value=10_000),
)
@settings(max_examples=100, deadline=None)
def test_budget_parts_cover_the_batch_in_order_within_the_budget(pixels, budget):
    parts = budget_parts(pixels, budget)
    assert [i for part in parts for i in part] == list(range(len(pixels)))  # all, in order
    for part in parts:
        assert len(part) >= 1
        assert sum(pixels[i] for i in part) <= budget or len(part) == 1
    if sum(pixels) <= budget and pixels:
        assert len(parts) == 1  # a batch within the budget is never cut
    for before, after in zip(parts, parts[1:], strict=False):  # greedy: no part could take more
        assert sum(pixels[i] for i in before) + pixels[after[0]] > budget


def _write_folder(folder: Path, sizes: list[tuple[int, int]]) -> list[Path]:
    folder.mkdir()
    rng = np.random.default_rng(0)
    paths = []
    for i, (w, h) in enumerate(sizes):
        path = folder / f"{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def _flatten(batches) -> list[torch.Tensor]:
    out = []
    for batch in batches:
        out.extend(batch if isinstance(batch, list) else list(batch))
    return out


@pytest.mark.parametrize("workers", [0, 2])
def test_folder_batches_are_cut_by_decoded_pixels(tmp_path, monkeypatch, workers):
    sizes = [(10, 10)] * 5 + [(20, 15)] * 3 + [(10, 10)] * 4
    paths = _write_folder(tmp_path / "imgs", sizes)
    expected = [decode_image(p).pixels.float() / 255 for p in paths]
    source = FolderSource(tmp_path / "imgs")
    cpu = torch.device("cpu")
    whole = list(source.batches(8, cpu, workers))
    assert [len(b) for b in whole] == [8, 4]  # within the default budget: batches unchanged

    budget = 350  # pixels: three 10×10 images, or one 20×15 image
    monkeypatch.setattr(sources, "FOLDER_BATCH_PIXELS", budget)
    cut = list(source.batches(8, cpu, workers))
    for batch in cut:
        images = batch if isinstance(batch, list) else list(batch)
        assert sum(im.shape[-1] * im.shape[-2] for im in images) <= budget
    # parts never straddle two batches of 8 (shards begin at batch boundaries)
    assert [len(b) for b in cut] == [3, 2, 1, 1, 1, 3, 1]
    got = _flatten(cut)
    assert len(got) == len(expected)
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))
    # a shard that starts at the second batch makes the same parts as a whole pass
    shard = list(source.batches(8, cpu, workers, start=8))
    assert [len(b) for b in shard] == [3, 1]


def test_an_image_over_the_whole_budget_is_refused_naming_it(fake, run_cli, tmp_path):
    folder = tmp_path / "big"
    folder.mkdir()
    Image.new("L", (8, 8)).save(folder / "small.png")
    # 9000 × 8000 = 72 M pixels: under PIL's decompression-bomb limit, over the batch budget
    Image.new("L", (9000, 8000)).save(folder / "huge.png")
    assert 9000 * 8000 > sources.FOLDER_BATCH_PIXELS
    assert 9000 * 8000 < Image.MAX_IMAGE_PIXELS
    res = run_cli(
        "run", "--samples", folder, "--metrics", "feat-mean", "--extractor", "counting",
        "--json", tmp_path / "r.json",
    )  # fmt: skip
    assert res.code == 2, res.err
    assert len(res.err_lines) == 1 and "huge.png" in res.err and "one batch" in res.err
    assert "Traceback" not in res.err and not (tmp_path / "r.json").exists()


_PEAK_SCRIPT = textwrap.dedent(
    """
    import resource, sys
    from pathlib import Path
    import torch
    from geneval.sources import FolderSource
    source = FolderSource(Path(sys.argv[1]))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    count = 0
    for batch in source.batches(64, torch.device("cpu"), 0):
        count += len(batch)
        del batch
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(count, (after - before) * 1024)
    """
)


def test_a_batch_of_large_legal_images_stays_within_the_pixel_budget(tmp_path):
    """Three 6000×6000 PNGs (36 M pixels each, 60 kB as files, legal for PIL) in one batch of
    64: decoded together they would take about 2 GB (uint8 list, stacked copy, float32); cut by
    the pixel budget, one at a time. Stated bound: 16 bytes per pixel of the budget (uint8 RGB
    pixels, PIL's working copy, their float32 conversion), here 1 GiB, measured as the growth
    of the decoding process's peak resident memory."""
    folder = tmp_path / "large"
    folder.mkdir()
    for i in range(3):
        image = Image.new("L", (6000, 6000), color=40 * i)
        image.paste(255, (100 * i, 100, 100 * i + 500, 600))
        image.save(folder / f"{i}.png")
    assert max(p.stat().st_size for p in folder.iterdir()) < 200_000
    out = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT, str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert out.returncode == 0, out.stderr
    count, growth = (int(v) for v in out.stdout.split())
    assert count == 3
    bound = 16 * sources.FOLDER_BATCH_PIXELS
    assert growth < bound, f"peak resident memory grew by {growth / 2**20:.0f} MiB"


# -- checkpoints: config checked before anything is allocated ----------------------------------


def _bundled(name: str) -> tuple[dict, dict[str, torch.Tensor]]:
    source = get_registry().model(name).bundled_checkpoint
    with safe_open(str(source), "pt") as handle:
        metadata = dict(handle.metadata())
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    return json.loads(metadata["geneval"]), tensors


def _checkpoint(path: Path, header, tensors: dict[str, torch.Tensor]) -> Path:
    text = header if isinstance(header, str) else json.dumps(header)
    save_file(tensors, str(path), metadata={"geneval": text})
    return path


def _edited(config: dict, keys: tuple[str, ...], value) -> dict:
    config = json.loads(json.dumps(config))
    cursor = config
    for key in keys[:-1]:
        cursor = cursor[key]
    cursor[keys[-1]] = value
    return config


BAD_CONFIGS = [
    # (family, keys, value, words of the message)
    ("rbm", ("arch", "hidden"), 10**9, "parameters and buffers"),
    ("rbm", ("arch", "hidden"), {"nested": [1]}, "arch.hidden"),
    ("rbm", ("arch", "hidden"), "many", "arch.hidden"),
    ("rbm", ("arch", "hidden"), 17, "does not match its config"),
    ("rbm", ("arch",), [1, 2], "config arch"),
    ("rbm", ("image_shape",), [1, 10**6, 10**6], "image_shape"),
    ("rbm", ("image_shape",), [1, 8, [8]], "image_shape"),
    ("rbm", ("sampling", "gibbs", "steps"), 10**12, "steps"),
    ("rbm", ("sampling", "gibbs"), "fast", "sampling.gibbs"),
    ("rbm", ("sampling", "gibbs", "bogus"), 1, "bogus"),
    ("rbm", ("train", "seed"), "zero", "train.seed"),
    ("grbm", ("arch", "sigma"), [0.3], "sigma"),
    ("ddpm", ("arch", "timesteps"), 10**9, "arch.timesteps"),
    ("ddpm", ("arch", "channel_mults"), [10**6, 2], "parameters and buffers"),
    ("ddpm", ("arch", "base_channels"), -4, "arch.base_channels"),
    ("vae", ("arch", "latent_dim"), 10**18, "does not fit"),
    ("vae", ("arch", "decoder"), "bernoulli", "does not match its config"),
]


@pytest.mark.parametrize(
    ("family", "keys", "value", "words"),
    BAD_CONFIGS,
    ids=[f"{f}-{'.'.join(k)}-{str(v)[:12]}" for f, k, v, _ in BAD_CONFIGS],
)
def test_bad_checkpoint_configs_are_exit_2_before_allocating(
    family, keys, value, words, run_cli, tmp_path
):
    config, tensors = _bundled(family)
    path = _checkpoint(tmp_path / "bad.safetensors", _edited(config, keys, value), tensors)
    before = _ru_maxrss_bytes()
    res = run_cli(
        "sample", "--model", family, "--checkpoint", path, "-n", 2, "-o", tmp_path / "s.npz"
    )
    assert res.code == 2, res.err
    assert len(res.err_lines) == 1 and "Traceback" not in res.err
    assert "bad.safetensors" in res.err and words in res.err, res.err
    assert not (tmp_path / "s.npz").exists()
    assert _ru_maxrss_bytes() - before < 256 * 2**20


def test_train_refuses_a_network_over_the_bound_before_allocating(run_cli, tmp_path):
    before = _ru_maxrss_bytes()
    res = run_cli(
        "train", "--model", "rbm", "--dataset", "digits", "-o", tmp_path / "r.safetensors",
        "--steps", 1, "--opt", "hidden=1000000000", "--opt", "method=pcd",
    )  # fmt: skip
    assert res.code == 2, res.err
    assert "parameters and buffers" in res.err and len(res.err_lines) == 1
    assert _ru_maxrss_bytes() - before < 256 * 2**20
    assert not (tmp_path / "r.safetensors").exists()


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)
_TOP_KEYS = ("family", "arch", "image_shape", "sampling", "train")
_FUZZED = ("rbm", "ddpm", "vae", "ebm")


@st.composite
def _mutated_config(draw, config: dict) -> dict | str:
    """The bundled config with random values replaced, keys removed or added, or no object."""
    if draw(st.integers(0, 19)) == 0:  # now and then not an object at all, or deep nesting
        return draw(
            st.sampled_from(["[]", "5", '"x"', "null", "[" * 5000 + "]" * 5000, "{" * 3000])
        )
    config = json.loads(json.dumps(config))
    for _ in range(draw(st.integers(1, 3))):
        section = draw(st.sampled_from(_TOP_KEYS))
        action = draw(st.sampled_from(["replace", "delete", "inner", "inner", "inner"]))
        if action == "replace":
            config[section] = draw(_JSON)
        elif action == "delete":
            config.pop(section, None)
        elif isinstance(config.get(section), dict) and config[section]:
            key = draw(st.sampled_from(sorted(config[section])))
            if draw(st.booleans()):
                config[section][key] = draw(
                    _JSON | st.integers(min_value=-(2**40), max_value=2**62)
                )
            else:
                config[section].pop(key)
        elif section == "image_shape":
            config[section] = draw(st.lists(st.integers(-5, 2**40), max_size=4))
    return config


@pytest.mark.parametrize("family", _FUZZED)
def test_any_checkpoint_config_loads_or_is_input_error_within_budget(family, tmp_path):
    """Property: whatever JSON a checkpoint's config holds (random types, nesting, huge
    numbers, missing keys), loading it gives a model whose sampler can be made, or an
    InputError — never another exception — within a memory budget: 64 MiB traced by
    tracemalloc (Python and numpy) and 512 MiB of process peak (torch included)."""
    config, tensors = _bundled(family)
    registry = get_registry()
    model_family = registry.model(family)
    cpu = torch.device("cpu")
    budget_traced, budget_rss = 64 * 2**20, 512 * 2**20
    rss_before = _ru_maxrss_bytes()
    outcomes: set[str] = set()

    @given(header=_mutated_config(config))
    @settings(
        max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    def check(header):
        path = _checkpoint(tmp_path / "fuzz.safetensors", header, tensors)
        tracemalloc.start()
        try:
            model = model_family.load(path, device=cpu)
            model.make_sampler()
            outcomes.add("loaded")
        except InputError as exc:
            assert "\n" not in str(exc)
            outcomes.add("refused")
        finally:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        assert peak < budget_traced, peak

    check()
    assert _ru_maxrss_bytes() - rss_before < budget_rss
    assert "refused" in outcomes


def test_a_loaded_checkpoint_is_unchanged_by_the_checks():
    """The bundled checkpoints pass the checks, and load to the same weights as before."""
    for name in ("rbm", "grbm", "ddpm", "ncsn", "vae", "ebm"):
        model_family = get_registry().model(name)
        config, tensors = _bundled(name)
        model = model_family.load(None, device=torch.device("cpu"))
        assert model.image_shape == tuple(config["image_shape"])


# -- dataset splits ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("split", "words"),
    [
        ("test,n=1000000000000", "100000"),
        ("test,n=100001", "100000"),
        ("test,n=²", "cannot read"),
        ("test,n=" + "9" * 5000, "cannot read"),
        ("grid,x/" + "1" * 30, "cannot read"),
    ],
)
def test_dsprites_split_sizes_are_bounded(split, words):
    from geneval_plugins.datasets.dsprites import parse_split

    tracemalloc.start()
    try:
        with pytest.raises(InputError) as caught:
            get_registry().dataset("dsprites").load(split)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert words in str(caught.value) and "\n" not in str(caught.value)
    assert peak < 16 * 2**20
    assert parse_split("test,n=100000").n == 100_000  # the bound itself is allowed


def test_dsprites_huge_split_on_the_command_line_is_exit_2(run_cli, tmp_path):
    res = run_cli(
        "run", "--samples", "dsprites:test,n=1000000000000", "--metrics", "fid",
        "--json", tmp_path / "r.json",
    )  # fmt: skip
    assert res.code == 2 and len(res.err_lines) == 1, res.err
    assert "n=1000000000000" in res.err and "100000" in res.err


# -- geneval sample: checked up front, streamed in uint8 ---------------------------------------


def _old_way(n: int, batch: int, seed: int) -> np.ndarray:
    """What ``geneval sample`` wrote before streaming: every block in float, then uint8."""
    source = ModelSource("m", ToyNoiseModel(), n, seed=seed, batch_size=batch)
    images = torch.cat([b.cpu() for b in source.batches(0, torch.device("cpu"), 0)])
    return (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def test_sample_streams_the_same_samples_as_before(fake, run_cli, tmp_path, monkeypatch):
    expected = _old_way(23, 5, 7)
    res = run_cli(
        "sample", "--model", "toy-noise", "-n", 23, "--batch-size", 5, "--seed", 7,
        "-o", tmp_path / "s.npz", "--quiet",
    )  # fmt: skip
    assert res.code == 0, res.err
    with np.load(tmp_path / "s.npz") as data:
        assert list(data.files) == ["images"]
        assert data["images"].dtype == np.uint8
        assert np.array_equal(data["images"], expected)

    # the PNGs are written block by block: when block k is drawn, k blocks are on disk
    out = tmp_path / "pngs"
    seen: list[int] = []
    real = ToyNoiseModel.sample

    def counting(self, n, **kwargs):
        seen.append(len(list(out.glob(".geneval-staging-*/*.png"))))
        return real(self, n, **kwargs)

    monkeypatch.setattr(ToyNoiseModel, "sample", counting)
    res = run_cli(
        "sample", "--model", "toy-noise", "-n", 23, "--batch-size", 5, "--seed", 7,
        "-o", out, "--quiet",
    )  # fmt: skip
    assert res.code == 0, res.err
    assert seen == [0, 5, 10, 15, 20]
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 23
    assert all(
        np.array_equal(np.asarray(Image.open(p)), expected[i, :, :, 0]) for i, p in enumerate(pngs)
    )


def test_sample_refuses_an_output_too_large_before_sampling(fake, run_cli, tmp_path, monkeypatch):
    import geneval.io
    import geneval.sample_files as sample_files

    calls: list[int] = []
    monkeypatch.setattr(ToyNoiseModel, "sample", lambda self, n, **k: calls.append(n))
    # over the stated bound, whatever the disk
    n = sample_files.MAX_SAMPLE_BYTES // 36 + 1
    res = run_cli("sample", "--model", "toy-noise", "-n", n, "-o", tmp_path / "s.npz")
    assert res.code == 2 and len(res.err_lines) == 1, res.err
    assert "s.npz" in res.err and "TB" in res.err
    # more PNG files than one folder takes
    res = run_cli("sample", "--model", "toy-noise", "-n", 10**6 + 1, "-o", tmp_path / "many")
    assert res.code == 2 and "many" in res.err and "1000000" in res.err, res.err
    assert not (tmp_path / "many").exists()

    # more than the free space of the output's file system
    class Tiny:
        f_frsize = f_bsize = 4096
        f_bavail = 10  # 40 kB free
        f_files = f_favail = 10**6

    monkeypatch.setattr(geneval.io.os, "statvfs", lambda path: Tiny())
    res = run_cli("sample", "--model", "toy-noise", "-n", 5000, "-o", tmp_path / "s.npz")
    assert res.code == 2 and "free" in res.err and "s.npz" in res.err, res.err
    res = run_cli("sample", "--model", "toy-noise", "-n", 20, "-o", tmp_path / "pngs")
    assert res.code == 2 and "free" in res.err, res.err  # 20 files take 20 blocks
    assert calls == [] and sorted(p.name for p in tmp_path.iterdir()) == []


def test_sampler_steps_are_bounded(run_cli, tmp_path):
    res = run_cli("sample", "--model", "rbm", "-n", 2, "-o", tmp_path / "s.npz", "--steps", 10**9)
    assert res.code == 2 and "--steps" in res.err and len(res.err_lines) == 1, res.err
    assert not (tmp_path / "s.npz").exists()
