"""Compute device selection: CUDA, then Apple MPS, then the CPU.

Owns: turning a user's ``--device`` choice into a ``torch.device``, and the per-device choices
that follow from it: autocast dtype (inference and training), pinned memory, fused AdamW, and
whether ``torch.compile`` can work here. Imports only :mod:`sketchcolor.errors`.
"""

from __future__ import annotations

import contextlib
import platform
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


def inference_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype of the network while sampling (``SampleConfig.precision``), None for fp32.

    ``"auto"``: bfloat16 on CUDA where the GPU supports it, else float16; bfloat16 on a CPU with
    native bfloat16 arithmetic (:func:`cpu_bf16_native`: AMX or AVX512-BF16 on x86, BF16 on Arm),
    where the network runs about twice as fast and the held-out scores match fp32's
    (docs/performance.md, "Inference precision"); fp32 on other CPUs, where bfloat16 is
    emulated and slower, and on MPS. ``"bf16"`` and ``"fp32"`` force it (bf16 on a CPU without
    native support is correct but slow). ``"fp16"`` is for GPUs.

    Raises:
        DeviceError: ``"fp16"`` on the CPU, ``"bf16"`` on a CUDA GPU without bfloat16, or an
            unknown name.
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise DeviceError("this CUDA GPU has no bfloat16", hint="use --precision fp16 or fp32")
        return torch.bfloat16
    if precision == "fp16":
        if device.type == "cpu":
            raise DeviceError("fp16 is for GPUs; on the CPU use --precision bf16 or fp32")
        return torch.float16
    if precision != "auto":
        raise DeviceError(f"unknown precision '{precision}'", hint="use auto, fp32, bf16 or fp16")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_bf16_native():
        return torch.bfloat16
    return None


def precision_name(dtype: torch.dtype | None) -> str:
    """The name a record keeps for an autocast dtype: ``"fp32"``, ``"bf16"`` or ``"fp16"``."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


_X86 = ("x86_64", "amd64", "x86", "i386", "i686")


def cpu_bf16_native() -> bool:
    """Whether this CPU has native bfloat16 arithmetic, so bf16 autocast can pay off.

    oneDNN's own check (``torch.ops.mkldnn._is_mkldnn_bf16_supported``) is necessary but not
    enough: on x86 it is true for any AVX-512 CPU, which emulates bfloat16 (slower than fp32), so
    x86 also needs AVX512-BF16 or AMX tiles (``torch.cpu._is_avx512_bf16_supported``,
    ``torch.cpu._is_amx_tile_supported``). ``torch.backends.cpu.get_cpu_capability()`` reports
    only ``"AVX512"`` either way and cannot tell them apart. On Arm, oneDNN reports bf16 only
    with the BF16 instructions, so its check is enough.

    Returns:
        True for native bfloat16; False otherwise, and on any torch build whose probes are
        missing or fail (the safe answer: fp32).
    """
    try:
        if not bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()):
            return False
        machine = platform.machine().lower()
        if machine in _X86:
            return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
        return machine in ("aarch64", "arm64")
    except Exception:  # noqa: BLE001 - an unknown build: fall back to fp32
        return False


def train_autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype of the training forward pass for ``optim.precision``, or None for fp32.

    ``"auto"`` picks bfloat16 on CUDA where supported (else float16, with loss scaling) and fp32
    on the CPU and MPS. bfloat16 on a CPU with native bfloat16 (:func:`cpu_bf16_native`) is much
    faster, but in the fp32-against-bf16 comparisons of docs/training.md it costs a little per
    step (held-out CIEDE2000 1-2 % higher at equal steps), so it is not a default: ask for it
    with ``"bf16"`` (the bundled model's recipe does, as it is ahead per hour of training). Weights, optimiser state and the EMA stay fp32 in every case.

    Args:
        precision: ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        device: The training device.
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None


def fused_adamw_ok(device: torch.device) -> bool:
    """Whether this torch has a fused AdamW kernel for ``device`` (``AdamW(fused=True)``).

    CUDA has had one since torch 2.0, the CPU since about 2.4; older builds, or builds without
    the internal list this reads, answer for CUDA only.
    """
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        return device.type in _get_fused_kernels_supported_devices()
    except Exception:  # noqa: BLE001 - an unknown build
        return device.type == "cuda"


def torch_compile_problem(device: torch.device) -> str | None:
    """Why ``torch.compile`` (the inductor backend) cannot work on ``device`` here, or None.

    Inductor writes and builds C++ for the CPU, so it needs a C++ compiler (``$CXX``, else g++ or
    clang++ on the PATH); on CUDA it needs Triton. Checked before training so a run fails at
    once with a message, not after its data is prepared.
    """
    try:
        import torch._dynamo

        if not torch._dynamo.is_dynamo_supported():
            return f"torch.compile is not supported with this Python and torch {torch.__version__}"
    except Exception as exc:  # noqa: BLE001
        return f"torch.compile is not available in this torch build ({type(exc).__name__})"
    if device.type == "cuda":
        try:
            from torch.utils._triton import has_triton

            if not has_triton():
                return "torch.compile on CUDA needs Triton, which is not installed"
        except ImportError:
            pass
        return None
    if device.type == "cpu":
        try:
            from torch._inductor.cpp_builder import get_cpp_compiler

            get_cpp_compiler()
        except ImportError:
            return None  # an older torch: let compilation itself tell
        except Exception:  # noqa: BLE001 - InvalidCxxCompiler and the like
            return (
                "torch.compile on the CPU needs a C++ compiler and none was found "
                "(install g++ or clang++, or point $CXX at one)"
            )
    return None


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    """Autocast context for the network on ``device`` in ``dtype`` (None: fp32, a no-op)."""
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def pin_memory_ok(device: torch.device) -> bool:
    """Whether host tensors bound for ``device`` should be pinned (only CUDA benefits)."""
    return device.type == "cuda"
