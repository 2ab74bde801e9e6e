"""Dataset ``dsprites``: procedural 64×64 binary sprites with the dSprites factors (no download).

Every image is a white sprite on black, rendered deterministically from five discrete
ground-truth factors with the sizes of dSprites (Matthey et al. 2017):

===============  ======  ==================================================================
factor           values  meaning
===============  ======  ==================================================================
``shape``        3       square, ellipse, heart
``scale``        6       linearly spaced in [0.5, 1] (half-size 10·scale px)
``orientation``  40      linearly spaced in [0, 2π], both ends included as in dSprites
``x``, ``y``     32      sprite centre linearly spaced over [14, 50] px
===============  ======  ==================================================================

The sprites follow the dSprites recipe, not its pixels: a model trained here is not comparable
to one trained on the published file. As in dSprites, the square repeats every quarter turn and
the ellipse every half turn, so orientation is only partly identifiable from the image.

Splits (``dsprites:SPLIT``), each a comma-separated list that starts with a base name and may
restrict factors:

* ``train`` — the subsampled grid every 4th orientation, x and y value (3·6·10·8·8 = 11 520
  images, 190 MB): small enough to train a VAE on a CPU;
* ``test`` — 10 000 factor vectors drawn uniformly from the full grid (fixed seed), i.i.d. as
  the disentanglement metrics assume (``n=N`` draws N, at most 100 000);
* ``grid`` — every combination of the allowed values, in lexicographic factor order (refused
  above 100 000 images: restrict it first).

Restrictions: ``FACTOR=I`` fixes a factor to its I-th value, ``FACTOR/K`` keeps every K-th
value (from the first), ``n=N`` sets the number of draws of ``test``. For example
``dsprites:grid,shape=2,orientation=0`` is every position and scale of an upright heart and
``dsprites:test,n=2000,scale/2`` 2000 draws over half the scales. A restriction replaces the
base split's own for that factor (``train,x/2`` keeps every 2nd x value).

Each split yields ``images`` (N, 1, 64, 64) float32 in {0, 1}, ``factors`` (N, 5) int64 (value
indices in the order of :data:`FACTOR_NAMES`) and ``labels`` = the shape index. Through
:class:`geneval.api.FactorDataset` (``sample_factors``, ``images_for_factors``) metrics draw
fresh images with chosen factors over the full grid, whatever split the run used.

The default extractor is ``inception-v3-fid``: there is no dSprites classifier, and the FID
Inception network is the convention under which FID/KID of 64×64 sprites are published;
``digits-cnn`` would area-resize the sprites to 8×8 and knows only digits. The disentanglement
and reconstruction metrics do not use an extractor.

References
----------
.. [1] L. Matthey, I. Higgins, D. Hassabis, A. Lerchner, "dSprites: Disentanglement testing
   Sprites dataset", https://github.com/deepmind/dsprites-dataset (2017).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from geneval.plugin import ImageSet, InputError, hookimpl

if TYPE_CHECKING:
    import numpy as np
    import torch

FACTOR_NAMES = ("shape", "scale", "orientation", "x", "y")
FACTOR_SIZES = (3, 6, 40, 32, 32)
SHAPES = ("square", "ellipse", "heart")
IMAGE_SIZE = 64
#: Half-size in pixels of a sprite at scale 1 (the square's half side, the ellipse's semi-major
#: axis); centres span [MARGIN, IMAGE_SIZE − MARGIN].
HALF_SIZE = 10.0
MARGIN = 14.0

TEST_SEED = 20170601
TEST_SIZE = 10_000
MAX_GRID_IMAGES = 100_000
#: The most draws ``test,n=N`` may ask for (as many as a grid may hold: 1.6 GB of images).
MAX_TEST_IMAGES = MAX_GRID_IMAGES
#: Base restrictions of the named splits: factor → step (every K-th value).
_BASE_STEPS = {"train": {"orientation": 4, "x": 4, "y": 4}, "test": {}, "grid": {}}
#: Images rendered per chunk (bounds the float temporaries to ~70 MB each).
_RENDER_CHUNK = 4096


def _inside(shape: int, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Inside test of one shape in its canonical frame (unit half-size, y pointing down)."""
    import torch

    if shape == 0:  # square of side 2
        return torch.maximum(u.abs(), v.abs()) <= 1.0
    if shape == 1:  # ellipse with semi-axes 1 and 0.5
        return u * u + (2.0 * v) ** 2 <= 1.0
    # heart: (x² + y² − 1)³ − x² y³ ≤ 0, spanning |x| ≤ 1.14, −1 ≤ y ≤ 1.25; point down.
    x2 = (1.2 * u) ** 2
    y = 0.1 - 1.2 * v
    r = x2 + y * y - 1.0
    return r * r * r <= x2 * y * y * y


#: Side of the square window evaluated around each sprite: it holds every pixel within
#: 14.2 px of the centre (the largest sprite, a rotated square, reaches 10·√2 ≈ 14.14 px).
_WINDOW = 32
#: Padding of the canvas the windows are written into (windows start at ⌊c⌋ − 15 ≥ −1 and end
#: at ⌊c⌋ + 17 ≤ 67).
_PAD = 4


def render(factors: torch.Tensor) -> torch.Tensor:
    """Images (n, 1, 64, 64) float32 in {0, 1} of factor index vectors (n, 5).

    A pixel with centre ``p`` is white when ``R(−θ)(p − c) / (10·scale)`` falls inside the
    canonical shape. Only a 32×32 window around each centre is evaluated; everything is
    vectorised over the batch (in chunks of :data:`_RENDER_CHUNK` images, a loop over the three
    shapes, none over images).
    """
    import numpy as np
    import torch

    f = torch.as_tensor(factors).long().cpu()
    n = f.shape[0]
    out = torch.empty(n, 1, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.float32)
    scales = np.linspace(0.5, 1.0, FACTOR_SIZES[1])
    orientations = np.linspace(0.0, 2.0 * math.pi, FACTOR_SIZES[2])
    positions = np.linspace(MARGIN, IMAGE_SIZE - MARGIN, FACTOR_SIZES[3])
    radii = torch.from_numpy(scales * HALF_SIZE).float()
    angles = torch.from_numpy(orientations).float()
    positions = torch.from_numpy(positions).float()
    offsets = torch.arange(_WINDOW)
    side = IMAGE_SIZE + 2 * _PAD
    for start in range(0, n, _RENDER_CHUNK):
        chunk = f[start : start + _RENDER_CHUNK]
        canvas = torch.zeros(chunk.shape[0], side, side, dtype=torch.bool)
        for shape in range(len(SHAPES)):
            rows = (chunk[:, 0] == shape).nonzero().squeeze(1)
            if rows.numel() == 0:
                continue
            sprite = chunk[rows]
            cx, cy = positions[sprite[:, 3]], positions[sprite[:, 4]]
            x0, y0 = cx.floor().long() - (_WINDOW // 2 - 1), cy.floor().long() - (_WINDOW // 2 - 1)
            # Pixel-centre offsets from the sprite centre over the window: (m, 1, W), (m, W, 1).
            dx = (x0.float() + 0.5 - cx).view(-1, 1, 1) + offsets.float().view(1, 1, -1)
            dy = (y0.float() + 0.5 - cy).view(-1, 1, 1) + offsets.float().view(1, -1, 1)
            radius = radii[sprite[:, 1]].view(-1, 1, 1)
            cos = torch.cos(angles[sprite[:, 2]]).view(-1, 1, 1) / radius
            sin = torch.sin(angles[sprite[:, 2]]).view(-1, 1, 1) / radius
            u = cos * dx + sin * dy
            v = cos * dy - sin * dx
            ys = (y0 + _PAD).view(-1, 1, 1) + offsets.view(1, -1, 1)
            xs = (x0 + _PAD).view(-1, 1, 1) + offsets.view(1, 1, -1)
            canvas[rows.view(-1, 1, 1), ys, xs] = _inside(shape, u, v)
        inner = canvas[:, _PAD : _PAD + IMAGE_SIZE, _PAD : _PAD + IMAGE_SIZE]
        out[start : start + chunk.shape[0], 0] = inner
    return out


@dataclass(frozen=True)
class SplitSpec:
    """A parsed split: its base, the allowed value indices of each factor, the draw count."""

    base: str
    allowed: tuple[np.ndarray, ...]
    n: int

    @property
    def grid_size(self) -> int:
        return math.prod(len(a) for a in self.allowed)


def parse_split(split: str) -> SplitSpec:
    """Parse ``BASE[,FACTOR=I|FACTOR/K|n=N ...]`` (see the module docstring)."""
    import numpy as np

    tokens = [t.strip() for t in split.split(",")]
    base = tokens[0]
    if base not in _BASE_STEPS:
        raise InputError(
            f"dataset dsprites has no split {split!r} (choose from {', '.join(_BASE_STEPS)}, "
            "optionally followed by ,FACTOR=I ,FACTOR/K or ,n=N)"
        )
    steps = dict(_BASE_STEPS[base])
    fixed: dict[str, int] = {}
    n = TEST_SIZE
    for token in tokens[1:]:
        key, sep, raw = token.partition("=") if "=" in token else token.partition("/")
        key, raw = key.strip(), raw.strip()
        # ASCII digits only (str.isdigit admits '²'), and few enough for any bound below
        if not sep or not raw or len(raw) > 18 or not all("0" <= c <= "9" for c in raw):
            raise InputError(
                f"dsprites split {split!r}: cannot read {token!r} (FACTOR=I, FACTOR/K or n=N)"
            )
        value = int(raw)
        if key == "n" and sep == "=":
            if base != "test" or value < 1:
                raise InputError(f"dsprites split {split!r}: n=N (N ≥ 1) applies to test only")
            if value > MAX_TEST_IMAGES:
                raise InputError(
                    f"dsprites split {split!r}: n={value} is above {MAX_TEST_IMAGES} images "
                    f"({MAX_TEST_IMAGES * IMAGE_SIZE * IMAGE_SIZE * 4 // 10**6} MB)"
                )
            n = value
            continue
        if key not in FACTOR_NAMES:
            raise InputError(
                f"dsprites split {split!r}: unknown factor {key!r} "
                f"(factors: {', '.join(FACTOR_NAMES)})"
            )
        size = FACTOR_SIZES[FACTOR_NAMES.index(key)]
        if sep == "=":
            if value >= size:
                raise InputError(
                    f"dsprites split {split!r}: {key} has values 0..{size - 1}, not {value}"
                )
            fixed[key] = value
            steps.pop(key, None)
        else:
            if value < 1:
                raise InputError(f"dsprites split {split!r}: {key}/K needs K ≥ 1")
            steps[key] = value
            fixed.pop(key, None)
    allowed = tuple(
        np.array([fixed[name]])
        if name in fixed
        else np.arange(0, size, steps.get(name, 1), dtype=np.int64)
        for name, size in zip(FACTOR_NAMES, FACTOR_SIZES, strict=True)
    )
    return SplitSpec(base=base, allowed=allowed, n=n)


def split_factors(spec: SplitSpec) -> torch.Tensor:
    """The factor index vectors (N, 5) int64 of a parsed split."""
    import numpy as np
    import torch

    if spec.base == "test":
        rng = np.random.default_rng(TEST_SEED)
        # One uniform column per factor over its allowed values: draws are i.i.d. on the grid.
        columns = [a[rng.integers(0, len(a), size=spec.n)] for a in spec.allowed]
        return torch.from_numpy(np.stack(columns, axis=1).astype(np.int64))
    if spec.grid_size > MAX_GRID_IMAGES:
        raise InputError(
            f"dsprites:{spec.base} restricted as given has {spec.grid_size} images, above "
            f"{MAX_GRID_IMAGES}: restrict it further, e.g. grid,orientation/4,x/4,y/4"
        )
    mesh = np.meshgrid(*spec.allowed, indexing="ij")
    return torch.from_numpy(np.stack([m.ravel() for m in mesh], axis=1).astype(np.int64))


class DSpritesDataset:
    """Procedural dSprites: images and ground-truth factors; a :class:`FactorDataset`."""

    name = "dsprites"
    splits = ("train", "test", "grid")
    default_split = "train"
    default_extractor = "inception-v3-fid"
    image_shape = (1, IMAGE_SIZE, IMAGE_SIZE)
    factor_names = FACTOR_NAMES
    factor_sizes = FACTOR_SIZES

    def load(self, split: str) -> ImageSet:
        """Images, factors and shape labels of a split (see the module docstring)."""
        factors = split_factors(parse_split(split))
        return ImageSet(images=render(factors), labels=factors[:, 0].clone(), factors=factors)

    def sample_factors(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` factor vectors (n, 5) int64, each factor uniform over its values."""
        import torch

        sizes = torch.tensor(FACTOR_SIZES, dtype=torch.float64)
        u = torch.rand(n, len(FACTOR_SIZES), generator=generator, dtype=torch.float64)
        return (u * sizes).floor().long().clamp_(max=sizes.long() - 1)

    def images_for_factors(self, factors: torch.Tensor) -> torch.Tensor:
        """The images (n, 1, 64, 64) float32 of factor vectors (n, 5) int64."""
        import torch

        f = torch.as_tensor(factors)
        if f.ndim != 2 or f.shape[1] != len(FACTOR_SIZES):
            raise InputError(
                f"dsprites: factors must be (n, {len(FACTOR_SIZES)}), got {tuple(f.shape)}"
            )
        sizes = torch.tensor(FACTOR_SIZES)
        if (f < 0).any() or (f >= sizes).any():
            raise InputError(f"dsprites: factor indices out of range (sizes {FACTOR_SIZES})")
        return render(f)


@hookimpl
def geneval_register_datasets(register) -> None:
    register(DSpritesDataset())
