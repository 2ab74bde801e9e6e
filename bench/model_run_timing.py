"""Time ``geneval run --model NAME --metrics fid,kid --quiet`` end to end in a fresh process.

Shared by the model benchmarks (``bench_ddpm.py``, ``bench_ncsn.py``, ``bench_mcmc.py``):
start-up, loading, sampling with the checkpoint's default sampler, features, FID and KID
against the model's dataset.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def time_model_run(name: str, num_samples: int | None = None) -> dict[str, float]:
    """Wall and CPU seconds of one ``geneval run --model NAME --metrics fid,kid`` and the FID
    and KID it reports (``num_samples``: the run's ``--num-samples``, its default if None)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "geneval", "run", "--model", name, "--metrics", "fid,kid"]
        if num_samples is not None:
            cmd += ["--num-samples", str(num_samples)]
        cmd += ["--quiet", "--json", str(report)]
        cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        elapsed = time.perf_counter() - start
        cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        data = json.loads(report.read_text())
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    return {
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "fid": data["metrics"]["fid"]["value"],
        "kid": data["metrics"]["kid"]["value"],
    }
