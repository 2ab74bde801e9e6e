"""Bad input, as a new user would try it: one line naming the culprit, the documented exit code,
no traceback, nothing written, no number printed.

Each row builds its inputs in a fresh folder and runs ``geneval`` in-process. Rows marked
``held`` were already refused before these checks were written; the others were defects.
"""

from __future__ import annotations

import json
import os
import stat
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.fake_plugins import FakePlugins

FEATURE_DIM = 12  # the counting extractor of tests/fake_plugins.py


@dataclass
class Workspace:
    root: Path

    @property
    def report(self) -> Path:
        return self.root / "report.json"

    def samples(self, n: int = 30) -> Path:
        path = self.root / f"samples-{n}.npy"
        rng = np.random.default_rng(n)
        np.save(path, rng.integers(0, 256, size=(n, 6, 6, 3), dtype=np.uint8))
        return path

    def reference(self) -> Path:
        path = self.root / "reference.npz"
        np.savez(path, images=np.random.default_rng(1).random((25, 3, 6, 6)).astype(np.float32))
        return path

    def stats(self, name: str = "stats.npz", *, dim: int = FEATURE_DIM, **arrays) -> Path:
        rng = np.random.default_rng(2)
        x = rng.standard_normal((50, dim))
        content = {
            "mu": x.mean(0),
            "sigma": np.cov(x, rowvar=False),
            "n": np.int64(50),
            "meta": np.array(
                json.dumps(
                    {
                        "extractor": "counting",
                        "weights_sha256": "0" * 64,
                        "resize": "pool-2x2",
                        "output": "feat",
                    }
                )
            ),
        }
        content.update(arrays)
        content = {k: v for k, v in content.items() if v is not None}
        path = self.root / name
        np.savez(path, **content)
        return path

    def folder(self, name: str, images: dict[str, Callable[[Path], None]]) -> Path:
        folder = self.root / name
        folder.mkdir()
        for filename, write in images.items():
            write(folder / filename)
        return folder


def _png(array: np.ndarray) -> Callable[[Path], None]:
    return lambda path: Image.fromarray(array).save(path)


def _grey(i: int) -> np.ndarray:
    return np.full((6, 6), 10 * i, dtype=np.uint8)


def _bomb_png(path: Path) -> None:
    """A PNG whose header claims 20000 × 10000 pixels: refused from the header alone."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", 20000, 10000, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


@dataclass
class Case:
    """One bad invocation: what to run, the words the error line must contain, the exit code."""

    name: str
    build: Callable[[Workspace], list[str]]
    culprit: str
    code: int = 2
    untouched: Callable[[Workspace], list[Path]] = field(default=lambda ws: [])
    held: bool = False


def _run(ws: Workspace, *extra, samples: Path | None = None, metrics: str = "feat-mean"):
    return [
        "run",
        "--samples",
        samples or ws.samples(),
        "--metrics",
        metrics,
        "--extractor",
        "counting",
        "--json",
        ws.report,
        *extra,
    ]


def _inception_run(ws: Workspace, weights_flag: str, weights: Path) -> list:
    """FID through the Inception extractor with the given weights file."""
    return [
        "run", "--samples", ws.samples(), "--metrics", "fid", "--reference", ws.reference(),
        "--extractor", "inception-v3-fid", weights_flag, weights, "--json", ws.report,
    ]  # fmt: skip


def _fifo(ws: Workspace) -> Path:
    path = ws.root / "fifo"
    os.mkfifo(path)
    return path


def _link(ws: Workspace, target: Path, name: str = "link.json") -> Path:
    link = ws.root / name
    link.symlink_to(target)
    return link


class _CreatesFile:
    """A pickle payload: unpickling it opens (creates) a file, which would prove code ran."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _payload_npy(ws: Workspace) -> Path:
    return _save(ws.root / "payload.npy", np.array([_CreatesFile(ws.root / "pwned")], object))


def _payload_npz(ws: Workspace, **arrays) -> Path:
    path = ws.root / "payload.npz"
    np.savez(path, **arrays, payload=np.array([_CreatesFile(ws.root / "pwned")], object))
    return path


def _checkpoint_without(ws: Workspace, key: str) -> Path:
    """The bundled ``ddpm`` checkpoint with ``arch[key]`` removed from its config."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from geneval.plugins import get_registry

    source = get_registry().model("ddpm").bundled_checkpoint
    with safe_open(source, "pt") as f:
        metadata = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    config = json.loads(metadata["geneval"])
    del config["arch"][key]
    metadata["geneval"] = json.dumps(config)
    path = ws.root / "incomplete.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    return path


def _foreign_folder(ws: Workspace) -> Path:
    return ws.folder("mine", {f"{i}.png": _png(_grey(i)) for i in range(6)})


CASES = [
    # -- output paths ------------------------------------------------------------------------
    Case(
        "json-dev-null",
        lambda ws: _run(ws, "--markdown", "/dev/null", "--force"),
        "/dev/null is a device",
    ),
    Case("json-fifo", lambda ws: _run(ws, "--markdown", _fifo(ws), "--force"), "is a FIFO"),
    Case(
        "json-symlink",
        lambda ws: _run(ws, "--markdown", _link(ws, ws.root / "target.md"), "--force"),
        "is a symbolic link",
        untouched=lambda ws: [ws.root / "target.md"],
    ),
    Case(
        "json-dangling-symlink",
        lambda ws: _run(ws, "--markdown", _link(ws, ws.root / "nowhere.md")),
        "is a symbolic link",
    ),
    Case("json-directory", lambda ws: _run(ws, "--markdown", ws.root), "is a directory"),
    Case(
        "json-exists",
        lambda ws: [*_run(ws)[:-2], "--json", ws.root / "target.md"],
        "--force",
        untouched=lambda ws: [ws.root / "target.md"],
        held=True,
    ),
    Case(
        "same-path-twice",
        lambda ws: _run(ws, "--markdown", ws.report),
        "are the same file",
    ),
    Case(
        "stdout-twice",
        lambda ws: [*_run(ws)[:-2], "--json", "-", "--markdown", "-"],
        "standard output",
    ),
    Case(
        "sample-folder-foreign-files",
        lambda ws: [
            "sample",
            "--model",
            "toy-noise",
            "-n",
            "2",
            "-o",
            _foreign_folder(ws),
            "--force",
        ],
        "geneval did not write",
        untouched=lambda ws: sorted((ws.root / "mine").iterdir()),
    ),
    Case(
        "sample-folder-not-empty",
        lambda ws: ["sample", "--model", "toy-noise", "-n", "2", "-o", _foreign_folder(ws)],
        "non-empty folder",
        untouched=lambda ws: sorted((ws.root / "mine").iterdir()),
    ),
    Case(
        "sample-output-suffix",
        lambda ws: ["sample", "--model", "toy-noise", "-n", "2", "-o", ws.root / "out.txt"],
        "out.txt",
        held=True,
    ),
    Case(
        "stats-output-suffix",
        lambda ws: ["stats", ws.samples(), "-o", ws.root / "s.txt", "--extractor", "counting"],
        "s.txt",
        held=True,
    ),
    # -- numbers on the command line -----------------------------------------------------------
    Case("seed-2^64", lambda ws: _run(ws, "--seed", "18446744073709551616"), "--seed"),
    Case("seed-2^63", lambda ws: _run(ws, "--seed", "9223372036854775808"), "--seed"),
    Case("seed-negative", lambda ws: _run(ws, "--seed", "-1"), "--seed"),
    Case("run-batch-size-0", lambda ws: _run(ws, "--batch-size", "0"), "--batch-size"),
    Case("run-workers-negative", lambda ws: _run(ws, "--workers", "-1"), "--workers"),
    Case(
        "stats-batch-size-0",
        lambda ws: ["stats", ws.samples(), "-o", ws.root / "s.npz", "--batch-size", "0"],
        "--batch-size",
    ),
    Case(
        "stats-batch-size-negative",
        lambda ws: ["stats", ws.samples(), "-o", ws.root / "s.npz", "--batch-size", "-1"],
        "--batch-size",
    ),
    Case(
        "stats-workers-negative",
        lambda ws: ["stats", ws.samples(), "-o", ws.root / "s.npz", "--workers", "-1"],
        "--workers",
    ),
    Case(
        "num-samples-0",
        lambda ws: ["run", "--model", "toy-noise", "--num-samples", "0", "--metrics", "feat-mean"],
        "--num-samples",
    ),
    Case(
        "sample-n-0",
        lambda ws: ["sample", "--model", "toy-noise", "-n", "0", "-o", ws.root / "s.npz"],
        "--num-samples",
    ),
    # -- metric options ------------------------------------------------------------------------
    Case(
        "opt-nan",
        lambda ws: _run(ws, "--opt", "kid.coef0=nan", "--reference", ws.reference(), metrics="kid"),
        "kid.coef0=nan",
    ),
    Case(
        "opt-degree-0",
        lambda ws: _run(ws, "--opt", "kid.degree=0", "--reference", ws.reference(), metrics="kid"),
        "kid.degree=0",
    ),
    Case(
        "opt-degree-negative",
        lambda ws: _run(ws, "--opt", "kid.degree=-3", "--reference", ws.reference(), metrics="kid"),
        "kid.degree=-3",
    ),
    Case(
        "opt-subsets-0",
        lambda ws: _run(ws, "--opt", "kid.subsets=0", "--reference", ws.reference(), metrics="kid"),
        "kid.subsets=0",
    ),
    Case("opt-type", lambda ws: _run(ws, "--opt", "is.splits=abc", metrics="is"), "is.splits"),
    Case("opt-unknown-key", lambda ws: _run(ws, "--opt", "feat-mean.nope=1"), "nope", held=True),
    Case(
        "metric-unknown", lambda ws: _run(ws, metrics="no-such-metric"), "no-such-metric", held=True
    ),
    # -- gates ---------------------------------------------------------------------------------
    Case("gate-1e999", lambda ws: _run(ws, "--fail-if", "feat-mean>1e999"), "feat-mean>1e999"),
    Case("gate-inf", lambda ws: _run(ws, "--fail-if", "feat-mean>inf"), "feat-mean>inf", held=True),
    Case("gate-unknown-field", lambda ws: _run(ws, "--fail-if", "feat-mean.nosuch>3"), "nosuch"),
    Case("gate-unknown-metric", lambda ws: _run(ws, "--fail-if", "fid>3"), "fid", held=True),
    Case(
        "gates-file-not-utf8",
        lambda ws: _run(ws, "--gates", _write(ws.root / "g.toml", b'fail-if = ["\xff"]')),
        "g.toml",
    ),
    # -- statistics files ----------------------------------------------------------------------
    Case(
        "stats-negative-sigma",
        lambda ws: _run(
            ws,
            "--reference",
            ws.stats(sigma=-5.0 * np.eye(FEATURE_DIM)),
            metrics="feat-dist",
        ),
        "positive semi-definite",
    ),
    Case(
        "stats-asymmetric-sigma",
        lambda ws: _run(
            ws,
            "--reference",
            ws.stats(sigma=np.eye(FEATURE_DIM) + np.triu(np.ones((FEATURE_DIM,) * 2), 1)),
            metrics="feat-dist",
        ),
        "not symmetric",
    ),
    Case(
        "stats-nan-features",
        lambda ws: _run(
            ws,
            "--reference",
            ws.stats(features=np.full((50, FEATURE_DIM), np.nan, np.float32)),
            metrics="feat-dist",
        ),
        "non-finite",
    ),
    Case(
        "stats-meta-list",
        lambda ws: _run(ws, "--reference", ws.stats(meta=np.array("[1, 2]")), metrics="feat-dist"),
        "meta must be a JSON object",
    ),
    Case(
        "stats-n-vector",
        lambda ws: _run(ws, "--reference", ws.stats(n=np.array([50, 50])), metrics="feat-dist"),
        "n must be a single number",
    ),
    Case(
        "stats-n-1",
        lambda ws: _run(ws, "--reference", ws.stats(n=np.int64(1)), metrics="feat-dist"),
        "n must be an integer ≥ 2",
    ),
    Case(
        "stats-wrong-dimension",
        lambda ws: _run(ws, "--reference", ws.stats(dim=7), metrics="feat-dist"),
        "7-d features",
    ),
    Case(
        "stats-contradicting-resize",
        lambda ws: _run(
            ws,
            "--reference",
            ws.stats(meta=np.array(json.dumps({"extractor": "counting", "resize": "clean"}))),
            metrics="feat-dist",
        ),
        "resize='clean'",
    ),
    Case(
        "stats-without-features-for-kid",
        lambda ws: _run(ws, "--reference", ws.stats(), metrics="kid"),
        "--features",
        held=True,
    ),
    # -- images --------------------------------------------------------------------------------
    Case(
        "decompression-bomb",
        lambda ws: _run(ws, samples=ws.folder("bomb", {"big.png": _bomb_png})),
        "decompression-bomb limit",
    ),
    Case(
        "bad-image-in-worker",
        lambda ws: _run(
            ws,
            "--workers",
            "1",
            samples=ws.folder(
                "corrupt",
                {
                    **{f"{i:02d}.png": _png(_grey(i)) for i in range(8)},
                    "zz-broken.png": lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\nnot a png"),
                },
            ),
        ),
        "zz-broken.png",
    ),
    Case(
        "int32-image-out-of-range",
        lambda ws: _run(
            ws,
            samples=ws.folder(
                "deep",
                {
                    "a.tiff": lambda p: Image.fromarray(
                        np.full((6, 6), 70000, np.int32), mode="I"
                    ).save(p)
                },
            ),
        ),
        "a.tiff",
    ),
    Case(
        "float-image-out-of-range",
        lambda ws: _run(
            ws,
            samples=ws.folder(
                "float",
                {"a.tiff": lambda p: Image.fromarray(np.full((6, 6), 1.5, np.float32)).save(p)},
            ),
        ),
        "a.tiff",
    ),
    Case("samples-missing", lambda ws: _run(ws, samples=ws.root / "nowhere"), "nowhere", held=True),
    Case(
        "array-nan",
        lambda ws: _run(
            ws, samples=_save(ws.root / "nan.npy", np.full((4, 6, 6, 3), np.nan, np.float32))
        ),
        "nan.npy",
        held=True,
    ),
    Case(
        "array-5d",
        lambda ws: _run(
            ws, samples=_save(ws.root / "five.npy", np.zeros((2, 4, 6, 6, 3), np.uint8))
        ),
        "five.npy",
        held=True,
    ),
    Case(
        "array-pickle",
        lambda ws: _run(ws, samples=_save(ws.root / "obj.npy", np.array([{"x": 1}], dtype=object))),
        "obj.npy",
        held=True,
    ),
    # -- weights, metrics ----------------------------------------------------------------------
    Case(
        "weights-bare-tensor",
        lambda ws: _inception_run(
            ws, "--extractor-weights", _torch_save(ws.root / "w.pth", torch.zeros(3))
        ),
        "w.pth",
    ),
    Case(
        "fid-of-one-sample",
        lambda ws: _run(ws, "--reference", ws.reference(), samples=ws.samples(1), metrics="fid"),
        "at least 2 samples",
    ),
    Case(
        "checkpoint-config-incomplete",
        lambda ws: [
            "run",
            "--model",
            "ddpm",
            "--checkpoint",
            _checkpoint_without(ws, "schedule"),
            "--metrics",
            "feat-mean",
            "--extractor",
            "counting",
            "--num-samples",
            "4",
            "--json",
            ws.report,
        ],  # fmt: skip
        "lacks 'schedule'",
    ),
    # -- pickles: refused, and no code runs (the payload would create a file) ----------------
    Case("array-pickle-payload", lambda ws: _run(ws, samples=_payload_npy(ws)), "payload.npy"),
    Case(
        "npz-pickle-payload",
        lambda ws: _run(ws, samples=_payload_npz(ws, images=np.zeros((4, 6, 6, 3), np.uint8))),
        "payload.npz",
    ),
    Case(
        "stats-pickle-payload",
        lambda ws: _run(
            ws,
            "--reference",
            _payload_npz(ws, mu=np.zeros(FEATURE_DIM), sigma=np.eye(FEATURE_DIM)),
            metrics="feat-dist",
        ),
        "payload.npz",
    ),
    Case(
        "weights-pickle-payload",
        lambda ws: _inception_run(
            ws,
            "--extractor-weights",
            _torch_save(ws.root / "w.pth", {"x": _CreatesFile(ws.root / "pwned")}),
        ),
        "w.pth",
    ),
    Case(
        "model-without-capability",
        lambda ws: ["run", "--model", "ddpm", "--metrics", "ais", "--json", ws.report],
        "needs capability 'energy'",
    ),
    Case(
        "kde-without-validation",
        lambda ws: [
            "run",
            "--samples",
            ws.samples(),
            "--reference",
            ws.reference(),
            "--metrics",
            "kde",
            "--json",
            ws.report,
        ],  # fmt: skip
        "--opt kde.validation=",
    ),
    Case("device-unknown", lambda ws: _run(ws, "--device", "tpu"), "tpu", held=True),
    Case("resize-fixed", lambda ws: _run(ws, "--resize", "tf1"), "--resize", held=True),
]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _save(path: Path, array: np.ndarray) -> Path:
    np.save(path, array, allow_pickle=True)
    return path


def _torch_save(path: Path, obj) -> Path:
    torch.save(obj, path)
    return path


def _snapshot(paths: list[Path]) -> dict[Path, tuple[int, bytes | str]]:
    state = {}
    for path in paths:
        mode = os.lstat(path).st_mode
        content = os.readlink(path) if stat.S_ISLNK(mode) else path.read_bytes()
        state[path] = (mode, content)
    return state


@pytest.fixture
def fake(add_plugin) -> FakePlugins:
    plugins = FakePlugins()
    add_plugin(plugins)
    return plugins


def test_the_table_is_large_and_its_names_unique():
    assert len(CASES) >= 40
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input(case: Case, fake, run_cli, tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    (tmp_path / "target.md").write_text("keep me", encoding="utf-8")
    argv = case.build(ws)
    before = _snapshot(case.untouched(ws))
    entries_before = sorted(p.name for p in tmp_path.iterdir())
    res = run_cli(*argv)
    assert res.code == case.code, (res.code, res.err)
    assert len(res.err_lines) == 1, res.err
    assert res.err_lines[0].startswith("geneval: error: ")
    assert case.culprit in res.err_lines[0], res.err_lines[0]
    assert "Traceback" not in res.err
    assert res.out == "", res.out  # no table, no number
    assert not ws.report.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == entries_before  # nothing new written
    assert _snapshot(case.untouched(ws)) == before
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert not (tmp_path / "pwned").exists()  # no pickled code ran
