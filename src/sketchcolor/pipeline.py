"""Colourise a sketch: io -> colour -> conditioning -> sampler -> colour -> io.

Owns: composing the library into the user-facing operation, at any input size. The model runs at
its working resolution (the long side resized to ``config.resolution``, padded to the U-Net's
size multiple); its colours are carried back to the sketch's full size and the sketch's own lines
are multiplied over them, so the output has the input's size and its line pixels are never
lighter than the sketch's.

Every random draw comes from a generator seeded from ``seed`` (one per sample), and the result
carries a record of everything needed to reproduce it.

Library code: no printing, no argv, no progress bars (progress goes through ``callback``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from . import __version__
from .checkpoint import ModelBundle, default_model_path, load_checkpoint
from .color import lab_to_rgb, lightness, model_to_lab
from .conditioning import Conditioning, hints_from_rgba, make_conditioning, resize_hints
from .config import ColorConfig, ConditioningConfig, SampleConfig
from .denoiser import GuidedDenoiser
from .device import autocast, resolve_device
from .errors import HintError, ImageError
from .io import (
    crop_to,
    image_to_tensor,
    load_rgb,
    load_rgba,
    pad_to_multiple,
    tensor_to_image,
    to_rgb_on_white,
    to_rgba,
)
from .samplers import sample_ddim, sample_ddpm

ImageInput = str | Path | Image.Image | torch.Tensor
StepCallback = Callable[[Mapping[str, Any]], None]

#: Hints whose aspect ratio differs from the sketch's by more than this (relative) are refused.
ASPECT_TOLERANCE = 0.02


@dataclasses.dataclass(frozen=True)
class ColorizeResult:
    """The outcome of :func:`colorize`.

    Attributes:
        image: RGB output at the sketch's size.
        record: How it was made: seed, sampler, steps, eta, guidance, spacing, model digest,
            package version, working size (JSON-friendly).
    """

    image: Image.Image
    record: dict[str, Any]


def read_sketch(sketch: ImageInput) -> torch.Tensor:
    """A sketch as RGB on white, float32 (1, 3, H, W) in [0, 1].

    Accepts a path, a PIL image (any mode; transparency goes onto white) or a tensor
    (1, 3, H, W) / (3, H, W) in [0, 1].

    Raises:
        ImageError: Unreadable file or a tensor of the wrong shape or range.
    """
    if isinstance(sketch, str | Path):
        return load_rgb(sketch)
    if isinstance(sketch, Image.Image):
        return image_to_tensor(to_rgb_on_white(sketch))
    x = sketch if sketch.dim() == 4 else sketch.unsqueeze(0)
    if x.dim() != 4 or x.shape[0] != 1 or x.shape[1] != 3:
        raise ImageError(f"sketch tensor must be (1, 3, H, W), got {tuple(sketch.shape)}")
    if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise ImageError("sketch tensor values must be finite and in [0, 1]")
    return x.float().cpu()


def read_hints(
    hints: ImageInput | None, size: tuple[int, int], *, name: str = "hints"
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Hints as (hint_rgb (1, 3, H, W), hint_mask (1, 1, H, W)) at the sketch's ``size``.

    Accepts a path or PIL image (transparent or white pixels mean "no hint"), or an RGBA tensor
    (1, 4, h, w) in [0, 1]. A hints image of another size is resized without losing any dot
    (:func:`~sketchcolor.conditioning.resize_hints`); its aspect ratio must match the sketch's.

    Returns:
        None when ``hints`` is None.

    Raises:
        HintError: The aspect ratio differs from the sketch's.
        ImageError: Unreadable file.
    """
    if hints is None:
        return None
    if isinstance(hints, str | Path):
        name = str(hints)
        rgba = load_rgba(hints)
    elif isinstance(hints, Image.Image):
        rgba = image_to_tensor(to_rgba(hints))
    else:
        rgba = hints if hints.dim() == 4 else hints.unsqueeze(0)
        if rgba.shape[:2] != (1, 4):
            raise HintError(f"hints tensor must be (1, 4, H, W) RGBA, got {tuple(hints.shape)}")
    h, w = size
    hh, hw = rgba.shape[-2:]
    if abs((hw / hh) / (w / h) - 1.0) > ASPECT_TOLERANCE:
        raise HintError(f"{name}: hints are {hw}x{hh} but the sketch is {w}x{h} (different aspect ratio)")
    hint_rgb, hint_mask = hints_from_rgba(rgba.float())
    return resize_hints(hint_rgb, hint_mask, size)


def working_size(size: tuple[int, int], resolution: int) -> tuple[int, int]:
    """(H, W) at which the model runs: the long side becomes ``resolution``, aspect kept."""
    h, w = size
    scale = resolution / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def clamp_hook(
    color: ColorConfig, conditioning: ConditioningConfig
) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """An x0 hook clamping estimates to valid LAB (L in [0, 100], a and b in [-128, 127])."""
    lo = [(0.0 - color.l_center) / color.l_scale, -128.0 / color.ab_scale, -128.0 / color.ab_scale]
    hi = [(100.0 - color.l_center) / color.l_scale, 127.0 / color.ab_scale, 127.0 / color.ab_scale]
    if conditioning.mode == "photo":
        lo, hi = lo[1:], hi[1:]

    def hook(x0: torch.Tensor, t: int) -> torch.Tensor:
        low = torch.tensor(lo, dtype=x0.dtype, device=x0.device).view(1, -1, 1, 1)
        high = torch.tensor(hi, dtype=x0.dtype, device=x0.device).view(1, -1, 1, 1)
        return torch.maximum(torch.minimum(x0, high), low)

    return hook


def item_generators(seed: int, count: int) -> list[torch.Generator]:
    """One CPU generator per sample: sample i uses seed + i, so results do not depend on batching."""
    return [torch.Generator("cpu").manual_seed(int(seed) + i) for i in range(count)]


def sample(
    bundle: ModelBundle,
    cond: Conditioning,
    sample_config: SampleConfig,
    generators: list[torch.Generator],
    *,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Run the configured sampler on a prepared conditioning batch.

    Args:
        bundle: Loaded model.
        cond: Conditioning at the working size (already padded), on the model's device.
        sample_config: Sampler settings.
        generators: One generator per batch item (initial noise and per-step noise).
        callback: Per-step progress callback (see :mod:`sketchcolor.samplers`).

    Returns:
        x0 in model space, (N, C, h, w) float32.
    """
    config = bundle.config
    device = bundle.device
    cond_channels = cond.as_channels(config.conditioning, config.color).to(device)
    denoiser: Any = bundle.denoiser
    if sample_config.guidance != 1.0:
        uncond = cond.without_hints().as_channels(config.conditioning, config.color).to(device)
        denoiser = GuidedDenoiser(bundle.denoiser, uncond, sample_config.guidance)
    n_target = len(config.conditioning.target_channels)
    h, w = cond.size
    noise = torch.stack([torch.randn((n_target, h, w), generator=g) for g in generators]).to(device)
    timesteps = bundle.schedule.timesteps(sample_config.steps, sample_config.spacing)
    hook = clamp_hook(config.color, config.conditioning)
    with torch.inference_mode(), autocast(device):
        if sample_config.sampler == "ddpm":
            return sample_ddpm(
                denoiser, noise, bundle.schedule, timesteps, cond_channels,
                generator=generators, callback=callback, x0_hook=hook,
            )  # fmt: skip
        return sample_ddim(
            denoiser, noise, bundle.schedule, timesteps, cond_channels,
            eta=sample_config.eta, generator=generators, callback=callback, x0_hook=hook,
        )  # fmt: skip


def model_output_to_lab(x0: torch.Tensor, bundle: ModelBundle, sketch_l: torch.Tensor) -> torch.Tensor:
    """Model-space x0 -> LAB (N, 3, h, w); in photo mode L comes from ``sketch_l`` (N, 1, h, w)."""
    if bundle.config.conditioning.mode == "photo":
        ab = x0 * bundle.config.color.ab_scale
        return torch.cat([sketch_l * 100.0, ab], dim=1)
    return model_to_lab(x0, bundle.config.color)


def compose(colour_rgb: torch.Tensor, sketch_rgb: torch.Tensor, mode: str) -> torch.Tensor:
    """Lay the sketch's own lines over the colour layer (multiply) at full resolution.

    In photo mode the colour layer already carries the photo's lightness, so it is returned as is.
    """
    if mode == "photo":
        return colour_rgb
    return colour_rgb * sketch_rgb


def colorize(
    sketch: ImageInput,
    hints: ImageInput | None,
    bundle: ModelBundle,
    sample_config: SampleConfig | None = None,
    seed: int = 0,
    *,
    callback: StepCallback | None = None,
) -> ColorizeResult:
    """Colourise one sketch with a loaded model.

    Args:
        sketch: Path, PIL image or (1, 3, H, W) tensor in [0, 1] (see :func:`read_sketch`).
        hints: Hints image (path, PIL image, (1, 4, h, w) RGBA tensor) or None.
        bundle: The model (:func:`sketchcolor.checkpoint.load_checkpoint`).
        sample_config: Sampler settings (defaults of :class:`SampleConfig` if None).
        seed: Seed of the sample's generator.
        callback: Per-step progress callback.

    Returns:
        :class:`ColorizeResult` with the RGB image at the sketch's size and its record.

    Raises:
        ImageError, HintError: Bad inputs.
    """
    sample_config = sample_config or SampleConfig()
    config = bundle.config
    sketch_rgb = read_sketch(sketch)
    size = (int(sketch_rgb.shape[-2]), int(sketch_rgb.shape[-1]))
    hint = read_hints(hints, size)

    # 1. Work at the model's resolution: area-downscale the sketch, resize hints without loss.
    small = working_size(size, config.resolution)
    sketch_l = lightness(sketch_rgb)
    sketch_small = F.interpolate(sketch_l, size=small, mode="area") if small != size else sketch_l
    sketch_small, _ = pad_to_multiple(sketch_small, config.model.size_multiple, value=1.0)
    padded = (int(sketch_small.shape[-2]), int(sketch_small.shape[-1]))
    hint_rgb = hint_mask = None
    if hint is not None:
        hint_rgb, hint_mask = resize_hints(hint[0], hint[1], small)
        hint_rgb, _ = pad_to_multiple(hint_rgb, config.model.size_multiple, value=0.0)
        hint_mask, _ = pad_to_multiple(hint_mask, config.model.size_multiple, value=0.0)
    cond = make_conditioning(sketch_small, hint_rgb, hint_mask, config.conditioning)

    # 2. Sample in model space, then return to LAB at the working size.
    x0 = sample(bundle, cond, sample_config, item_generators(seed, 1), callback=callback)
    lab_small = crop_to(model_output_to_lab(x0.float().cpu(), bundle, sketch_small), small)

    # 3. Carry the colours to full size and lay the original lines over them.
    lab_full = (
        F.interpolate(lab_small, size=size, mode="bilinear", align_corners=False)
        if small != size
        else lab_small
    )
    if config.conditioning.mode == "photo":
        lab_full = torch.cat([sketch_l * 100.0, lab_full[:, 1:]], dim=1)
    out = compose(lab_to_rgb(lab_full), sketch_rgb, config.conditioning.mode)
    if not torch.isfinite(out).all():
        raise ImageError("the model produced non-finite values; the checkpoint may be corrupt or diverged")

    record = {
        "seed": int(seed),
        "sampler": sample_config.sampler,
        "steps": sample_config.steps,
        "eta": sample_config.eta,
        "guidance": sample_config.guidance,
        "spacing": sample_config.spacing,
        "model_digest": bundle.digest,
        "sketchcolor_version": __version__,
        "working_size": [small[1], small[0]],
        "padded_size": [padded[1], padded[0]],
        "size": [size[1], size[0]],
        "hinted": hint is not None and bool(hint[1].any()),
    }
    return ColorizeResult(image=tensor_to_image(out), record=record)


def load_model(model: str | Path | ModelBundle | None = None, device: str = "auto") -> ModelBundle:
    """Resolve a model argument: a bundle, a path, or None for the model bundled in the package.

    Raises:
        CheckpointError: The file cannot be loaded, or no default model is installed.
        DeviceError: The device is not available.
    """
    if isinstance(model, ModelBundle):
        return model
    dev = resolve_device(device)
    return load_checkpoint(default_model_path() if model is None else model, device=dev)


def is_colour_image(rgb: torch.Tensor, *, chroma_level: float = 12.0, fraction: float = 0.05) -> bool:
    """Whether an RGB image (1, 3, H, W) is visibly coloured rather than line art/greyscale.

    True when more than ``fraction`` of pixels have LAB chroma above ``chroma_level``.
    """
    from .color import rgb_to_lab

    x = rgb
    if max(x.shape[-2:]) > 256:
        scale = 256 / max(x.shape[-2:])
        x = F.interpolate(x, scale_factor=scale, mode="area")
    lab = rgb_to_lab(x)
    chroma = torch.sqrt(lab[:, 1] ** 2 + lab[:, 2] ** 2)
    return bool((chroma > chroma_level).float().mean() > fraction)


__all__ = [
    "ColorizeResult",
    "colorize",
    "load_model",
    "read_hints",
    "read_sketch",
    "sample",
    "working_size",
    "is_colour_image",
]
