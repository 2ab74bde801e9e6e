"""Train the ``digits-cnn`` extractor on ``digits:train`` and write its safetensors weights.

Deterministic on CPU for a given seed (one thread, deterministic algorithms): every random
draw — initialisation, dropout, shuffling, ±1-pixel shift augmentation — comes from the seed.
The epoch with the best ``digits:val`` accuracy (ties: lower val loss) is kept; ``digits:test``
is only reported, never used for selection.

Usage (the shipped weights)::

    OMP_NUM_THREADS=1 python scripts/train_digits_cnn.py --seed 0 \
        -o geneval_plugins/extractors/digits_cnn.safetensors --force
"""

from __future__ import annotations

import argparse
import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from geneval import __version__
from geneval.io import atomic_path
from geneval.progress import progress_bar
from geneval.training import minibatches
from geneval_plugins.datasets.digits import DigitsDataset
from geneval_plugins.extractors.digits_cnn import NAME, shipped_weights_path
from geneval_plugins.extractors.digits_cnn_network import DigitsCNN


def random_shift(
    images: torch.Tensor, generator: torch.Generator, max_shift: int = 1
) -> torch.Tensor:
    """Shift each image by an independent offset in ``[-max_shift, max_shift]`` per axis, zero fill.

    Batched: the images are zero-padded by ``max_shift`` and each one is cropped back to its
    size at its own offset with advanced indexing.
    """
    n, _, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4)
    dy = torch.randint(-max_shift, max_shift + 1, (n,), generator=generator)
    dx = torch.randint(-max_shift, max_shift + 1, (n,), generator=generator)
    rows = torch.arange(h)[None, :] + max_shift + dy[:, None]  # (n, h)
    cols = torch.arange(w)[None, :] + max_shift + dx[:, None]  # (n, w)
    batch = torch.arange(n)[:, None, None]
    return padded[batch, 0, rows[:, :, None], cols[:, None, :]].unsqueeze(1)


def save_weights(path: Path, net: DigitsCNN, config: Mapping[str, Any], *, force: bool) -> Path:
    """Write the weights atomically as safetensors, byte-for-byte reproducible.

    The record goes into a *single* metadata entry (``config``, sorted JSON): safetensors
    writes several metadata entries in hash-map order, which changes from run to run and
    would change the file's sha256 for identical weights.
    """
    record = {"geneval_extractor": NAME, "geneval_version": __version__, **config}
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    with atomic_path(path, force=force, what="weights file") as tmp:
        save_file(tensors, str(tmp), metadata={"config": json.dumps(record, sort_keys=True)})
    return path


@torch.no_grad()
def evaluate(net: DigitsCNN, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """``(accuracy, mean cross-entropy)`` of ``net`` in eval mode."""
    net.eval()
    _, logits = net(images)
    loss = F.cross_entropy(logits.double(), labels).item()
    accuracy = (logits.argmax(dim=1) == labels).double().mean().item()
    return accuracy, loss


def train(
    *, seed: int, epochs: int, batch_size: int, lr: float, weight_decay: float
) -> tuple[DigitsCNN, dict[str, float | int]]:
    """Train on ``digits:train`` and return the best-on-``val`` network and its record."""
    torch.manual_seed(seed)  # initialisation and dropout
    generator = torch.Generator().manual_seed(seed)  # shuffling and augmentation
    data = DigitsDataset()
    train_set, val_set = data.load("train"), data.load("val")
    net = DigitsCNN()
    optimiser = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = train_set.images.shape[0] // batch_size
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=epochs * steps_per_epoch)
    batches = minibatches(torch.arange(train_set.images.shape[0]), batch_size, generator)
    best: dict[str, float | int] = {"val_accuracy": -1.0, "val_loss": float("inf"), "epoch": -1}
    best_state = copy.deepcopy(net.state_dict())
    with progress_bar(total=epochs, desc="digits-cnn", unit="epoch") as bar:
        for epoch in range(epochs):
            net.train()
            for _ in range(steps_per_epoch):
                idx = next(batches)
                x = random_shift(train_set.images[idx], generator)
                _, logits = net(x)
                loss = F.cross_entropy(logits, train_set.labels[idx])
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                schedule.step()
            acc, val_loss = evaluate(net, val_set.images, val_set.labels)
            if (acc, -val_loss) > (best["val_accuracy"], -best["val_loss"]):
                best = {"val_accuracy": acc, "val_loss": val_loss, "epoch": epoch + 1}
                best_state = copy.deepcopy(net.state_dict())
            bar.update(1)
    net.load_state_dict(best_state)
    return net.eval(), best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=shipped_weights_path())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-3)
    parser.add_argument("--force", action="store_true", help="overwrite an existing output")
    args = parser.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    net, best = train(
        seed=args.seed,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
    )
    data = DigitsDataset()
    results = {}
    for split in ("train", "val", "test"):
        part = data.load(split)
        results[split] = evaluate(net, part.images, part.labels)[0]
    config = {
        "architecture": "DigitsCNN conv16-conv32-pool-conv64-pool-fc128-fc10",
        "seed": args.seed,
        "epochs": args.epochs,
        "selected_epoch": best["epoch"],
        "batch_size": args.batch_size,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "augmentation": "random shift +-1 pixel, zero fill",
        "accuracy": results,
    }
    save_weights(args.output, net, config, force=args.force)
    print(f"selected epoch {best['epoch']} of {args.epochs}")
    for split, acc in results.items():
        print(f"{split} accuracy: {acc:.4f}")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
