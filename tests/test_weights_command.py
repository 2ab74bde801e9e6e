"""``geneval weights list|fetch|verify|path``, the run's weights pre-flight and
``--extractor-weights [NAME=]PATH``.

Weights files are served by a local ``http.server`` thread: the extractors' declarations
(``published_weights``) are patched to point at it, with the digests of the served bytes.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from geneval.errors import InputError
from geneval.plugins import get_registry
from geneval.run.config import parse_extractor_weights
from geneval.weights import WeightsFile, digest_matches, hub_checkpoint_dir

BUNDLED = ("dinov2-vitb14", "dinov2-vitl14", "inception-v3-fid", "vgg16")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture(name="server")
def server_fixture(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server of the folder it returns, at the URL it returns."""
    root = tmp_path / "served"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(_QuietHandler, directory=str(root))
    )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(name="home")
def home_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch home, and none of the weights variables set."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    for name in BUNDLED:
        monkeypatch.delenv(_declared(name).env, raising=False)
    return home


def _declared(name: str) -> WeightsFile:
    (file,) = get_registry().extractor(name).published_weights
    return file


def _declarations() -> Iterator[tuple[object, tuple[WeightsFile, ...]]]:
    """Every registered plugin that declares weights files, with its declarations."""
    registry = get_registry()
    for kind in ("extractor", "model", "metric"):
        for item in registry.items(kind).values():
            files = tuple(getattr(item.obj, "published_weights", ()) or ())
            if files:
                yield item.obj, files


def _filename(name: str) -> str:
    """The file name of the weights declared as ``name`` (by any plugin)."""
    return next(f.filename for _, files in _declarations() for f in files if f.name == name)


def _serve(
    monkeypatch: pytest.MonkeyPatch,
    server: tuple[str, Path],
    *,
    full_digest: bool = True,
    wrong: str | None = None,
) -> dict[str, bytes]:
    """Serve distinct bytes for every declared weights file (the bundled extractors', model
    families' and metrics') and point every declaration at them (full sha256 and size, or only
    an 8-digit prefix); ``wrong``: that file declares another file's digest."""
    url, root = server
    files: dict[str, WeightsFile] = {}
    for _, declared in _declarations():
        for file in declared:
            files.setdefault(file.name, file)
    contents, patched = {}, {}
    for i, (name, file) in enumerate(sorted(files.items())):
        data = hashlib.sha256(name.encode()).digest() * (1000 + 37 * i)
        (root / file.filename).write_bytes(data)
        digest = hashlib.sha256(b"something else" if name == wrong else data).hexdigest()
        patched[name] = replace(
            file,
            url=f"{url}/{file.filename}",
            sha256=digest if full_digest else digest[:8],
            size=len(data) if full_digest else None,
        )
        contents[name] = data
    for obj, declared in list(_declarations()):
        monkeypatch.setattr(obj, "published_weights", tuple(patched[f.name] for f in declared))
    return contents


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_list_names_every_bundled_file_with_its_published_url_and_digest(run_cli, home):
    from pytorch_fid.inception import FID_WEIGHTS_URL
    from torchvision.models import VGG16_Weights

    res = run_cli("weights", "list", "--json")
    assert res.code == 0, res.err
    listing = json.loads(res.out)
    rows = {row["name"]: row for row in listing["weights"]}
    assert set(BUNDLED) <= set(rows)
    assert listing["hub_checkpoints"] == str(home / "hub" / "checkpoints")
    inception, vgg = rows["inception-v3-fid"], rows["vgg16"]
    assert inception["url"] == FID_WEIGHTS_URL  # pytorch-fid's own constant
    assert vgg["url"] == VGG16_Weights.IMAGENET1K_V1.url  # torchvision's
    assert inception["env"] == "GENEVAL_INCEPTION_WEIGHTS"
    assert vgg["env"] == "GENEVAL_VGG16_WEIGHTS"
    assert rows["dinov2-vitl14"]["url"] == (
        "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth"
    )
    for name in ("inception-v3-fid", "vgg16"):
        row = rows[name]
        # torch hub convention: the file name ends with the sha256 prefix that is checked
        assert row["filename"].rsplit(".", 1)[0].endswith("-" + row["sha256"])
        assert row["sha256_checked"] == "prefix" and len(row["sha256"]) == 8
        assert row["path"] == str(home / "hub" / "checkpoints" / row["filename"])
        assert row["present"] is False and row["found_by"] == "torch hub cache"
        # the LPIPS metric's VGG backbone is the vgg16 extractor's file, declared once
        users = [f"extractor {name}"] + (["metric lpips"] if name == "vgg16" else [])
        assert row["used_by"] == users
    assert rows["dinov2-vitb14"]["sha256"] is None
    assert rows["dinov2-vitb14"]["sha256_checked"] == "none"
    text = run_cli("weights", "list")
    assert text.code == 0
    for name in BUNDLED:
        assert name in text.out
    assert (
        "pt_inception-2015-12-05-6726825d.pth" in text.out and "GENEVAL_VGG16_WEIGHTS" in text.out
    )


def test_fetch_all_downloads_checks_and_places_every_file(run_cli, home, server, monkeypatch):
    contents = _serve(monkeypatch, server)
    res = run_cli("weights", "fetch", "--all")
    assert res.code == 0, res.err
    cache = home / "hub" / "checkpoints"
    for name, data in contents.items():
        placed = cache / _filename(name)
        assert placed.read_bytes() == data
        assert f"{name}: {placed}" in res.out
    assert _leftovers(cache) == sorted(_filename(n) for n in contents)  # no temp file
    listing = json.loads(run_cli("weights", "list", "--json").out)
    assert all(row["present"] for row in listing["weights"] if row["name"] in BUNDLED)
    # a second fetch keeps the files; --force fetches again, atomically
    before = (cache / _declared("vgg16").filename).stat().st_mtime_ns
    again = run_cli("weights", "fetch", "vgg16")
    assert again.code == 0 and "already in" in again.out
    assert (cache / _declared("vgg16").filename).stat().st_mtime_ns == before
    forced = run_cli("weights", "fetch", "vgg16", "--force", "--quiet")
    assert forced.code == 0 and forced.out == ""
    assert (cache / _declared("vgg16").filename).read_bytes() == contents["vgg16"]


def test_fetch_checks_a_published_prefix(run_cli, home, server, monkeypatch):
    contents = _serve(monkeypatch, server, full_digest=False)
    res = run_cli("weights", "fetch", "inception-v3-fid")
    assert res.code == 0, res.err
    assert "sha256 prefix" in res.out
    placed = home / "hub" / "checkpoints" / _declared("inception-v3-fid").filename
    assert placed.read_bytes() == contents["inception-v3-fid"]


def test_a_mismatching_download_is_refused_and_leaves_nothing(run_cli, home, server, monkeypatch):
    _serve(monkeypatch, server, wrong="vgg16")
    cache = home / "hub" / "checkpoints"
    res = run_cli("weights", "fetch", "vgg16")
    assert res.code == 2
    assert len(res.err_lines) == 1 and "does not match" in res.err_lines[0]
    assert "vgg16-397923af.pth" in res.err_lines[0]
    assert _leftovers(cache) == []  # neither the file nor a temporary one
    # a file already in place stays as it was when a forced download does not match
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "vgg16-397923af.pth").write_bytes(b"kept")
    forced = run_cli("weights", "fetch", "vgg16", "--force")
    assert forced.code == 2 and "does not match" in forced.err
    assert (cache / "vgg16-397923af.pth").read_bytes() == b"kept"
    assert _leftovers(cache) == ["vgg16-397923af.pth"]


def test_a_short_or_missing_download_leaves_nothing(run_cli, home, server, monkeypatch):
    contents = _serve(monkeypatch, server)
    url, root = server
    file = _declared("inception-v3-fid")
    (root / file.filename).write_bytes(contents["inception-v3-fid"][:-1])  # one byte short
    cache = home / "hub" / "checkpoints"
    res = run_cli("weights", "fetch", "inception-v3-fid")
    assert res.code == 2 and "does not match" in res.err
    (root / file.filename).unlink()  # 404
    missing = run_cli("weights", "fetch", "inception-v3-fid", "vgg16")
    assert missing.code == 2 and "404" in missing.err and "inception-v3-fid" in missing.err
    assert _leftovers(cache) == ["vgg16-397923af.pth"]  # vgg16 was fetched, nothing else


def test_verify_and_path_of_a_file_placed_by_hand(run_cli, home, server, monkeypatch, tmp_path):
    contents = _serve(monkeypatch, server)
    file = _declared("vgg16")
    cache = home / "hub" / "checkpoints"
    assert run_cli("weights", "path", "vgg16").out.strip() == str(cache / file.filename)
    absent = run_cli("weights", "verify", "vgg16")
    assert absent.code == 2 and "geneval weights fetch vgg16" in absent.err
    placed = tmp_path / "by_hand.pth"
    placed.write_bytes(contents["vgg16"])
    elsewhere = run_cli("weights", "verify", "vgg16", placed)
    assert elsewhere.code == 0, elsewhere.err
    assert hashlib.sha256(contents["vgg16"]).hexdigest() in elsewhere.out
    assert "the loader does not look there" in elsewhere.out and file.env in elsewhere.out
    monkeypatch.setenv(file.env, str(placed))
    assert run_cli("weights", "path", "vgg16").out.strip() == str(placed)
    found = run_cli("weights", "verify", "vgg16")
    assert found.code == 0 and f"the loader finds it ({file.env})" in found.out
    placed.write_bytes(contents["vgg16"][:-1] + b"x")
    corrupt = run_cli("weights", "verify", "vgg16")
    assert corrupt.code == 2 and "does not match" in corrupt.err
    unknown = run_cli("weights", "path", "nope")
    assert unknown.code == 2 and "unknown weights" in unknown.err and "vgg16" in unknown.err


def test_digest_prefix_rule() -> None:
    file = WeightsFile("x", "x.pth", "http://h/x.pth", env="X_W", what="X", sha256="abcdef01")
    assert digest_matches(file, "abcdef01" + "0" * 56)
    assert not digest_matches(file, "abcdef02" + "0" * 56)
    assert digest_matches(replace(file, sha256=None), "0" * 64)  # nothing published
    with pytest.raises(ValueError):
        WeightsFile("x", "x.pth", "u", env="X_W", what="X", sha256="xyz")
    with pytest.raises(ValueError):
        WeightsFile("x", "../x.pth", "u", env="X_W", what="X")


# -- runs ----------------------------------------------------------------------------------


def _arrays(tmp_path: Path, shape: tuple[int, ...] = (6, 16, 16, 3)) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    paths = []
    for role in ("samples", "reference"):
        path = tmp_path / f"{role}.npy"
        np.save(path, rng.integers(0, 256, size=shape, dtype=np.uint8))
        paths.append(path)
    return paths[0], paths[1]


def test_a_run_names_every_missing_file_in_one_line(run_cli, home, server, monkeypatch, tmp_path):
    _serve(monkeypatch, server)
    for file in (_declared("inception-v3-fid"), _declared("vgg16")):
        (server[1] / file.filename).unlink()  # not published: every download fails
    samples, reference = _arrays(tmp_path)
    res = run_cli(
        "run", "--samples", samples, "--reference", reference,
        "--metrics", "fid,kid,precision,recall", "--no-cache",
    )  # fmt: skip
    assert res.code == 2
    assert len(res.err_lines) == 1, res.err
    line = res.err_lines[0]
    assert "pt_inception-2015-12-05-6726825d.pth not found" in line
    assert "vgg16-397923af.pth not found" in line
    assert "geneval weights fetch inception-v3-fid vgg16" in line
    assert "GENEVAL_INCEPTION_WEIGHTS" in line and "GENEVAL_VGG16_WEIGHTS" in line
    assert str(home / "hub" / "checkpoints") in line
    assert _leftovers(home / "hub" / "checkpoints") == []


def test_extractor_weights_by_name_for_two_extractors(run_cli, home, tmp_path):
    samples, reference = _arrays(tmp_path)
    base = ["run", "--samples", samples, "--reference", reference, "--metrics", "fid,precision"]
    named = run_cli(
        *base,
        "--extractor-weights", f"inception-v3-fid={tmp_path / 'i.pth'}",
        "--extractor-weights", f"vgg16={tmp_path / 'v.pth'}",
    )  # fmt: skip
    assert named.code == 2 and len(named.err_lines) == 1, named.err
    assert str(tmp_path / "i.pth") in named.err and str(tmp_path / "v.pth") in named.err
    assert named.err.count("does not exist") == 2
    plain = run_cli(*base, "--extractor-weights", tmp_path / "i.pth")
    assert plain.code == 2 and "ambiguous" in plain.err and "NAME=PATH" in plain.err
    unknown = run_cli(*base, "--extractor-weights", f"nope={tmp_path / 'i.pth'}")
    assert unknown.code == 2 and "unknown extractor" in unknown.err


def test_parse_extractor_weights(tmp_path: Path) -> None:
    assert parse_extractor_weights(None) is None and parse_extractor_weights(()) is None
    assert parse_extractor_weights("w.pth") == Path("w.pth")
    assert parse_extractor_weights(["a=x.pth", "b=y=z.pth"]) == {
        "a": Path("x.pth"),
        "b": Path("y=z.pth"),
    }
    assert parse_extractor_weights({"vgg16": "v.pth"}) == {"vgg16": Path("v.pth")}
    odd = tmp_path / "a=b.pth"  # an existing file whose name has '=' is a path
    odd.write_bytes(b"")
    assert parse_extractor_weights([str(odd)]) == odd
    for bad in (["x.pth", "y.pth"], ["x.pth", "a=y.pth"], ["a=x.pth", "a=y.pth"]):
        with pytest.raises(InputError, match="--extractor-weights"):
            parse_extractor_weights(bad)


def test_inception_weights_note_comes_before_the_error(run_cli, home, tmp_path):
    samples, reference = _arrays(tmp_path)
    res = run_cli(
        "run", "--samples", samples, "--reference", reference, "--metrics", "fid",
        "--inception-weights", tmp_path / "missing.pth",
    )  # fmt: skip
    assert res.code == 2
    assert len(res.err_lines) == 2, res.err
    assert res.err_lines[0].startswith("geneval: warning: --inception-weights is deprecated")
    assert res.err_lines[1].startswith("geneval: error: ")
    assert "missing.pth" in res.err_lines[1]


def test_python_api_takes_a_mapping_of_extractor_weights(tmp_path: Path) -> None:
    import torch

    import geneval
    from geneval_plugins.extractors.digits_cnn import shipped_weights_path

    copy = tmp_path / "digits.safetensors"
    copy.write_bytes(shipped_weights_path().read_bytes())
    images = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    report = geneval.evaluate(
        images,
        images.flip(0),
        "fid",
        extractor="digits-cnn",
        extractor_weights={"digits-cnn": copy},
        cache=False,
    )
    used = report["config"]["extractors"]["fid"]
    assert used["weights_sha256"] == hashlib.sha256(copy.read_bytes()).hexdigest()
    assert not any("maps images" in w for w in report["warnings"])  # 8×8 grey: no mapping


def test_digits_cnn_notes_its_mapping_of_other_images(run_cli, tmp_path):
    samples, reference = _arrays(tmp_path, (6, 32, 32, 3))
    out = tmp_path / "r.json"
    res = run_cli(
        "run", "--samples", samples, "--reference", reference, "--metrics", "fid",
        "--extractor", "digits-cnn", "--no-cache", "--json", out,
    )  # fmt: skip
    assert res.code == 0, res.err
    warnings = json.loads(out.read_text(encoding="utf-8"))["warnings"]
    mapped = [w for w in warnings if "maps images of 3×32×32 to its 8×8 grey input" in w]
    assert len(mapped) == 1, warnings
    assert "32×32 to 8×8 (area average)" in mapped[0] and "BT.601" in mapped[0]


def test_hub_dir_follows_torch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import torch

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    assert hub_checkpoint_dir() == Path(torch.hub.get_dir()) / "checkpoints"
    assert hub_checkpoint_dir() == tmp_path / "th" / "hub" / "checkpoints"


def test_a_run_on_carried_features_needs_no_weights(run_cli, home, server, monkeypatch, tmp_path):
    _serve(monkeypatch, server)
    (server[1] / _declared("inception-v3-fid").filename).unlink()  # a download would fail
    rng = np.random.default_rng(1)
    paths = []
    for role in ("samples", "reference"):
        path = tmp_path / f"{role}.npz"
        np.savez(path, features=rng.normal(size=(40, 5)))
        paths.append(path)
    out = tmp_path / "r.json"
    res = run_cli(
        "run", "--samples", paths[0], "--reference", paths[1], "--metrics", "fid",
        "--json", out, "--quiet",
    )  # fmt: skip
    assert res.code == 0, res.err
    assert json.loads(out.read_text(encoding="utf-8"))["metrics"]["fid"]["value"] >= 0
    assert _leftovers(home / "hub" / "checkpoints") == []
