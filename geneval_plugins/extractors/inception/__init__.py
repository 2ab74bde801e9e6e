"""Extractor ``inception-v3-fid``: the FID Inception network's pool3 features and logits.

Outputs, from float images in ``[0, 1]`` (N, 1 or 3, H, W) of any size:

* ``pool`` (2048) — the average-pooled ``Mixed_7c`` activations used by FID and KID;
* ``spatial`` (2023) — the ADM evaluator's sFID features: the TF graph's ``mixed_6/conv:0``
  (``Mixed_6d.branch1x1`` after BatchNorm and ReLU), first 7 channels, flattened in TF's
  (17, 17, 7) order (see :func:`~geneval_plugins.extractors.inception.network.spatial_features`
  for how that tensor was identified), from the same forward pass;
* ``logits_unbiased`` (1008) — the classifier without its bias, used by the Inception Score
  as in the original TF code and torch-fidelity;
* ``logits`` (1008) — the classifier with its bias.

Images are brought to 299×299 by one of the conventions of
:mod:`geneval_plugins.extractors.resize`, on the extractor's device. The weights
(``pt_inception-2015-12-05-6726825d.pth``, the 2015-12-05 TF graph ported by pytorch-fid) are
found as :mod:`geneval_plugins.extractors.weights` describes: ``--extractor-weights``,
``$GENEVAL_INCEPTION_WEIGHTS``, the torch hub checkpoint cache, then the published URL. The
file is read with ``torch.load(weights_only=True)`` and its sha256 recorded as
``weights_sha256`` (:func:`geneval.cache.file_sha256`: remembered while the file's size, mtime,
ctime, inode and device are unchanged, so a 92 MB file is hashed once and a replaced one again).

At load time every BatchNorm is folded into its convolution and the network runs in
channels-last layout under ``torch.inference_mode``, on every device: about 1.45× faster on
a CPU than the plain network (measured single-threaded, batch 8: 0.150 vs 0.220 s per image),
and the layout cuDNN's tensor-core kernels (``--precision bf16|tf32``) work in on a GPU, while
the features stay within 1e-6 of the plain network on ordinary weights and within 1e-4 of the
features' scale on the deliberately chaotic random test weights (see
``tests/test_inception.py``).

References
----------
.. [1] M. Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local
   Nash Equilibrium", NeurIPS 2017.
.. [2] M. Seitzer, pytorch-fid (2020), ``FID_WEIGHTS_URL``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from geneval.plugin import CommandOption, InputError, WeightsFile, file_sha256, hookimpl, quote
from geneval_plugins.extractors.inception.dimensions import NUM_CLASSES, POOL_DIM, SPATIAL_DIM
from geneval_plugins.extractors.published_stats import fetch_reference_stats
from geneval_plugins.extractors.resize import (
    RESIZE_CONVENTIONS,
    check_convention,
    resize_for_inception,
)
from geneval_plugins.extractors.weights import find, load_state_dict

if TYPE_CHECKING:
    import torch

    from geneval_plugins.extractors.inception.network import FIDInceptionV3

NAME = "inception-v3-fid"
WEIGHTS = WeightsFile(
    name=NAME,
    what="Inception weights",
    filename="pt_inception-2015-12-05-6726825d.pth",
    url="https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
    "pt_inception-2015-12-05-6726825d.pth",
    env="GENEVAL_INCEPTION_WEIGHTS",
    # torch hub convention: the file name carries its sha256 prefix; pytorch-fid publishes no
    # full digest, so the prefix is what is checked.
    sha256="6726825d",
)
WEIGHTS_FILENAME = WEIGHTS.filename
OUTPUTS = {
    "pool": POOL_DIM,
    "spatial": SPATIAL_DIM,
    "logits_unbiased": NUM_CLASSES,
    "logits": NUM_CLASSES,
}


def find_inception_weights(weights: Path | str | None = None, *, download: bool = True) -> Path:
    """The weights file: ``weights``, ``$GENEVAL_INCEPTION_WEIGHTS``, the hub cache, the URL."""
    return find(WEIGHTS, weights, download=download)


def load_inception_network(
    path: Path, device: torch.device, *, fold_batchnorm: bool = True
) -> FIDInceptionV3:
    """Build the FID Inception, load ``path`` (``weights_only=True``), prepare for inference."""
    import torch

    from geneval_plugins.extractors.inception.network import (
        empty_network,
        load_published_state_dict,
    )

    state = load_state_dict(path, "Inception weights")
    model = empty_network()
    try:
        load_published_state_dict(model, state)
    except (KeyError, RuntimeError) as exc:
        raise InputError(f"Inception weights {quote(path)}: {exc}".splitlines()[0]) from None
    model.eval().requires_grad_(False)
    if fold_batchnorm:
        model.fold_batchnorm()
    return model.to(device).to(memory_format=torch.channels_last)


class LoadedInception:
    """The FID Inception on a device, called on image batches (see the module docstring)."""

    name = "inception-v3-fid"
    outputs = OUTPUTS

    def __init__(
        self,
        network: FIDInceptionV3,
        *,
        device: torch.device,
        convention: str,
        weights_sha256: str,
        weights_path: Path,
    ) -> None:
        self.network = network
        self.device = device
        self.convention = convention
        self.weights_sha256 = weights_sha256
        self.weights_path = weights_path

    def _to_device(self, images: torch.Tensor) -> torch.Tensor:
        if images.device == self.device:
            return images
        if self.device.type == "cuda" and images.device.type == "cpu":
            return images.pin_memory().to(self.device, non_blocking=True)
        return images.to(self.device)

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"pool", "spatial", "logits_unbiased", "logits"}`` float32 on the extractor's
        device."""
        import torch

        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise InputError(
                "inception-v3-fid expects images (N, 1 or 3, H, W), "
                f"got shape {tuple(images.shape)}"
            )
        if not images.is_floating_point():
            raise InputError(f"inception-v3-fid expects float images in [0, 1], got {images.dtype}")
        x = self._to_device(images)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        with torch.inference_mode():
            x = resize_for_inception(x, self.convention)
            out = self.network(x.contiguous(memory_format=torch.channels_last))
        return {k: v.float() for k, v in out.items()}


class InceptionV3FID:
    """The ``inception-v3-fid`` extractor plugin: the default extractor of runs whose
    reference is not a dataset with an extractor of its own."""

    name = NAME
    default = True
    outputs = OUTPUTS
    published_weights = (WEIGHTS,)
    feature_output = "pool"
    logits_output = "logits_unbiased"
    resize_options = RESIZE_CONVENTIONS
    #: The ADM evaluator's batches (``mu``/``sigma`` of pool3, ``mu_s``/``sigma_s`` of
    #: ``spatial``) are computed by this network, from the 2015-12-05 TF graph, whose
    #: bilinear resize is ``tf1``: a batch without provenance is read as such.
    statistics_layouts = {"adm": "tf1"}

    def published_stats(self, dataset: str, split: str | None, convention: str) -> Path | None:
        """Published statistics of a benchmark (``cifar10:train`` ...) for this extractor under
        ``convention``, fetched once into the cache; ``None`` when none are published."""
        return fetch_reference_stats(dataset, split or "train", self.name, convention)

    def load(
        self, *, device: torch.device, weights: Path | None = None, resize: str | None = None
    ) -> LoadedInception:
        """Find and load the weights on ``device``, resizing by ``resize`` (default tf1)."""
        import torch

        convention = check_convention(resize)
        path = find_inception_weights(weights)
        network = load_inception_network(path, torch.device(device))
        return LoadedInception(
            network,
            device=torch.device(device),
            convention=convention,
            weights_sha256=file_sha256(path),
            weights_path=path,
        )


@hookimpl
def geneval_register_extractors(register) -> None:
    register(InceptionV3FID())


#: Printed as soon as ``--inception-weights`` is read, before anything can fail.
DEPRECATION_NOTE = (
    f"--inception-weights is deprecated: use --extractor-weights (or --extractor-weights "
    f"{NAME}=PATH when the run uses several extractors)"
)


def _deprecated(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """Print the deprecation note on stderr when the option is given, at once: it comes
    before any error the value may lead to (a missing file, an ambiguous run)."""
    if value is not None and not ctx.resilient_parsing:
        click.echo(f"geneval: warning: {DEPRECATION_NOTE}", err=True)
    return value


@hookimpl
def geneval_register_commands(register) -> None:
    """The option's former spelling, ``--inception-weights``, keeps working on ``run`` and
    ``stats``; its deprecation note is printed when it is read (:func:`_deprecated`)."""
    register(
        CommandOption(
            commands=("run", "stats"),
            option=click.Option(
                ["--inception-weights"],
                type=click.Path(path_type=Path),
                hidden=True,
                callback=_deprecated,
            ),
            forward_to="extractor_weights",
        )
    )
