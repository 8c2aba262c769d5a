"""Compute device selection: CUDA, then Apple MPS, then the CPU.

Owns: turning a user's ``--device`` choice into a ``torch.device``, and the per-device choices
that follow from it (autocast dtype, pinned memory). Imports only :mod:`sketchcolor.errors`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

import torch

from .errors import DeviceError

DeviceName = Literal["auto", "cpu", "cuda", "mps"]


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str = "auto") -> torch.device:
    """Return the device to run on.

    Args:
        name: ``"auto"`` (CUDA if available, else MPS, else CPU), ``"cpu"``, ``"cuda"``,
            ``"cuda:N"`` or ``"mps"``.

    Returns:
        The chosen ``torch.device``.

    Raises:
        DeviceError: The device was asked for explicitly but is not available.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not _mps_available():
            raise DeviceError(
                "device 'mps' requested but Apple MPS is not available", hint="use --device cpu"
            )
        return torch.device("mps")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device '{name}' requested but CUDA is not available",
                hint="install a CUDA build of torch or use --device cpu",
            )
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(
                f"device '{name}' requested but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
        return dev
    raise DeviceError(f"unknown device '{name}'", hint="use auto, cpu, cuda, cuda:N or mps")


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """Reduced precision used for the network on ``device``, or None for float32.

    CUDA uses bfloat16 where the GPU supports it, else float16. MPS and the CPU stay in float32
    (on this project's CPU benchmark, bf16 is slower; MPS fp16 autocast is not reliably faster).
    """
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None


@contextlib.contextmanager
def autocast(device: torch.device, enabled: bool = True) -> Iterator[None]:
    """Autocast context for the network on ``device`` (a no-op where fp32 is used)."""
    dtype = autocast_dtype(device) if enabled else None
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def pin_memory_ok(device: torch.device) -> bool:
    """Whether host tensors bound for ``device`` should be pinned (only CUDA benefits)."""
    return device.type == "cuda"
