"""Extractor ``digits-cnn``: a small CNN classifier of the 8×8 ``digits``, shipped with weights.

The network is trained on ``digits:train`` by ``scripts/train_digits_cnn.py`` (fixed seed) and
its weights ship beside this module as ``digits_cnn.safetensors``. It plays the role Inception
plays for natural images (and LeNet for MNIST in the generative-model literature): its
penultimate activations are the ``features`` for FID/KID, its ten class scores the ``logits``
for the Inception Score. Inception features of 8×8 digits would be meaningless.

Input convention (``grey-luma601-area-8x8``): float images in ``[0, 1]``, NCHW, any size,
1 or 3 channels. RGB is turned grey with the ITU-R BT.601 luma weights
``Y = 0.299 R + 0.587 G + 0.114 B`` (which sum to one, so a grey image replicated to three
channels stays the same grey image); any other size is resized to 8×8 by area averaging
(:func:`torch.nn.functional.adaptive_avg_pool2d`), which is exact for integer downscales, so
a digit upsampled ×k by pixel replication maps back onto itself. The digits themselves are
8×8 in ``[0, 1]`` (sklearn's 0–16 grey levels divided by 16) and pass through unchanged. Any
other input is mapped visibly: the run's report notes the mapping (e.g. "3×32×32 to its 8×8
grey input"), once per run, naming the first shape it mapped.

References
----------
.. [1] Y. LeCun, L. Bottou, Y. Bengio and P. Haffner, "Gradient-based learning applied to
   document recognition", Proc. IEEE 86(11), 1998 (LeNet: conv/pool layers + fully connected
   head).
.. [2] M. Heusel et al., "GANs trained by a two time-scale update rule converge to a local
   Nash equilibrium", NeurIPS 2017 (FID on the penultimate layer of a pretrained classifier).
.. [3] ITU-R Recommendation BT.601, luma coefficients 0.299, 0.587, 0.114.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

from geneval.plugin import InputError, hookimpl, sha256_of, warn

if TYPE_CHECKING:
    import torch

    from geneval_plugins.extractors.digits_cnn_network import LoadedDigitsCNN

#: Name under which the extractor registers.
NAME = "digits-cnn"
#: The preprocessing applied to every input, recorded in reports and statistics files.
CONVENTION = "grey-luma601-area-8x8"
#: File name of the shipped weights (package data beside this module).
WEIGHTS_FILE = "digits_cnn.safetensors"
#: Input side length the network was trained on.
IMAGE_SIZE = 8
#: Dimension of the penultimate ``features`` output.
FEATURE_DIM = 128
#: Number of classes (``logits`` dimension).
NUM_CLASSES = 10
#: ITU-R BT.601 luma weights for R, G, B.
LUMA_601 = (0.299, 0.587, 0.114)


def shipped_weights_path() -> Path:
    """Path of the weights shipped as package data beside this module."""
    return Path(str(files(__package__ or "geneval_plugins.extractors") / WEIGHTS_FILE))


class DigitsCNNExtractor:
    """The ``digits-cnn`` extractor plugin (default extractor of the ``digits`` dataset)."""

    name = NAME
    outputs = {"features": FEATURE_DIM, "logits": NUM_CLASSES}
    feature_output = "features"
    logits_output = "logits"
    resize_options: tuple[str, ...] = ()
    #: Fewest samples for a trustworthy FID or KID on these features: twice the feature
    #: dimension (the bundled default's 1000 samples are enough, 20 are not).
    min_samples = 2 * FEATURE_DIM

    def load(
        self, *, device: torch.device, weights: Path | None = None, resize: str | None = None
    ) -> LoadedDigitsCNN:
        """Load the shipped weights (or the safetensors file ``weights``) onto ``device``.

        The resize is fixed (grey, area average to 8×8); any ``resize`` other than ``None``
        is refused rather than silently ignored.
        """
        if resize is not None:
            raise InputError(
                f"--resize {resize}: extractor {NAME} has a fixed input convention ({CONVENTION})"
            )
        import torch

        from geneval_plugins.extractors.digits_cnn_network import LoadedDigitsCNN, load_network

        path = Path(weights) if weights is not None else shipped_weights_path()
        device = torch.device(device)
        network = load_network(path, device)
        return NotedMapping(LoadedDigitsCNN(network, sha256_of(path), device))


def mapping_note(shape: tuple[int, ...]) -> str | None:
    """The note a batch of ``shape`` (N, C, H, W) gets: ``None`` for 8×8 grey images (the
    network's own input), else a line naming the mapping to 8×8 grey."""
    if len(shape) != 4 or tuple(shape[1:]) == (1, IMAGE_SIZE, IMAGE_SIZE):
        return None
    channels, height, width = shape[1:]
    steps = []
    if channels != 1:
        steps.append(f"{channels} channels to grey (BT.601 luma)")
    if (height, width) != (IMAGE_SIZE, IMAGE_SIZE):
        steps.append(f"{height}×{width} to {IMAGE_SIZE}×{IMAGE_SIZE} (area average)")
    return (
        f"extractor {NAME} maps images of {channels}×{height}×{width} to its 8×8 grey input: "
        f"{', '.join(steps)}; its features describe 8×8 grey digits, not these images "
        "(choose another --extractor for natural images)"
    )


def _grey_at_input_size(images: torch.Tensor) -> bool:
    """Whether ``images`` are 8×8 with three equal channels (grey stored as RGB)."""
    if tuple(images.shape[1:]) != (3, IMAGE_SIZE, IMAGE_SIZE):
        return False
    return bool((images[:, :1] == images[:, 1:]).all())


class NotedMapping:
    """A loaded ``digits-cnn`` that notes (once, in the report's warnings) when the images it
    is given are not 8×8 grey and are mapped to that input (:func:`mapping_note`); every
    other attribute is the loaded network's."""

    def __init__(self, loaded: LoadedDigitsCNN) -> None:
        self._loaded = loaded
        self._noted = False
        self.name = loaded.name
        self.outputs = loaded.outputs
        self.convention = loaded.convention
        self.weights_sha256 = loaded.weights_sha256

    def __getattr__(self, attribute: str) -> object:
        return getattr(self._loaded, attribute)

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The network's ``features`` and ``logits`` of ``images``, with the note."""
        message = None if self._noted else mapping_note(tuple(images.shape))
        if message is not None and _grey_at_input_size(images):
            message = None  # grey replicated to three channels at 8×8: nothing is mapped
        if message is not None:
            self._noted = True
            warn(message)
        return self._loaded(images)


@hookimpl
def geneval_register_extractors(register) -> None:
    register(DigitsCNNExtractor())
