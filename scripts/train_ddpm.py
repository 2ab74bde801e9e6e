"""Train the bundled digits DDPM exactly as ``geneval train --model ddpm --dataset digits`` does.

Calls :meth:`DDPMFamily.train` with the ``digits:train`` images, the seed, the number of steps
and the ``--opt`` options typed from ``train_defaults`` (the same call the CLI makes). The
bundled checkpoint was written by::

    OMP_NUM_THREADS=1 nice -n 5 python scripts/train_ddpm.py \\
        -o plugins/models/ddpm-digits.safetensors --seed 0 --steps 12000 \\
        --opt save_training_state=false

which is ``geneval train --model ddpm --dataset digits -o plugins/models/ddpm-digits.safetensors
--seed 0 --steps 12000 --opt save_training_state=false`` (see scripts/README.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from geneval.device import resolve_device
from geneval.options import parse_options
from geneval_plugins.datasets.digits import DigitsDataset
from geneval_plugins.models.ddpm import TRAIN_DEFAULTS, DDPMFamily


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    options = parse_options(args.opt, TRAIN_DEFAULTS, owner="model ddpm")
    data = DigitsDataset().load("train")
    out = DDPMFamily().train(
        data,
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
