"""Model files: one ``.safetensors`` holding the weights and everything needed to use them.

Owns: saving and strictly loading inference checkpoints, the :class:`ModelBundle` a loaded model
comes as, and locating the model bundled inside the package. The format is described in
docs/checkpoint-format.md; in short, the safetensors metadata (string -> string) holds:

=====================  ====================================================================
``format``             always ``"sketchcolor"``
``format_version``     integer, :data:`FORMAT_VERSION`; newer files are refused by older code
``config``             JSON of :class:`~sketchcolor.config.ColorizerConfig` (model, schedule,
                       colour scaling, conditioning layout, prediction type, resolution)
``sketchcolor_version`` package version that wrote the file
``step``               training step of the weights
``data_digest``        digest of the training data listing ("" if unknown)
``weights_dtype``      ``float32`` or ``float16`` (weights are cast to float32 on load)
``recipe``             free text: how the model was made (optional)
=====================  ====================================================================

Loading never unpickles: pickle and PyTorch ``.pt`` zip files are refused by their first bytes.
Unknown config keys, missing or unexpected weights and newer format versions are errors.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from . import __version__
from .config import ColorizerConfig, from_dict, to_dict
from .denoiser import Denoiser
from .errors import CheckpointError, ConfigError
from .io import atomic_write
from .models.unet import UNet
from .schedules import NoiseSchedule

FORMAT_NAME = "sketchcolor"
#: Newest version of the checkpoint layout this code reads. A file is stamped with the lowest
#: version that describes it: 1 for models without reference conditioning (readable by every
#: release), 2 for models with a reference encoder (their config has keys version 1 lacks).
FORMAT_VERSION = 2
#: Metadata keys a checkpoint may carry; anything else is refused.
METADATA_KEYS = frozenset(
    {
        "format",
        "format_version",
        "config",
        "sketchcolor_version",
        "step",
        "data_digest",
        "weights_dtype",
        "recipe",
    }
)
#: Where the default model lives inside the installed package.
DEFAULT_MODEL_RESOURCE = ("sketchcolor.weights", "default.safetensors")


@dataclasses.dataclass(frozen=True)
class ModelBundle:
    """A loaded model with everything needed to sample from it.

    Attributes:
        config: The model's full configuration.
        model: The network, in eval mode, on ``device``.
        schedule: Its noise schedule.
        denoiser: ``model`` + ``schedule`` + prediction type (the samplers' callable).
        metadata: The file's metadata (strings).
        digest: First 16 hex digits of the file's SHA-256 (identifies the exact weights).
        path: The file it came from (None for in-memory bundles).
    """

    config: ColorizerConfig
    model: nn.Module
    schedule: NoiseSchedule
    denoiser: Denoiser
    metadata: dict[str, str]
    digest: str
    path: Path | None = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @staticmethod
    def from_model(model: nn.Module, config: ColorizerConfig, *, digest: str = "in-memory") -> ModelBundle:
        """Wrap an in-memory network (e.g. during training) as a bundle."""
        schedule = NoiseSchedule(config.schedule)
        return ModelBundle(config, model, schedule, Denoiser(model, schedule, config.prediction), {}, digest)


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip DistributedDataParallel / torch.compile wrappers so weight names stay plain."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):  # DDP
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):  # torch.compile
            model = model._orig_mod
        else:
            return model


def file_digest(path: str | Path) -> str:
    """First 16 hex digits of the SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    config: ColorizerConfig,
    *,
    step: int = 0,
    data_digest: str = "",
    dtype: torch.dtype = torch.float32,
    recipe: str = "",
    overwrite: bool = False,
) -> Path:
    """Write an inference checkpoint atomically.

    Args:
        path: Destination ``.safetensors`` file.
        model: The network (wrappers such as DDP or torch.compile are removed first).
        config: Its configuration (stored as JSON in the metadata).
        step: Training step of these weights.
        data_digest: Digest of the training data, for provenance.
        dtype: ``torch.float32`` or ``torch.float16`` for the stored weights.
        recipe: Free text describing how the model was made.
        overwrite: Replace an existing file.

    Returns:
        ``path``.
    """
    if dtype not in (torch.float32, torch.float16):
        raise ValueError("checkpoint weights must be float32 or float16")
    state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in unwrap_model(model).state_dict().items()}
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(format_version_for(config)),
        "config": json.dumps(to_dict(config), sort_keys=True),
        "sketchcolor_version": __version__,
        "step": str(int(step)),
        "data_digest": data_digest,
        "weights_dtype": str(dtype).removeprefix("torch."),
    }
    if recipe:
        metadata["recipe"] = recipe
    with atomic_write(path, overwrite=overwrite) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return Path(path)


def format_version_for(config: ColorizerConfig) -> int:
    """The lowest ``format_version`` able to describe a model with this config (see
    :data:`FORMAT_VERSION`)."""
    return 2 if config.conditioning.reference else 1


def _sniff(path: Path) -> None:
    """Refuse non-safetensors files by their first bytes, before any parser sees them.

    A safetensors file starts with a little-endian u64 header length followed by a JSON object.
    Anything else is refused; pickles and PyTorch zip files get a message of their own.
    """
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(9)
    if len(head) == 9:
        (header_len,) = struct.unpack("<Q", head[:8])
        if head[8:9] == b"{" and 2 <= header_len <= size - 8:
            return
    if head[:2] == b"PK":
        raise CheckpointError(
            f"{path}: is a PyTorch zip/pickle checkpoint, which is never loaded (unpickling can run code)",
            hint="convert it to a sketchcolor .safetensors file",
        )
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        raise CheckpointError(f"{path}: is a pickle file, which is never loaded (unpickling can run code)")
    raise CheckpointError(f"{path}: is not a safetensors file ({'empty' if size == 0 else 'bad header'})")


def read_metadata(path: str | Path) -> dict[str, str]:
    """Read and validate a checkpoint's metadata without loading the weights.

    Raises:
        CheckpointError: Missing file, not safetensors, not a sketchcolor file, unknown keys, or a
            newer format version.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
    _sniff(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = dict(fh.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: corrupt safetensors file ({exc})") from None
    if metadata.get("format") != FORMAT_NAME:
        raise CheckpointError(
            f"{path}: not a sketchcolor checkpoint (metadata 'format' is {metadata.get('format')!r})"
        )
    unknown = sorted(set(metadata) - METADATA_KEYS)
    if unknown:
        raise CheckpointError(f"{path}: unknown metadata key(s) {', '.join(unknown)}")
    try:
        version = int(metadata.get("format_version", ""))
    except ValueError:
        raise CheckpointError(f"{path}: invalid format_version {metadata.get('format_version')!r}") from None
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version} is newer than this sketchcolor supports ({FORMAT_VERSION})",
            hint="upgrade sketchcolor: pip install -U sketchcolor",
        )
    if version < 1:
        raise CheckpointError(f"{path}: invalid format_version {version}")
    return metadata


def read_config(path: str | Path, metadata: dict[str, str] | None = None) -> ColorizerConfig:
    """The :class:`ColorizerConfig` stored in a checkpoint (strict)."""
    path = Path(path)
    metadata = metadata if metadata is not None else read_metadata(path)
    try:
        data = json.loads(metadata.get("config", ""))
    except json.JSONDecodeError:
        raise CheckpointError(f"{path}: config metadata is not valid JSON") from None
    try:
        return from_dict(ColorizerConfig, data)
    except ConfigError as exc:
        raise CheckpointError(f"{path}: {exc.message}", hint=exc.hint) from None


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model``, refusing missing, unexpected or mis-shaped weights."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing weights {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(
                f"unexpected weights {', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}"
            )
        raise CheckpointError(f"{source}: weights do not match the config: {'; '.join(parts)}")
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise CheckpointError(
                f"{source}: weight {k} has shape {tuple(v.shape)}, the config needs {tuple(own[k].shape)}"
            )
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)


def load_checkpoint(
    path: str | Path, *, device: torch.device | str = "cpu", channels_last: bool = True
) -> ModelBundle:
    """Load a model file strictly.

    Args:
        path: A ``.safetensors`` file written by :func:`save_checkpoint`.
        device: Where to put the network (weights are float32 there).
        channels_last: Store convolution weights channels-last (about 1.2-1.4x faster on CPU in
            benchmarks/bench_colorize.py; also the fast layout for CUDA). Not used on MPS.

    Returns:
        The :class:`ModelBundle`, in eval mode.

    Raises:
        CheckpointError: Any problem with the file (see :func:`read_metadata`), an invalid config,
            or weights that do not match the config.
    """
    path = Path(path)
    metadata = read_metadata(path)
    config = read_config(path, metadata)
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: corrupt safetensors file ({exc})") from None
    model = UNet(config.model)
    load_state_strict(model, state, str(path))
    for name, tensor in model.state_dict().items():
        if not torch.isfinite(tensor).all():
            raise CheckpointError(f"{path}: weight {name} holds NaN or infinite values")
    device = torch.device(device)
    memory_format = torch.channels_last if channels_last and device.type != "mps" else torch.contiguous_format
    model = model.to(device).to(memory_format=memory_format).eval().requires_grad_(False)
    schedule = NoiseSchedule(config.schedule)
    return ModelBundle(
        config=config,
        model=model,
        schedule=schedule,
        denoiser=Denoiser(model, schedule, config.prediction),
        metadata=metadata,
        digest=file_digest(path),
        path=path,
    )


def default_model_path() -> Path:
    """Path of the model bundled inside the installed package.

    Raises:
        CheckpointError: This installation carries no default model.
    """
    package, name = DEFAULT_MODEL_RESOURCE
    try:
        ref = resources.files(package).joinpath(name)
    except ModuleNotFoundError:
        ref = None
    if ref is None or not ref.is_file():
        raise CheckpointError(
            "no default model is bundled with this installation",
            hint="pass --model PATH to a .safetensors model",
        )
    return Path(str(ref))


def describe(bundle: ModelBundle) -> dict[str, Any]:
    """A short JSON-friendly description of a loaded model (for --format json and records)."""
    params = sum(p.numel() for p in bundle.model.parameters())
    return {
        "path": str(bundle.path) if bundle.path else None,
        "digest": bundle.digest,
        "parameters": params,
        "step": int(bundle.metadata.get("step", "0") or 0),
        "prediction": bundle.config.prediction,
        "resolution": bundle.config.resolution,
        "mode": bundle.config.conditioning.mode,
        "sketchcolor_version": bundle.metadata.get("sketchcolor_version"),
    }
