"""The HTML report in a real browser: headless Chromium renders the grids and the tables, and
makes no network request. Skipped where Chromium is not installed (Debian: ``apt-get
install chromium``; ``.ci/run`` installs it where it can)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow

MAGENTA = (255, 0, 255)
CYAN = (0, 255, 255)
#: Flags of a headless run that touches nothing but the page it is given.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--force-device-scale-factor=1",
    "--hide-scrollbars",
)


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "/usr/bin/chromium"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("headless Chromium not found: install it (Debian: apt-get install chromium)")


def _browse(page: Path, tmp: Path, *args: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Open ``page`` in a fresh profile with ``args``; return the run and the URLs of the
    requests the page made, as Chromium's network log records them."""
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    profile.mkdir()
    netlog = profile.with_suffix(".netlog.json")
    done = subprocess.run(
        [
            _chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
            f"--log-net-log={netlog}", *args, page.as_uri(),
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done, _page_requests(netlog)


def _page_requests(netlog: Path) -> list[str]:
    """URLs of the requests started on behalf of a page (every ``URL_REQUEST_START_JOB``
    whose initiator is an origin, ``null`` for a file page); the browser's own background
    requests (time queries, account checks), whose initiator is ``not an origin``, are not
    the page's doing."""
    text = netlog.read_text(encoding="utf-8", errors="replace").rstrip().rstrip(",")
    try:
        log = json.loads(text)
    except ValueError:  # a log cut short when the browser exits: close it
        log = json.loads(text + "]}")
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    urls = []
    for event in log.get("events", []):
        params = event.get("params") or {}
        if event.get("type") != start_job or "url" not in params:  # (the job's end has none)
            continue
        if params.get("initiator") != "not an origin":
            urls.append(params["url"])
    return urls


def _network(urls: list[str]) -> list[str]:
    """The URLs that would leave the machine (not ``file:`` or ``data:``)."""
    return [u for u in urls if not u.startswith(("file:", "data:"))]


def _coloured(shape: tuple[int, int], colour: tuple[int, int, int], n: int, seed: int):
    """``n`` images of one colour, each with a random 4×4 square of another colour."""
    rng = np.random.default_rng(seed)
    images = np.empty((n, *shape, 3), np.uint8)
    images[:] = colour
    for image in images:
        y, x = rng.integers(0, shape[0] - 4, 2)
        image[y : y + 4, x : x + 4] = (0, 128, 0)
    return images


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    from geneval.cli import main

    folder = tmp_path_factory.mktemp("browser")
    np.savez(folder / "samples.npz", images=_coloured((16, 16), MAGENTA, 100, 0))
    np.savez(folder / "reference.npz", images=_coloured((16, 16), CYAN, 120, 1))
    html_path = folder / "report.html"
    with pytest.raises(SystemExit) as done:
        main([
            "run", "--samples", str(folder / "samples.npz"),
            "--reference", str(folder / "reference.npz"), "--extractor", "digits-cnn",
            "--metrics", "fid,kid", "--html", str(html_path), "--fail-if", "fid>1000000",
            "--quiet",
        ])  # fmt: skip
    assert done.value.code == 0
    return html_path


def test_browser_shows_the_text(report, tmp_path):
    done, urls = _browse(report, tmp_path, "--dump-dom")
    dom = done.stdout
    assert "<h2>Metrics</h2>" in dom and "Fréchet distance between Gaussian fits" in dom
    assert "fid&gt;1000000" in dom and "--fail-if" in dom and "PASSED" in dom
    assert "The first 64 of 100 samples." in dom and "The first 64 of 120 reference" in dom
    assert "Nearest reference images" in dom
    assert _network(urls) == [], _network(urls)


def test_browser_renders_the_grids(report, tmp_path):
    shot = tmp_path / "shot.png"
    _, urls = _browse(report, tmp_path, "--window-size=1280,2400", f"--screenshot={shot}")
    with Image.open(shot) as img:
        pixels = np.asarray(img.convert("RGB")).reshape(-1, 3)
    magenta = int(np.all(pixels == MAGENTA, axis=1).sum())
    cyan = int(np.all(pixels == CYAN, axis=1).sum())
    # each grid: 64 cells of 32×32 pixels (16×16 images enlarged twice), 15/16 of each cell
    # the cell's main colour; the neighbour panel adds more
    cell_pixels = 64 * 32 * 32 * 15 // 16
    assert magenta >= cell_pixels, magenta
    assert cyan >= cell_pixels, cyan
    assert _network(urls) == [], _network(urls)


def test_the_network_log_sees_requests(tmp_path):
    """A page without the report's policy that links an outside image: the log records the
    request, so an empty list above means none was made."""
    page = tmp_path / "leaky.html"
    page.write_text('<!DOCTYPE html><img src="http://127.0.0.1:9/x.png">', encoding="utf-8")
    _, urls = _browse(page, tmp_path, "--dump-dom")
    assert "http://127.0.0.1:9/x.png" in _network(urls)
