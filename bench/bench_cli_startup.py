"""Benchmark the command line's start-up: ``geneval --help``, ``geneval plugins``,
``geneval weights list``, ``geneval references list`` and ``geneval compare``.

``compare`` reads two small reports written to a temporary folder.

Each command runs in a fresh process (``python -m geneval ...``, output discarded), best of
``--repeat``, beside ``python -c pass`` (the interpreter's own start-up) and
``python -c "import geneval.cli"`` (the core's modules, no plugin loaded). Prints the seconds,
the ratio to ``python -c pass``, and which heavy libraries (torch, numpy, scipy, PIL) the
command left in ``sys.modules``; ``--out`` also writes them as JSON.

Usage::

    python bench/bench_cli_startup.py [--repeat 5] [--out startup.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: What is timed: a label and the arguments after ``python``.
COMMANDS: dict[str, list[str]] = {
    "python -c pass": ["-c", "pass"],
    "import geneval.cli": ["-c", "import geneval.cli"],
    "geneval --help": ["-m", "geneval", "--help"],
    "geneval plugins": ["-m", "geneval", "plugins"],
    "geneval weights list": ["-m", "geneval", "weights", "list"],
    "geneval references list": ["-m", "geneval", "references", "list"],
    "geneval compare": ["-m", "geneval", "compare", "{a}", "{b}"],
}


def _report(value: float) -> str:
    """A minimal report of ``geneval run --json``: one metric."""
    return json.dumps(
        {
            "geneval_version": "0",
            "metrics": {"fid": {"value": value}},
            "metric_info": {"fid": {"higher_is_better": False, "uncertainty": None}},
        }
    )


HEAVY = ("torch", "numpy", "scipy", "sklearn", "PIL")
#: Runs a command of the command line in-process (its output discarded).
RUN_CLI = """
import contextlib, io, sys
from geneval.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    try:
        main(sys.argv[1:])
    except SystemExit:
        pass
"""


def best_seconds(args: list[str], repeat: int) -> float:
    """The shortest wall time of ``repeat`` runs of ``python ARGS`` in fresh processes."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run([sys.executable, *args], check=True, capture_output=True)
        best = min(best, time.perf_counter() - start)
    return best


def heavy_imports(args: list[str]) -> list[str]:
    """The heavy libraries that ``python ARGS`` leaves in ``sys.modules``."""
    report = f"import sys; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    if args[:2] == ["-m", "geneval"]:
        probe = [f"{RUN_CLI}\n{report}", *args[2:]]
    else:  # -c CODE
        probe = [f"{args[1]}\n{report}"]
    out = subprocess.run([sys.executable, "-c", *probe], check=True, capture_output=True, text=True)
    last = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    return [name for name in last.split(",") if name]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="Runs per command (best kept).")
    parser.add_argument("--out", type=Path, help="Also write the results as JSON.")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp())
    reports = {"a": folder / "a.json", "b": folder / "b.json"}
    reports["a"].write_text(_report(1.0))
    reports["b"].write_text(_report(1.1))
    commands = {
        label: [part.format(**{k: str(v) for k, v in reports.items()}) for part in command]
        for label, command in COMMANDS.items()
    }
    seconds = {label: best_seconds(command, args.repeat) for label, command in commands.items()}
    heavy = {label: heavy_imports(command) for label, command in commands.items()}
    base = seconds["python -c pass"]
    print(f"{'command':<25} {'seconds':>8} {'× python':>9}  heavy imports")
    for label in COMMANDS:
        shown = ", ".join(heavy[label]) or "none"
        print(f"{label:<25} {seconds[label]:>8.3f} {seconds[label] / base:>9.1f}  {shown}")
    if args.out is not None:
        results = {
            label: {
                "seconds": seconds[label],
                "ratio": seconds[label] / base,
                "heavy_imports": heavy[label],
            }
            for label in COMMANDS
        }
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
