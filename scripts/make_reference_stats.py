"""Write the shipped ``digits`` reference statistics for the ``digits-cnn`` extractor.

For each split (``train``, ``val``, ``test``) the extractor's ``features`` output is
accumulated in float64 with :class:`geneval.stats.FeatureStatistics` and saved, with the
per-image features, as ``reference_stats/digits-{split}-digits-cnn.npz`` (the name
:func:`geneval_reference_stats.shipped_stats_path` looks up).

Usage (after retraining the extractor, the shipped files must be rewritten)::

    OMP_NUM_THREADS=1 python scripts/make_reference_stats.py --force
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from geneval.progress import track
from geneval.stats import FeatureStatistics, make_meta, save_stats
from geneval_plugins.datasets.digits import DigitsDataset
from geneval_plugins.extractors.digits_cnn import DigitsCNNExtractor

REFERENCE_DIR = Path(__file__).resolve().parent.parent / "reference_stats"
SPLITS = ("train", "val", "test")


def split_statistics(
    split: str, batch_size: int = 512
) -> tuple[FeatureStatistics, torch.Tensor, dict[str, str]]:
    """Float64 statistics, float32 features and provenance of ``digits:{split}``."""
    extractor = DigitsCNNExtractor()
    loaded = extractor.load(device=torch.device("cpu"))
    images = DigitsDataset().load(split).images
    stats = FeatureStatistics(extractor.outputs[extractor.feature_output])
    chunks = []
    starts = range(0, images.shape[0], batch_size)
    for start in track(starts, total=len(starts), desc=f"digits:{split}"):
        features = loaded(images[start : start + batch_size])[extractor.feature_output]
        stats.update(features)
        chunks.append(features)
    meta = make_meta(
        extractor=extractor.name,
        output=extractor.feature_output,
        weights_sha256=loaded.weights_sha256,
        convention=loaded.convention,
    )
    return stats, torch.cat(chunks), meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output-dir", type=Path, default=REFERENCE_DIR)
    parser.add_argument("--force", action="store_true", help="overwrite existing files")
    args = parser.parse_args()
    for split in SPLITS:
        stats, features, meta = split_statistics(split)
        path = args.output_dir / f"digits-{split}-digits-cnn.npz"
        save_stats(path, stats, meta, features=features, force=args.force)
        print(f"wrote {path} (n={stats.n}, d={stats.dim})")


if __name__ == "__main__":
    main()
