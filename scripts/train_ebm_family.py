"""Train the bundled ``rbm``, ``grbm`` and ``ebm`` digits checkpoints with ``geneval train``.

Each checkpoint is produced by exactly one ``geneval train`` command (listed in ``COMMANDS``
and in scripts/README.md), which calls the family's ``train(...)`` with the ``digits:train``
images, the seed and the step count; the command line is recorded in the checkpoint's config
(``train.argv``). Run from the repository root::

    python scripts/train_ebm_family.py [rbm grbm ebm] [--force]

One thread each (``OMP_NUM_THREADS=1``, ``nice -n 5``): the machine is shared.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

#: model → (seed, steps, extra ``--opt`` assignments) of the bundled checkpoint.
COMMANDS: dict[str, tuple[int, int, tuple[str, ...]]] = {
    "rbm": (0, 10000, ()),
    "grbm": (0, 10000, ()),
    "ebm": (0, 3000, ()),
}


def command(model: str, force: bool) -> list[str]:
    """The ``geneval train`` command that writes ``plugins/models/<model>-digits.safetensors``."""
    seed, steps, opts = COMMANDS[model]
    argv = [
        "geneval", "train", "--model", model, "--dataset", "digits",
        "-o", f"plugins/models/{model}-digits.safetensors",
        "--seed", str(seed), "--steps", str(steps), "--device", "cpu",
    ]
    for opt in opts:
        argv += ["--opt", opt]
    return argv + (["--force"] if force else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=list(COMMANDS), choices=list(COMMANDS))
    parser.add_argument("--force", action="store_true", help="overwrite existing checkpoints")
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for model in args.models:
        argv = command(model, args.force)
        print("$ OMP_NUM_THREADS=1 nice -n 5 " + " ".join(argv), flush=True)
        start = time.perf_counter()
        python_m = [sys.executable, "-m", "geneval", *argv[1:]]  # `geneval` from this Python
        subprocess.run(["nice", "-n", "5", *python_m], env=env, check=True)
        print(f"  {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
