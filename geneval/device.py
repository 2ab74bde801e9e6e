"""Device selection shared by every command."""

from __future__ import annotations

import torch

from geneval.errors import InputError, setting


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """Turn ``auto|cpu|cuda|cuda:N`` into a :class:`torch.device`.

    ``auto`` picks ``cuda`` when a CUDA device is available and ``cpu`` otherwise.
    """
    if isinstance(spec, torch.device):
        return spec
    if spec is None or spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise InputError(
            f"{setting('device')}: unknown device {spec!r} (use auto, cpu, cuda or cuda:N)"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"{setting('device')} {spec}: CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(
                f"{setting('device')} {spec}: only {torch.cuda.device_count()} CUDA device(s) "
                "present"
            )
    elif device.type != "cpu":
        raise InputError(f"{setting('device')}: unsupported device type {device.type!r}")
    return device
