"""Train the bundled digits NCSN exactly as ``geneval train --model ncsn --dataset digits`` does.

Calls :meth:`NCSNFamily.train` with the ``digits:train`` images, the seed, the number of steps
and the ``--opt`` options (typed like their defaults in ``TRAIN_DEFAULTS``), the same call the
CLI makes. The bundled checkpoint was written by::

    OMP_NUM_THREADS=1 nice -n 5 python scripts/train_ncsn.py \\
        -o plugins/models/ncsn-digits.safetensors --seed 0 --steps 10000 \\
        --opt save_training_state=false --force

which is ``geneval train --model ncsn --dataset digits -o plugins/models/ncsn-digits.safetensors
--seed 0 --steps 10000 --opt save_training_state=false --force`` (see scripts/README.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from geneval.device import resolve_device
from geneval_plugins.datasets.digits import DigitsDataset
from geneval_plugins.models.ncsn import TRAIN_DEFAULTS, NCSNFamily


def _typed(key: str, text: str) -> object:
    """Type an ``--opt key=value`` string like its default in ``TRAIN_DEFAULTS``."""
    default = TRAIN_DEFAULTS[key]
    if isinstance(default, bool):
        return text.lower() in ("1", "true", "yes", "on")
    return type(default)(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    options = {}
    for item in args.opt:
        key, _, value = item.partition("=")
        if key not in TRAIN_DEFAULTS:
            parser.error(f"unknown option {key!r} (known: {', '.join(TRAIN_DEFAULTS)})")
        options[key] = _typed(key, value)
    out = NCSNFamily().train(
        DigitsDataset().load("train"),
        output=args.output,
        steps=args.steps,
        device=resolve_device(args.device),
        seed=args.seed,
        resume=args.resume,
        force=args.force,
        options=options,
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
