"""Colourise a sketch: io -> colour -> conditioning -> sampler -> compose -> io.

Owns: composing the library into the user-facing operation, at any input size. The model runs at
its working resolution (the sketch's long side resized to ``config.resolution``, padded to the
U-Net's size multiple); :mod:`sketchcolor.compose` carries its colours back to the sketch's full
size along the line-enclosed regions, and the sketch's own lines are multiplied over them, so the
output has the input's size and its line pixels are never lighter than the sketch's.

Hints come from any mix of sources (:func:`build_hints`): an RGBA layer or scribble image, points,
strokes, a JSON file, or scribbles drawn on the sketch itself.

Every random draw comes from a generator seeded from ``seed + i`` for sample ``i``, and each result
carries a record of everything needed to reproduce it.

Library code: no printing, no argv, no progress bars (progress goes through ``callback``, warnings
through ``logging``).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import hashlib
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from . import __version__
from .checkpoint import ModelBundle, default_model_path, load_checkpoint
from .color import lab_to_model, lab_to_rgb, model_to_lab, rgb_to_lab
from .compose import (
    area_downscale,
    carry_to_full_size,
    lab_to_rgb_banded,
    reference_palette,
    region_labels,
    sketch_lightness_u8,
    to_u8,
)
from .conditioning import (
    Conditioning,
    HintLayer,
    ModelCond,
    SparseHints,
    from_points,
    from_strokes,
    hinted_region_mask,
    hints_from_rgba,
    make_conditioning,
    resize_hints,
    resolve_coordinate,
    sketch_problem,
    split_hints_from_sketch,
)
from .config import SEED_LIMIT, ColorConfig, ConditioningConfig, SampleConfig, check_seed
from .denoiser import GuidedDenoiser
from .device import autocast, inference_dtype, precision_name, resolve_device
from .errors import ConfigError, HintError, ImageError, ModelError
from .io import (
    check_hint_extent,
    crop_to,
    image_name,
    image_to_tensor,
    load_rgb,
    open_image,
    pad_to_multiple,
    read_hints_json,
    tensor_to_image,
    to_rgb_on_white,
    to_rgba,
)
from .models.unet import narrowest_feature_map
from .parallel import compose_threads
from .samplers import sample_ddim, sample_ddpm, sample_dpmpp_2m

log = logging.getLogger(__name__)

ImageInput = str | Path | Image.Image | torch.Tensor
StepCallback = Callable[[Mapping[str, Any]], None]
T = TypeVar("T")
A = TypeVar("A")
B = TypeVar("B")

#: Hints whose aspect ratio differs from the sketch's by more than this (relative) are refused.
ASPECT_TOLERANCE = 0.02
#: Long side of the frames of the denoising animation.
FRAME_SIZE = 256


@dataclasses.dataclass(frozen=True)
class ColorizeResult:
    """The outcome of :func:`colorize`.

    Attributes:
        images: RGB outputs at the sketch's size, one per sample.
        flats: The colour layers without the lines (same size), one per sample; empty unless
            asked for with ``keep_flats``.
        records: How each was made (JSON-friendly): seed, sampler, steps, eta, guidance,
            spacing, model digest, package version, sizes, and the hints digest.
        hints: The hints actually used, at the sketch's size.
        frames: Per sample, the x0 estimate after each sampling step as small RGB pictures
            (empty unless ``keep_steps``).
    """

    images: list[Image.Image]
    flats: list[Image.Image]
    records: list[dict[str, Any]]
    hints: HintLayer
    frames: list[list[Image.Image]]

    @property
    def image(self) -> Image.Image:
        """The first (usually only) output."""
        return self.images[0]

    @property
    def record(self) -> dict[str, Any]:
        return self.records[0]


def read_sketch_u8(sketch: ImageInput) -> torch.Tensor:
    """A sketch as 8-bit RGB on white, uint8 (1, 3, H, W) (the compact form used at full size).

    Accepts what :func:`read_sketch` accepts, and uint8 tensors. Pictures and float tensors give
    a channels-last tensor (a (1, 3, H, W) view of (H, W, 3) memory, as images are stored), which
    the composition reads without reordering. A grey picture (PIL mode ``L``, the usual scan or
    export of line art) gives its one plane seen as three channels (channel stride 0, read-only):
    the same values as PIL's conversion to RGB without making it, and the composition reads one
    byte per pixel instead of three.

    Raises:
        ImageError: Unreadable file or a tensor of the wrong shape or range.
    """
    if isinstance(sketch, str | Path):
        sketch = open_image(sketch)
    if isinstance(sketch, Image.Image):
        if sketch.mode == "L" and "transparency" not in sketch.info:
            grey = torch.from_numpy(np.array(sketch, dtype=np.uint8))  # (H, W), a writable copy
            return grey.expand(1, 3, *grey.shape)
        arr = np.array(to_rgb_on_white(sketch), dtype=np.uint8)  # one (writable) copy
        return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0)
    if sketch.dtype == torch.uint8:
        x = sketch if sketch.dim() == 4 else sketch.unsqueeze(0)
        if x.dim() != 4 or x.shape[0] != 1 or x.shape[1] != 3:
            raise ImageError(f"sketch tensor must be (1, 3, H, W), got {tuple(sketch.shape)}")
        return x.cpu().contiguous()
    rgb = read_sketch(sketch)[0].permute(1, 2, 0)  # channels-last, as the composition reads it
    return (rgb * 255.0).round_().to(torch.uint8).permute(2, 0, 1).unsqueeze(0)


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


def hints_from_image(
    hints: ImageInput, size: tuple[int, int], *, stretch: bool = False, name: str = "hints"
) -> HintLayer:
    """A hints image (path, PIL image or (1, 4, h, w) RGBA tensor) as a layer at ``size``.

    Transparent or white pixels mean "no hint". A hints image of another size is resized without
    losing any dot (:func:`~sketchcolor.conditioning.resize_hints`); its aspect ratio must match
    the sketch's unless ``stretch``.

    Raises:
        HintError: The aspect ratio differs from the sketch's.
        ImageError: Unreadable file.
    """
    if isinstance(hints, str | Path):
        name = str(hints)
        hints = open_image(hints)
    if isinstance(hints, Image.Image):
        rgba_img = to_rgba(hints)
        if (rgba_img.height, rgba_img.width) == tuple(size):
            return _hints_from_rgba_image(rgba_img)
        rgba = image_to_tensor(rgba_img)
    else:
        rgba = hints if hints.dim() == 4 else hints.unsqueeze(0)
        if rgba.shape[:2] != (1, 4):
            raise HintError(f"hints tensor must be (1, 4, H, W) RGBA, got {tuple(hints.shape)}")
    h, w = size
    hh, hw = rgba.shape[-2:]
    if not stretch and abs((hw / hh) / (w / h) - 1.0) > ASPECT_TOLERANCE:
        raise HintError(
            f"{name}: hints are {hw}x{hh} but the sketch is {w}x{h} (different aspect ratio)",
            hint="pass --stretch-hints to stretch them to the sketch",
        )
    hint_rgb, hint_mask = hints_from_rgba(rgba.float())
    rgb, mask = resize_hints(hint_rgb, hint_mask, size)
    return HintLayer(rgb, mask)


def _hints_from_rgba_image(image: Image.Image) -> HintLayer:
    """Fast path of :func:`hints_from_image` for an 8-bit RGBA picture already at the sketch's size.

    Same rule as :func:`~sketchcolor.conditioning.hints_from_rgba` on 8-bit levels: alpha >= 128
    (0.5) and not every channel >= 248 (0.97). Hints on a transparent layer are sparse: only the
    box around the pixels that are not fully transparent (found by PIL) is read into numpy, which
    makes a 4096 px hints layer cost a few hundredths of a second instead of a quarter of one.
    """
    w, h = image.size
    # np.zeros takes zeroed pages from the system: unhinted pixels cost nothing.
    rgb = np.zeros((1, 3, h, w), dtype=np.float32)
    mask = np.zeros((1, 1, h, w), dtype=np.float32)
    # The box around pixels with any opacity (PIL reads the alpha in place): it holds every hint.
    box = image.getbbox(alpha_only=True)
    if box is None:
        return HintLayer(torch.from_numpy(rgb), torch.from_numpy(mask), SparseHints.none((h, w)))
    left, top = box[0], box[1]
    rgba = np.asarray(image if box == (0, 0, w, h) else image.crop(box), dtype=np.uint8)
    # "Not every channel >= 248" is "the darkest channel < 248".
    darkest = np.minimum(np.minimum(rgba[..., 0], rgba[..., 1]), rgba[..., 2])
    hinted = (rgba[..., 3] >= 128) & (darkest < 248)
    ys, xs = np.nonzero(hinted)  # touch only hinted pixels
    colours = rgba[ys, xs, :3].astype(np.float32) / np.float32(255.0)
    ys, xs = ys + top, xs + left
    rgb[0, :, ys, xs] = colours
    mask[0, 0, ys, xs] = 1.0
    # The hinted pixels as SparseHints.from_layer finds them (row-major, the same float colours).
    found = SparseHints(
        (h, w), torch.from_numpy(ys.astype(np.int64)), torch.from_numpy(xs.astype(np.int64)),
        torch.from_numpy(np.ascontiguousarray(colours.T)),
    )  # fmt: skip
    return HintLayer(torch.from_numpy(rgb), torch.from_numpy(mask), found)


def parse_point(text: str) -> tuple[float, float, str, str, tuple[float, float, float]]:
    """Parse ``X,Y,COLOR`` (pixels or fractions; hex, ``rgb()`` or CSS colour).

    Raises:
        HintError: Malformed text or colour.
    """
    from .io import parse_color

    parts = text.split(",", 2)
    if len(parts) != 3:
        raise HintError(f"hint '{text}' must be X,Y,COLOR (e.g. 120,80,#d03030 or 0.5,0.25,skyblue)")
    try:
        x, y = float(parts[0]), float(parts[1])
    except ValueError:
        raise HintError(f"hint '{text}': X and Y must be numbers") from None
    return x, y, parts[0].strip(), parts[1].strip(), parse_color(parts[2])


def default_point_radius(size: tuple[int, int]) -> float:
    """Radius of point hints without their own: about 1 % of the long side, at least 2 px."""
    return max(2.0, 0.01 * max(size))


def build_hints(
    size: tuple[int, int],
    *,
    images: Sequence[ImageInput] = (),
    points: Sequence[str] = (),
    json_files: Sequence[str | Path] = (),
    in_sketch: HintLayer | None = None,
    stretch: bool = False,
    point_radius: float | None = None,
) -> HintLayer:
    """Merge hints from every source into one layer at the sketch's ``size``.

    Later sources paint over earlier ones in this order: scribbles found in the sketch, hints
    images, JSON files, then ``--hint`` points.

    Raises:
        HintError: A malformed source, or a point outside the image (named).
        ImageError: An unreadable hints image.
    """
    layer = in_sketch if in_sketch is not None else HintLayer.empty(size)
    h, w = size
    radius = (
        default_point_radius(size) if point_radius is None else check_hint_extent(point_radius, "hint radius")
    )
    for image in images:
        layer = hints_from_image(image, size, stretch=stretch).over(layer)
    for path in json_files:
        spec = read_hints_json(path)
        pts = []
        for x, y, xt, yt, rgb, r in spec["points"]:
            px, py = resolve_coordinate(x, w, xt), resolve_coordinate(y, h, yt)
            if not (0 <= px < w and 0 <= py < h):
                raise HintError(f"{path}: hint point ({xt}, {yt}) is outside the {w}x{h} image")
            pts.append(((px, py, rgb), r))
        for (px, py, rgb), r in pts:
            layer = HintLayer(*from_points([(px, py, rgb)], size, radius=radius if r is None else r)).over(
                layer
            )
        strokes = []
        for pts_spec, rgb, width in spec["strokes"]:
            coords = [
                (resolve_coordinate(x, w, xt), resolve_coordinate(y, h, yt)) for x, y, xt, yt in pts_spec
            ]
            strokes.append((coords, rgb, 2 * radius if width is None else width))
        try:
            layer = from_strokes(strokes, size).over(layer)
        except HintError as exc:
            raise HintError(f"{path}: {exc.message}") from None
    for text in points:
        x, y, xt, yt, rgb = parse_point(text)
        px, py = resolve_coordinate(x, w, xt), resolve_coordinate(y, h, yt)
        if not (0 <= px < w and 0 <= py < h):
            raise HintError(f"hint point '{text}' is outside the {w}x{h} image")
        layer = HintLayer(*from_points([(px, py, rgb)], size, radius=radius)).over(layer)
    return layer


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
    bounds: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def hook(x0: torch.Tensor, t: int) -> torch.Tensor:
        if x0.device not in bounds:  # built once per device: no host-device copy per step
            bounds[x0.device] = (
                torch.tensor(lo, dtype=x0.dtype, device=x0.device).view(1, -1, 1, 1),
                torch.tensor(hi, dtype=x0.dtype, device=x0.device).view(1, -1, 1, 1),
            )
        low, high = bounds[x0.device]
        return torch.maximum(torch.minimum(x0, high), low)

    return hook


def pin_hook(
    inner: Callable[[torch.Tensor, int], torch.Tensor],
    cond: Conditioning,
    color: ColorConfig,
    device: torch.device,
) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """An x0 hook that, after ``inner``, sets hinted pixels to their hint colour (model space)."""
    target = lab_to_model(cond.hint_lab, color).to(device)
    mask = cond.hint_mask.to(device)

    def hook(x0: torch.Tensor, t: int) -> torch.Tensor:
        x0 = inner(x0, t)
        return x0 * (1 - mask) + target * mask

    return hook


def item_generators(seed: int, count: int) -> list[torch.Generator]:
    """One CPU generator per sample: sample i uses seed + i, so results do not depend on batching.

    Raises:
        ConfigError: ``seed`` breaks the seed rule (:func:`~sketchcolor.config.check_seed`).
    """
    seed = check_seed(seed)
    return [torch.Generator("cpu").manual_seed((seed + i) % SEED_LIMIT) for i in range(count)]


def check_sample_config(sample_config: SampleConfig, bundle: ModelBundle) -> None:
    """Settings that depend on the model: at most ``num_train_steps`` sampling steps, and a
    precision its device has.

    Raises:
        ConfigError: Too many steps for this model's schedule (checked before any sampling).
        DeviceError: A precision the model's device cannot run (fp16 on the CPU).
    """
    inference_dtype(sample_config.precision, bundle.device)
    limit = bundle.schedule.num_train_steps
    if sample_config.steps > limit:
        where = bundle.path or "the model"
        raise ConfigError(
            f"steps = {sample_config.steps}: {where} has {limit} noise levels, so it takes at most "
            f"{limit} sampling steps",
            hint=f"use 1 to {limit} steps",
        )


#: bfloat16 is used only where every feature map is at least this many pixels on each side:
#: oneDNN's bfloat16 stride-2 convolution (torch 2.14) gives wrong values, even NaN, when its
#: output is one pixel wide and five or more high (found by a 8 x 100000 page; checked in
#: tests/test_precision.py), so a page that thin runs in fp32.
BF16_MIN_FEATURE_MAP = 2


def network_dtype(
    sample_config: SampleConfig, bundle: ModelBundle, size: tuple[int, int]
) -> torch.dtype | None:
    """The autocast dtype the network runs in for a batch of working size ``size`` = (h, w).

    :func:`~sketchcolor.device.inference_dtype` of ``sample_config.precision``, except that a
    page so thin that a CPU bfloat16 feature map would be under :data:`BF16_MIN_FEATURE_MAP`
    pixels runs in fp32 (None).
    """
    dtype = inference_dtype(sample_config.precision, bundle.device)
    thin = narrowest_feature_map(bundle.config.model, size) < BF16_MIN_FEATURE_MAP
    if dtype is torch.bfloat16 and bundle.device.type == "cpu" and thin:
        return None
    return dtype


def sample(
    bundle: ModelBundle,
    cond: Conditioning,
    sample_config: SampleConfig,
    generators: list[torch.Generator],
    *,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Run the configured sampler on a prepared conditioning batch.

    The conditioning channels are computed once, before the loop; the sampler then only calls the
    network.

    Args:
        bundle: Loaded model.
        cond: Conditioning at the working size (already padded), one item per generator.
        sample_config: Sampler settings.
        generators: One generator per batch item (initial noise and per-step noise).
        callback: Per-step progress callback (see :mod:`sketchcolor.samplers`).

    Returns:
        x0 in model space, (N, C, h, w) float32, on the model's device.
    """
    check_sample_config(sample_config, bundle)
    config = bundle.config
    device = bundle.device
    # The layout the weights are stored in (channels-last on CPU/CUDA) is used for activations too.
    memory_format = torch.channels_last if _is_channels_last(bundle.model) else torch.contiguous_format
    model_cond = _model_cond(cond, config, device, memory_format)
    # Classifier-free guidance: one branch per condition whose scale is not 1 (hints, reference).
    branches: list[tuple[ModelCond, float, torch.Tensor | None]] = []
    if sample_config.guidance != 1.0:
        # Guidance on the hints acts where the hints are: their regions (the page's background
        # left out), so white paper stays paper however strong the guidance.
        weight = guidance_weight(cond, config.conditioning).to(device)
        uncond = _model_cond(cond.without_hints(), config, device, memory_format)
        branches.append((uncond, sample_config.guidance, weight))
    if sample_config.reference_scale != 1.0 and cond.has_reference:
        reduced = _model_cond(cond.without_reference(), config, device, memory_format)
        branches.append((reduced, sample_config.reference_scale, None))
    denoiser: Any = GuidedDenoiser(bundle.denoiser, branches) if branches else bundle.denoiser
    n_target = len(config.conditioning.target_channels)
    h, w = cond.size
    noise = torch.stack([torch.randn((n_target, h, w), generator=g) for g in generators]).to(device)
    noise = noise.contiguous(memory_format=memory_format)
    timesteps = bundle.schedule.timesteps(sample_config.steps, sample_config.spacing)
    hook = clamp_hook(config.color, config.conditioning)
    if sample_config.pin_hints and config.conditioning.mode == "lineart" and bool(cond.hint_mask.any()):
        hook = pin_hook(hook, cond, config.color, device)
    with torch.inference_mode(), autocast(device, network_dtype(sample_config, bundle, cond.size)):
        if sample_config.sampler == "ddpm":
            return sample_ddpm(
                denoiser, noise, bundle.schedule, timesteps, model_cond,
                generator=generators, callback=callback, x0_hook=hook,
            )  # fmt: skip
        if sample_config.sampler == "dpmpp2m":
            return sample_dpmpp_2m(
                denoiser, noise, bundle.schedule, timesteps, model_cond, callback=callback, x0_hook=hook,
            )  # fmt: skip
        return sample_ddim(
            denoiser, noise, bundle.schedule, timesteps, model_cond,
            eta=sample_config.eta, generator=generators, callback=callback, x0_hook=hook,
        )  # fmt: skip


def guidance_weight(cond: Conditioning, layout: ConditioningConfig) -> torch.Tensor:
    """Where guidance on the hints applies: hinted regions grown by one pixel, (N, 1, H, W).

    See :func:`~sketchcolor.conditioning.hinted_region_mask`; the gap closing is the model's
    ``region_gap`` (or the composition's usual 2 px per 128 px when the model has none).
    """
    mask = hinted_region_mask(cond.sketch, cond.hint_mask, gap=layout.region_gap or 2.0)
    return F.max_pool2d(mask, 3, stride=1, padding=1)


def _model_cond(
    cond: Conditioning, config: Any, device: torch.device, memory_format: torch.memory_format
) -> ModelCond:
    return cond.model_input(config.conditioning, config.color).to(device, memory_format=memory_format)


def _is_channels_last(model: torch.nn.Module) -> bool:
    weight = next((p for p in model.parameters() if p.dim() == 4), None)
    return (
        weight is not None
        and weight.is_contiguous(memory_format=torch.channels_last)
        and not weight.is_contiguous()
    )


def model_output_to_lab(x0: torch.Tensor, bundle: ModelBundle, sketch_l: torch.Tensor) -> torch.Tensor:
    """Model-space x0 -> LAB (N, 3, h, w); in photo mode L comes from ``sketch_l`` (N, 1, h, w)."""
    if bundle.config.conditioning.mode == "photo":
        ab = x0 * bundle.config.color.ab_scale
        return torch.cat([sketch_l.expand(x0.shape[0], -1, -1, -1) * 100.0, ab], dim=1)
    return model_to_lab(x0, bundle.config.color)


def is_colour_image(rgb: torch.Tensor, *, chroma_level: float = 12.0, fraction: float = 0.05) -> bool:
    """Whether an RGB image (1, 3, H, W) is visibly coloured rather than line art or greyscale.

    True when more than ``fraction`` of pixels have LAB chroma above ``chroma_level`` (judged on
    a subsample of at most about 256 x 256 pixels). Takes float in [0, 1] or uint8.
    """
    if rgb.stride(-3) == 0:
        return False  # one plane seen as three channels (a grey picture)
    step = max(1, max(rgb.shape[-2:]) // 256)
    x = rgb[..., ::step, ::step]
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    lab = rgb_to_lab(x)
    chroma = torch.sqrt(lab[:, 1] ** 2 + lab[:, 2] ** 2)
    return bool((chroma > chroma_level).float().mean() > fraction)


def hints_digest(hints: HintLayer | SparseHints) -> str:
    """First 16 hex digits of a SHA-256 identifying the hints used (positions and 8-bit colours).

    Only hinted pixels are visited, so the digest costs little even for huge, sparsely hinted images.
    """
    sparse = hints if isinstance(hints, SparseHints) else hints.hinted()
    idx = sparse.ys * sparse.size[1] + sparse.xs
    colours = (sparse.rgb * 255.0).round().to(torch.uint8)
    h = hashlib.sha256(f"{sparse.size[0]}x{sparse.size[1]}:".encode())
    h.update(idx.to(torch.int64).numpy().tobytes())
    h.update(colours.numpy().tobytes())
    return h.hexdigest()[:16]


def _frame(
    x0: torch.Tensor, bundle: ModelBundle, sketch_l_small: torch.Tensor, small: tuple[int, int]
) -> Image.Image:
    lab = crop_to(model_output_to_lab(x0.float().cpu(), bundle, sketch_l_small), small)
    rgb = lab_to_rgb(lab)
    if bundle.config.conditioning.mode == "lineart":
        rgb = rgb * crop_to(sketch_l_small, small)
    scale = FRAME_SIZE / max(small)
    if scale > 1:
        rgb = F.interpolate(rgb, scale_factor=scale, mode="nearest")
    return tensor_to_image(rgb)


@dataclasses.dataclass(frozen=True)
class _Prepared:
    """One sketch made ready for the model (internal to this module)."""

    sketch_u8: torch.Tensor  # (1, 3, H, W) uint8, full size
    sketch_l: torch.Tensor  # (1, 1, H, W) full size
    sketch_small: torch.Tensor  # (1, 1, h', w') working size, padded
    small: tuple[int, int]  # working size before padding
    layer: HintLayer
    cond: Conditioning
    reference_digest: str | None = None
    hints: SparseHints | None = None  # the layer's hinted pixels (None: no hints)
    palette: torch.Tensor | None = None  # (K, 3) LAB: the reference's flat colours
    # Region labellings by whether they use the hints, made once for every sample of the sketch.
    _labels: dict[bool, np.ndarray] = dataclasses.field(default_factory=dict, compare=False, repr=False)
    _labels_lock: threading.Lock = dataclasses.field(
        default_factory=threading.Lock, compare=False, repr=False
    )

    def region_labels(self, hint_regions: bool, threads: int | None = None) -> np.ndarray:
        """The sketch's line-enclosed regions (closed around the hints when ``hint_regions``),
        labelled on first use (on ``threads`` threads, default
        :func:`~sketchcolor.parallel.compose_threads`) and shared by every sample finished from
        this preparation."""
        use_hints = hint_regions and self.hints is not None
        with self._labels_lock:  # samples of one sketch may be finished on several threads
            if use_hints not in self._labels:
                hints = self.hints if use_hints else None
                self._labels[use_hints] = region_labels(self.sketch_l, hints, threads)
            return self._labels[use_hints]

    @property
    def size(self) -> tuple[int, int]:
        return int(self.sketch_u8.shape[-2]), int(self.sketch_u8.shape[-1])

    @property
    def padded(self) -> tuple[int, int]:
        return int(self.sketch_small.shape[-2]), int(self.sketch_small.shape[-1])


def _as_layer(hints: HintLayer | ImageInput | None, size: tuple[int, int]) -> HintLayer:
    if isinstance(hints, HintLayer):
        if hints.size != size:
            raise HintError(
                f"hint layer is {hints.size[1]}x{hints.size[0]} but the sketch is {size[1]}x{size[0]}"
            )
        return hints
    if hints is None:
        return HintLayer.empty(size)
    layer = hints_from_image(hints, size)
    if layer.is_empty:
        log.warning(
            "%s has no hint pixels (all white or transparent); colourising from the sketch alone",
            hints if isinstance(hints, str | Path) else "the hints image",
        )
    return layer


@dataclasses.dataclass(frozen=True)
class NamedReference:
    """A reference picture already in memory, with the name messages should call it by.

    Attributes:
        image: Path, PIL image or (1, 3, H, W) tensor in [0, 1].
        name: E.g. the file it was read from.
    """

    image: ImageInput
    name: str


#: A reference with at most this share of visibly coloured pixels (LAB chroma above 12) is warned
#: about as greyscale.
REFERENCE_COLOUR_FRACTION = 0.005


@dataclasses.dataclass(frozen=True)
class PreparedReference:
    """A reference picture read for one model (:func:`read_reference`).

    Attributes:
        lab: (1, 3, S, S) CIE LAB, letterboxed onto a white square of
            ``conditioning.reference_size`` pixels: what the network sees.
        digest: First 16 hex digits of the SHA-256 of that square in 8 bits.
        palette: (K, 3) CIE LAB flat colours of the whole picture, most used first
            (:func:`~sketchcolor.compose.reference_palette`), for ``SampleConfig.reference_snap``.
    """

    lab: torch.Tensor
    digest: str
    palette: torch.Tensor


#: What a reference may be given as. A :class:`PreparedReference` (from :func:`read_reference`)
#: is used as it is: read a reference once and pass it for many sketches.
ReferenceInput = ImageInput | NamedReference | PreparedReference


def require_reference(bundle: ModelBundle) -> None:
    """Refuse, in one line, a reference for a model trained without reference conditioning.

    Raises:
        ModelError: The model takes no reference picture.
    """
    if not bundle.config.conditioning.reference:
        where = bundle.path or "the model"
        raise ModelError(
            f"{where}: takes no reference picture (it was trained without reference conditioning)",
            hint="use a model trained with conditioning.reference = true, or leave out the reference",
        )


def read_reference(reference: ReferenceInput, bundle: ModelBundle) -> PreparedReference:
    """A reference picture as the model takes it, a digest of what it saw, and its palette.

    Any size, aspect or mode: transparency goes onto white, the picture is letterboxed onto a white
    square of ``conditioning.reference_size`` pixels (aspect kept). A greyscale reference is used
    but warned about: it carries no colour to follow. A :class:`PreparedReference` comes back as
    it is (after checking that it was prepared for this model's reference size), so a reference
    used for many sketches is read, checked and measured once.

    Raises:
        ModelError: The model was trained without reference conditioning.
        ImageError: Unreadable file or a tensor of the wrong shape or range.
        ValueError: A :class:`PreparedReference` made for a model with another reference size.
    """
    require_reference(bundle)
    layout = bundle.config.conditioning
    if isinstance(reference, PreparedReference):
        side = layout.reference_size
        if tuple(reference.lab.shape) != (1, 3, side, side):
            raise ValueError(
                f"the prepared reference is {reference.lab.shape[-1]} px square; this model takes "
                f"{side} px: prepare it again with read_reference for this model"
            )
        return reference
    if isinstance(reference, NamedReference):
        name, reference = reference.name, reference.image
    else:
        name = str(reference) if isinstance(reference, str | Path) else "the reference picture"
    try:
        rgb_u8 = read_sketch_u8(reference)
    except ImageError as exc:
        if isinstance(reference, torch.Tensor):
            raise ImageError(exc.message.replace("sketch tensor", "reference tensor")) from None
        raise
    # A reference is often a small coloured figure on white (an emoji, a character on a page),
    # so it counts as coloured from a far smaller share of coloured pixels than a sketch does.
    if not is_colour_image(rgb_u8, fraction=REFERENCE_COLOUR_FRACTION):
        log.warning("%s is greyscale: it carries no colour for the model to follow", name)
    from .conditioning import letterbox

    rgb = rgb_u8.float() / 255.0  # once: a large reference is tens of MB in float
    square = letterbox(rgb, layout.reference_size)
    square_u8 = (square * 255.0).round().to(torch.uint8)
    digest = hashlib.sha256(square_u8.numpy().tobytes()).hexdigest()[:16]
    palette = reference_palette(rgb)
    return PreparedReference(rgb_to_lab(square_u8.float() / 255.0), digest, palette)


def _prepare(
    sketch: ImageInput,
    hints: HintLayer | ImageInput | None,
    bundle: ModelBundle,
    reference: ReferenceInput | None = None,
    name: str | None = None,
) -> _Prepared:
    """Read a sketch, its hints and its reference and build the conditioning at the working size.

    ``name``: what warnings call the sketch (default: its path, or the file it was decoded from).
    """
    config = bundle.config
    ref = read_reference(reference, bundle) if reference is not None else None
    name = name or image_name(sketch, "the sketch")
    sketch_u8 = read_sketch_u8(sketch)
    size = (int(sketch_u8.shape[-2]), int(sketch_u8.shape[-1]))
    layer = _as_layer(hints, size)
    lineart = config.conditioning.mode == "lineart"
    coloured = lineart and is_colour_image(sketch_u8)
    if coloured:
        log.warning("%s is already in colour; for greyscale photos use a photo model (--mode photo)", name)
    # Work at the model's resolution: area-downscale the sketch, resize hints without loss.
    small = working_size(size, config.resolution)
    # Paper white, darkest lines black (for the model and the regions) in the same pass.
    normalize = config.conditioning.normalize_sketch and config.conditioning.mode == "lineart"
    sketch_l = sketch_lightness_u8(sketch_u8, normalize=normalize)
    sketch_small = area_downscale(sketch_l, small) if small != size else sketch_l
    problem = sketch_problem(sketch_l, sketch_small) if lineart and not coloured else None  # one warning
    if problem is not None:
        log.warning("%s %s", name, problem)
    sketch_small, _ = pad_to_multiple(sketch_small, config.model.size_multiple, value=1.0)
    hint_rgb = hint_mask = None
    found = layer.hinted()  # known, or one pass over the layer
    sparse = None if found.is_empty else found
    if sparse is not None:
        if small[0] <= size[0] and small[1] <= size[1]:
            grid_rgb, grid_mask = sparse.on_grid(small)  # as resize_hints, from the hinted pixels only
            hint_rgb, hint_mask = grid_rgb.unsqueeze(0), grid_mask.view(1, 1, *small).to(grid_rgb.dtype)
        else:
            hint_rgb, hint_mask = resize_hints(layer.rgb, layer.mask, small)
        hint_rgb, _ = pad_to_multiple(hint_rgb, config.model.size_multiple, value=0.0)
        hint_mask, _ = pad_to_multiple(hint_mask, config.model.size_multiple, value=0.0)
    cond = make_conditioning(sketch_small, hint_rgb, hint_mask, config.conditioning)
    if ref is None:
        return _Prepared(sketch_u8, sketch_l, sketch_small, small, layer, cond, None, sparse)
    cond = cond.with_reference(ref.lab)
    return _Prepared(sketch_u8, sketch_l, sketch_small, small, layer, cond, ref.digest, sparse, ref.palette)


def _finish(
    x0: torch.Tensor,
    prep: _Prepared,
    bundle: ModelBundle,
    flat: bool,
    hint_regions: bool,
    keep_flats: bool,
    threads: int | None = None,
    reference_snap: float = 0.0,
) -> tuple[Image.Image, Image.Image | None]:
    """Model output (1, C, h', w') -> (output image, colour layer or None) at the sketch's size.

    ``threads``: for the full-size composition (default :func:`~sketchcolor.parallel.compose_threads`);
    the pictures do not depend on it. ``reference_snap``: ``SampleConfig.reference_snap`` (used
    when the sketch has a reference).
    """
    # Checked at the working size: everything after it is finite when the model's output is.
    if not torch.isfinite(x0).all():
        raise ImageError("the model produced non-finite values; the checkpoint may be corrupt or diverged")
    lab_small = crop_to(model_output_to_lab(x0, bundle, prep.sketch_small), prep.small)
    if bundle.config.conditioning.mode == "photo":
        ab_full = F.interpolate(lab_small[:, 1:], size=prep.size, mode="bilinear", align_corners=False)
        colour = lab_to_rgb_banded(torch.cat([prep.sketch_l * 100.0, ab_full], dim=1))
        image = Image.fromarray(to_u8(colour))
        return image, image
    hints = prep.hints if hint_regions else None
    picture, flats = carry_to_full_size(
        lab_small, crop_to(prep.sketch_small, prep.small), prep.sketch_l, prep.sketch_u8,
        flat=flat, hints=hints, keep_flats=keep_flats, threads=threads, palette=prep.palette,
        palette_distance=reference_snap, labels=prep.region_labels(hint_regions, threads),
    )  # fmt: skip
    return Image.fromarray(picture), Image.fromarray(flats) if flats is not None else None


def _record(
    prep: _Prepared,
    bundle: ModelBundle,
    sample_config: SampleConfig,
    seed: int,
    flat: bool,
    hint_regions: bool,
) -> dict[str, Any]:
    return {
        "seed": int(seed),
        "sampler": sample_config.sampler,
        "steps": sample_config.steps,
        "eta": sample_config.eta,
        "guidance": sample_config.guidance,
        "pin_hints": sample_config.pin_hints,
        "spacing": sample_config.spacing,
        "flat": flat,
        "hint_regions": hint_regions,
        "mode": bundle.config.conditioning.mode,
        "model_digest": bundle.digest,
        "sketchcolor_version": __version__,
        "working_size": [prep.small[1], prep.small[0]],
        "padded_size": [prep.padded[1], prep.padded[0]],
        "size": [prep.size[1], prep.size[0]],
        "hinted": prep.hints is not None,
        "hints_digest": hints_digest(prep.hints or SparseHints.none(prep.size)),
        "reference_scale": sample_config.reference_scale,
        "reference_snap": sample_config.reference_snap,
        "reference_digest": prep.reference_digest,
        # What "auto" became on this machine, so --from-png replays the same arithmetic.
        "precision": precision_name(network_dtype(sample_config, bundle, prep.padded)),
    }


def colorize(
    sketch: ImageInput,
    hints: HintLayer | ImageInput | None,
    bundle: ModelBundle,
    sample_config: SampleConfig | None = None,
    seed: int = 0,
    *,
    num_samples: int = 1,
    flat: bool = False,
    hint_regions: bool = True,
    keep_flats: bool = False,
    keep_steps: bool = False,
    reference: ReferenceInput | None = None,
    callback: StepCallback | None = None,
) -> ColorizeResult:
    """Colourise one sketch with a loaded model.

    Args:
        sketch: Path, PIL image or (1, 3, H, W) tensor in [0, 1] (see :func:`read_sketch`). A
            photo model takes a greyscale photo here.
        hints: A :class:`HintLayer` (see :func:`build_hints`), a hints image (path, PIL image,
            (1, 4, h, w) RGBA tensor), or None.
        bundle: The model (:func:`sketchcolor.checkpoint.load_checkpoint`).
        sample_config: Sampler settings (defaults of :class:`SampleConfig` if None).
        seed: Seed of the first sample; sample ``i`` uses ``seed + i``.
        num_samples: Variations to draw in one batch.
        flat: One colour per line-enclosed region (clean flats) instead of the default, which
            flattens only regions the model already coloured uniformly.
        hint_regions: Fill each line-enclosed region that holds hints with them (nearest hint
            within the region; the model colours the rest); False lets the model colour everything.
        keep_flats: Also return the colour layers without lines (``result.flats``).
        keep_steps: Keep each step's x0 estimate as a small picture (``result.frames``).
        reference: Optional reference picture (path, PIL image, (1, 3, H, W) tensor in [0, 1], or a
            :class:`NamedReference`) whose colours the model follows (models with reference
            conditioning); hints win where they are given. ``sample_config.reference_scale``
            guides on it.
        callback: Per-step progress callback.

    Returns:
        :class:`ColorizeResult`.

    Raises:
        ImageError, HintError: Bad inputs.
        ModelError: A reference for a model without reference conditioning.
    """
    if num_samples < 1:
        raise ValueError("num_samples must be >= 1")
    sample_config = sample_config or SampleConfig()
    prep = _prepare(sketch, hints, bundle, reference)
    cond = Conditioning.cat([prep.cond] * num_samples) if num_samples > 1 else prep.cond
    frames: list[list[Image.Image]] = [[] for _ in range(num_samples)]

    def on_step(info: Mapping[str, Any]) -> None:
        if keep_steps:
            for i in range(num_samples):
                frames[i].append(_frame(info["x0_hat"][i : i + 1], bundle, prep.sketch_small, prep.small))
        if callback is not None:
            callback(info)

    # Sample all variations in one batch, each with its own generator (seed + i).
    x0 = (
        sample(bundle, cond, sample_config, item_generators(seed, num_samples), callback=on_step)
        .float()
        .cpu()
    )
    images, flats, records = [], [], []
    for i in range(num_samples):
        image, colour = _finish(
            x0[i : i + 1], prep, bundle, flat, hint_regions, keep_flats,
            reference_snap=sample_config.reference_snap,
        )  # fmt: skip
        images.append(image)
        if colour is not None:
            flats.append(colour)
        records.append(
            {
                **_record(prep, bundle, sample_config, seed + i, flat, hint_regions),
                "sample_index": i,
                "num_samples": num_samples,
            }
        )
    return ColorizeResult(images=images, flats=flats, records=records, hints=prep.layer, frames=frames)


def derive_seed(base_seed: int, key: str) -> int:
    """A per-item seed from a base seed and the item's key (e.g. its relative path).

    An item's result then depends on the base seed and its own name only, not on which batch or
    shard it ran in (EDM's per-image generators).
    """
    digest = hashlib.sha256(f"{int(base_seed)}:{key}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def colorize_batch(
    sketches: Sequence[ImageInput],
    hints: Sequence[HintLayer | ImageInput | None],
    bundle: ModelBundle,
    sample_config: SampleConfig | None = None,
    seeds: Sequence[int] | None = None,
    *,
    flat: bool = False,
    hint_regions: bool = True,
    keep_flats: bool = False,
    references: Sequence[ReferenceInput | None] | None = None,
    callback: StepCallback | None = None,
    names: Sequence[str | None] | None = None,
) -> list[ColorizeResult]:
    """Colourise several sketches, running the network on as many of them at once as fit together.

    Sketches whose padded working sizes agree share one batch of network evaluations; each item has
    its own generator (``seeds[i]``), so its result does not depend on its batch companions (up to
    float rounding in batched arithmetic). The pictures are composed on several threads, one
    picture per thread, while the network works on the next group (the results are those of a
    sequential loop, pixel for pixel).

    Args:
        sketches: Sketches (see :func:`read_sketch`).
        hints: One hints source per sketch (or None).
        bundle: The model.
        sample_config: Sampler settings.
        seeds: One seed per sketch (default: 0, 1, 2, ...).
        flat: Clean flats (see :func:`colorize`).
        hint_regions: Hinted regions are filled with their hints (see :func:`colorize`).
        keep_flats: Also return the colour layers without lines.
        references: One reference picture (or None) per sketch (see :func:`colorize`).
        callback: Per-step progress callback (called per step of each batch).
        names: What warnings call each sketch (None: its path, or the file a PIL picture was
            read from; tensors have no name of their own).

    Returns:
        One :class:`ColorizeResult` per sketch, in order.
    """
    batch = _BatchPlan.make(
        sketches, hints, bundle, sample_config, seeds, references, flat, hint_regions, keep_flats, names
    )
    threads = compose_threads()
    if len(batch.preps) <= 1:
        # One picture: its composition takes every thread itself (bands in parallel).
        sampled = batch.sample_all(callback)
        return [sampled.finish(i, threads=threads) for i in range(len(sampled))]

    def finishing() -> Iterator[Callable[[], tuple[int, ColorizeResult]]]:
        # Produced here, on this thread, one group of equal-sized sketches at a time (the
        # network's work); composed meanwhile on the other threads, one picture per thread.
        for sampled in batch.sample_groups(callback):
            for i in sampled.indices:
                yield functools.partial(_finish_item, sampled, i)

    return [result for _, result in sorted(_run_overlapped(finishing(), threads), key=lambda r: r[0])]


def _finish_item(sampled: SampledBatch, i: int) -> tuple[int, ColorizeResult]:
    return i, sampled.finish(i, threads=1)


def _run_overlapped(tasks: Iterator[Callable[[], T]], threads: int) -> list[T]:
    """Run the tasks ``tasks`` yields, in parallel with producing them; results in their order.

    ``tasks`` is iterated on this thread (producing a task is the network's work); ``threads - 1``
    workers run tasks as they come, and once production ends this thread helps with the rest. So
    the composition of one group overlaps the network of the next, and at most ``threads``
    compositions run at once. The first exception (producing or running) is raised once the
    running tasks have finished; tasks not yet started are dropped.
    """
    results: dict[int, T] = {}
    errors: list[BaseException] = []
    todo: queue.SimpleQueue[tuple[int, Callable[[], T]] | None] = queue.SimpleQueue()

    def work(block: bool) -> None:
        while True:
            try:
                item = todo.get(block=block)
            except queue.Empty:
                return
            if item is None:
                return
            if errors:
                continue
            try:
                results[item[0]] = item[1]()
            except BaseException as exc:  # noqa: BLE001 - re-raised by the caller
                errors.append(exc)

    workers = max(0, threads - 1)
    count = 0
    with concurrent.futures.ThreadPoolExecutor(
        max(1, workers), thread_name_prefix="sketchcolor-finish"
    ) as pool:
        helpers = [pool.submit(work, True) for _ in range(workers)]
        try:
            for count, task in enumerate(tasks, start=1):
                todo.put((count - 1, task))
                if errors:
                    break
            work(False)  # production is over: help with what is left
        except BaseException as exc:  # noqa: BLE001 - the workers are stopped first
            errors.insert(0, exc)
        finally:
            for _ in helpers:
                todo.put(None)
    if errors:
        raise errors[0]
    return [results[i] for i in range(count)]


def run_pipelined(
    items: Iterable[A],
    produce: Callable[[A], B],
    consume: Callable[[A, B], None],
    depth: int = 1,
) -> None:
    """``consume(x, produce(x))`` for each item in order, producing the next while consuming the last.

    A two-stage pipeline: this thread produces (for ``batch``: reads a chunk and runs the network
    on it) while one other thread consumes (composes and writes the chunk before), with at most
    ``depth`` produced items waiting (a bounded queue, so memory stays bounded); ``depth <= 0``
    runs the items one after another on this thread. Items are consumed in order, each exactly
    as the sequential loop would.

    Failures: the first exception from ``consume`` stops production and is raised here after the
    consumer has stopped; what was produced and not consumed after it is dropped. An exception
    while producing (KeyboardInterrupt included) is raised after everything already produced has
    been consumed, so finished work is not thrown away.
    """
    if depth <= 0:
        for item in items:
            consume(item, produce(item))
        return
    waiting: queue.Queue[tuple[A, B] | None] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    failures: list[BaseException] = []

    def consumer() -> None:
        while (entry := waiting.get()) is not None:
            if stop.is_set():
                continue  # after a failure here, the rest is dropped
            try:
                consume(*entry)
            except BaseException as exc:  # noqa: BLE001 - re-raised on the producing thread
                failures.append(exc)
                stop.set()

    thread = threading.Thread(target=consumer, name="sketchcolor-pipeline", daemon=True)
    thread.start()
    try:
        for item in items:
            if stop.is_set():
                break
            waiting.put((item, produce(item)))  # waits while the consumer is behind
    finally:
        waiting.put(None)
        thread.join()
    if failures:
        raise failures[0]


@dataclasses.dataclass(frozen=True)
class _BatchPlan:
    """Sketches read and prepared, grouped by padded working size (internal)."""

    bundle: ModelBundle
    sample_config: SampleConfig
    preps: list[_Prepared]
    seeds: list[int]
    groups: list[list[int]]
    flat: bool
    hint_regions: bool
    keep_flats: bool

    @staticmethod
    def make(
        sketches: Sequence[ImageInput],
        hints: Sequence[HintLayer | ImageInput | None],
        bundle: ModelBundle,
        sample_config: SampleConfig | None,
        seeds: Sequence[int] | None,
        references: Sequence[ReferenceInput | None] | None,
        flat: bool,
        hint_regions: bool,
        keep_flats: bool,
        names: Sequence[str | None] | None = None,
    ) -> _BatchPlan:
        if len(hints) != len(sketches):
            raise ValueError("give one hints entry (or None) per sketch")
        seed_list = list(range(len(sketches))) if seeds is None else list(seeds)
        if references is not None and len(references) != len(sketches):
            raise ValueError("give one reference (or None) per sketch")
        refs = _read_references_once(references, bundle) if references is not None else [None] * len(sketches)
        if names is not None and len(names) != len(sketches):
            raise ValueError("give one name (or None) per sketch")
        named = list(names) if names is not None else [None] * len(sketches)
        # A sketch given several times with the same hints and reference (its variations, as
        # ``batch --num-samples`` asks for) is read and prepared once; its samples share it.
        prepared: dict[tuple[object, ...], _Prepared] = {}
        preps = []
        for s, h, r, name in zip(sketches, hints, refs, named, strict=True):
            key = (_identity(s), _identity(h), _identity(r), name)
            if key not in prepared:
                prepared[key] = _prepare(s, h, bundle, r, name)
            preps.append(prepared[key])
        groups: dict[tuple[int, int], list[int]] = {}
        for i, prep in enumerate(preps):
            groups.setdefault(prep.padded, []).append(i)
        return _BatchPlan(
            bundle, sample_config or SampleConfig(), preps, seed_list, list(groups.values()), flat, hint_regions,
            keep_flats,
        )  # fmt: skip

    def sample_groups(self, callback: StepCallback | None) -> Iterator[SampledBatch]:
        """Run the network on each group in turn; each yield holds that group's items."""
        x0: list[torch.Tensor | None] = [None] * len(self.preps)
        for members in self.groups:
            cond = Conditioning.cat([self.preps[i].cond for i in members])
            gens = [torch.Generator("cpu").manual_seed(check_seed(self.seeds[i])) for i in members]
            out = sample(self.bundle, cond, self.sample_config, gens, callback=callback).float().cpu()
            for j, i in enumerate(members):
                x0[i] = out[j : j + 1]
            yield SampledBatch(self, x0, tuple(members))

    def sample_all(self, callback: StepCallback | None) -> SampledBatch:
        x0: list[torch.Tensor | None] = [None] * len(self.preps)
        for group in self.sample_groups(callback):
            x0 = group.x0  # one list, filled in group by group
        return SampledBatch(self, x0, tuple(range(len(self.preps))))


def _identity(value: object) -> tuple[str, object]:
    """What makes two inputs of one batch the same: a path by its text, anything else by identity
    (the caller's sequences hold the objects alive, so an id is not reused meanwhile)."""
    return ("path", str(value)) if isinstance(value, str | Path) else ("object", id(value))


def _read_references_once(
    references: Sequence[ReferenceInput | None], bundle: ModelBundle
) -> list[PreparedReference | None]:
    """Each distinct reference of a batch read once: the same path, or the same object, again
    (one reference for a chapter, or for every sample of a sketch) is not read again."""
    done: dict[tuple[str, object], PreparedReference] = {}
    out: list[PreparedReference | None] = []
    for ref in references:
        if ref is None:
            out.append(None)
            continue
        key = _identity(ref)
        if key not in done:
            done[key] = read_reference(ref, bundle)
        out.append(done[key])
    return out


@dataclasses.dataclass(frozen=True)
class SampledBatch:
    """Sketches whose network work is done (:func:`sample_batch`); each is finished on its own.

    Finishing an item (carrying its colours to full size, laying its lines over them) depends on
    that item alone, so items may be finished on any thread and in any order, for instance while
    the network works on the next batch; :meth:`finish` gives exactly the result
    :func:`colorize_batch` gives.
    """

    plan: _BatchPlan
    x0: list[torch.Tensor | None]
    indices: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.plan.preps)

    def finish(self, i: int, *, threads: int | None = None) -> ColorizeResult:
        """The result of sketch ``i`` (its position in the batch).

        Args:
            i: Index into the sketches given to :func:`sample_batch`.
            threads: Threads for its composition (default
                :func:`~sketchcolor.parallel.compose_threads`); the picture does not depend on it.

        Raises:
            ImageError: The model produced non-finite values for this sketch.
        """
        plan, prep, x0 = self.plan, self.plan.preps[i], self.x0[i]
        if x0 is None:
            raise ValueError(f"sketch {i} has not been sampled")
        image, colour = _finish(
            x0, prep, plan.bundle, plan.flat, plan.hint_regions, plan.keep_flats, threads,
            plan.sample_config.reference_snap,
        )  # fmt: skip
        record = {
            **_record(prep, plan.bundle, plan.sample_config, plan.seeds[i], plan.flat, plan.hint_regions),
            "sample_index": 0,
            "num_samples": 1,
        }
        return ColorizeResult([image], [colour] if colour is not None else [], [record], prep.layer, [[]])


def sample_batch(
    sketches: Sequence[ImageInput],
    hints: Sequence[HintLayer | ImageInput | None],
    bundle: ModelBundle,
    sample_config: SampleConfig | None = None,
    seeds: Sequence[int] | None = None,
    *,
    flat: bool = False,
    hint_regions: bool = True,
    keep_flats: bool = False,
    references: Sequence[ReferenceInput | None] | None = None,
    callback: StepCallback | None = None,
) -> SampledBatch:
    """The first half of :func:`colorize_batch`: read, prepare and sample; finish each item later.

    For pipelines that overlap the composition of one batch with the network of the next (as
    ``sketchcolor batch`` does). Arguments as :func:`colorize_batch`.

    Returns:
        A :class:`SampledBatch`; ``batch.finish(i)`` is ``colorize_batch(...)[i]``.
    """
    plan = _BatchPlan.make(
        sketches, hints, bundle, sample_config, seeds, references, flat, hint_regions, keep_flats
    )
    return plan.sample_all(callback)


#: Loaded models kept for reuse (most recently used last); see :func:`load_model`.
MODEL_CACHE_SIZE = 4
_bundles: collections.OrderedDict[tuple[str, str, str], ModelBundle] = collections.OrderedDict()
_digests: dict[tuple[str, int, int, int], str] = {}
_cache_lock = threading.Lock()


def load_model(
    model: str | Path | ModelBundle | None = None, device: str = "auto", *, cache: bool = True
) -> ModelBundle:
    """Resolve a model argument: a bundle, a path, or None for the model bundled in the package.

    Loaded models are cached by (file digest, device, weight dtype), so calling
    :func:`sketchcolor.colorize` in a loop reads the file once; a file changed on disk (size or
    modification time) is read again. At most :data:`MODEL_CACHE_SIZE` models are kept.

    Args:
        model: ``.safetensors`` path, a loaded bundle (returned as is), or None (bundled model).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
        cache: Reuse (and keep) the loaded model.

    Raises:
        CheckpointError: The file cannot be loaded, or no default model is installed.
        DeviceError: The device is not available.
    """
    if isinstance(model, ModelBundle):
        return model
    dev = resolve_device(device)
    path = Path(default_model_path() if model is None else model)
    if not cache:
        return load_checkpoint(path, device=dev)
    from .checkpoint import file_digest

    try:
        st = path.stat()
    except OSError:
        return load_checkpoint(path, device=dev)  # raises the usual one-line error
    with _cache_lock:
        stat_key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
        digest = _digests.get(stat_key)
        if digest is None:
            digest = _digests[stat_key] = file_digest(path)
        key = (digest, str(dev), "float32")
        bundle = _bundles.get(key)
        if bundle is None:
            bundle = load_checkpoint(path, device=dev)
            _bundles[key] = bundle
            while len(_bundles) > MODEL_CACHE_SIZE:
                _bundles.popitem(last=False)
        _bundles.move_to_end(key)
        return bundle


def clear_model_cache() -> None:
    """Forget every cached model (frees their memory once no one else holds them)."""
    with _cache_lock:
        _bundles.clear()
        _digests.clear()


PointInput = str | tuple[float, float, str | tuple[float, float, float]]


class Colorizer:
    """A model loaded once, with everything ``sketchcolor colorize`` and ``batch`` can do.

    For loops, notebooks and servers::

        colorizer = sketchcolor.Colorizer(device="auto")           # the bundled model
        for page in pages:
            colorizer(page, hints=f"{page}.hints.png", seed=1).image.save(...)

    Every call takes sampling settings as keyword overrides of the ``SampleConfig`` given at
    construction (the library's defaults otherwise). Results are those of
    :func:`colorize` / :func:`colorize_batch` with the same inputs and seed, pixel for pixel.

    Args:
        model: ``.safetensors`` path, a loaded bundle, or None for the bundled model.
        device: Compute device (see :func:`load_model`).
        sample_config: Default sampling settings (:class:`SampleConfig`'s defaults if None).
        **settings: Fields of :class:`SampleConfig` overriding ``sample_config``
            (``steps``, ``sampler``, ``eta``, ``guidance``, ``reference_scale``, ``pin_hints``...).

    Raises:
        CheckpointError, DeviceError: The model cannot be loaded on that device.
        ConfigError: An unknown or invalid sampling setting.
    """

    def __init__(
        self,
        model: str | Path | ModelBundle | None = None,
        *,
        device: str = "auto",
        sample_config: SampleConfig | None = None,
        **settings: Any,
    ) -> None:
        self.bundle = load_model(model, device)
        self.sample_config = self._settings(sample_config or SampleConfig(), settings)

    @staticmethod
    def _settings(base: SampleConfig, overrides: Mapping[str, Any]) -> SampleConfig:
        from .config import from_dict, to_dict

        if not overrides:
            return base
        return from_dict(
            SampleConfig, {**to_dict(base), **{k: v for k, v in overrides.items() if v is not None}}
        )

    @property
    def takes_reference(self) -> bool:
        """Whether the model was trained with reference conditioning."""
        return self.bundle.config.conditioning.reference

    def hints(
        self,
        size: tuple[int, int],
        hints: HintLayer | ImageInput | Sequence[ImageInput] | None = None,
        points: Sequence[PointInput] = (),
        *,
        point_radius: float | None = None,
        stretch: bool = False,
        in_sketch: HintLayer | None = None,
    ) -> HintLayer:
        """Merge hints given every way into one layer at ``size`` = (H, W) (see :func:`build_hints`).

        ``hints`` may be a hint layer, one hints image or ``.json`` path, or a list of them;
        ``points`` are ``"X,Y,COLOR"`` strings or ``(x, y, colour)`` tuples (colour as text or an
        RGB triple in [0, 1]).
        """
        if isinstance(hints, HintLayer):
            base = hints if in_sketch is None else hints.over(in_sketch)
            return build_hints(size, points=_point_texts(points), in_sketch=base, point_radius=point_radius)
        sources: list[ImageInput] = []
        if hints is not None:
            sources = list(hints) if isinstance(hints, list | tuple) else [hints]  # type: ignore[list-item]
        images = [h for h in sources if not (isinstance(h, str | Path) and str(h).lower().endswith(".json"))]
        jsons = [
            Path(str(h)) for h in sources if isinstance(h, str | Path) and str(h).lower().endswith(".json")
        ]
        return build_hints(
            size, images=images, json_files=jsons, points=_point_texts(points), in_sketch=in_sketch,
            stretch=stretch, point_radius=point_radius,
        )  # fmt: skip

    def colorize(
        self,
        sketch: ImageInput,
        hints: HintLayer | ImageInput | Sequence[ImageInput] | None = None,
        *,
        points: Sequence[PointInput] = (),
        reference: ReferenceInput | None = None,
        seed: int = 0,
        num_samples: int = 1,
        flat: bool = False,
        hint_regions: bool = True,
        keep_flats: bool = False,
        keep_steps: bool = False,
        hints_in_sketch: bool = False,
        point_radius: float | None = None,
        stretch_hints: bool = False,
        callback: StepCallback | None = None,
        **settings: Any,
    ) -> ColorizeResult:
        """Colourise one sketch (see :func:`colorize`); ``settings`` override sampling fields.

        With ``hints_in_sketch`` coloured scribbles drawn on the sketch are taken as hints and
        removed from its lines, as ``--hints-in-sketch`` does.
        """
        sample_config = self._settings(self.sample_config, settings)
        layer: HintLayer | None = None
        if hints is not None or points or hints_in_sketch:
            sketch_rgb = read_sketch(sketch)
            size = (int(sketch_rgb.shape[-2]), int(sketch_rgb.shape[-1]))
            in_sketch = None
            if hints_in_sketch:
                sketch_rgb, in_sketch = split_hints_from_sketch(sketch_rgb)
            layer = self.hints(
                size, hints, points, point_radius=point_radius, stretch=stretch_hints, in_sketch=in_sketch
            )
            sketch = sketch_rgb
        return colorize(
            sketch, layer, self.bundle, sample_config, seed, num_samples=num_samples, flat=flat,
            hint_regions=hint_regions, keep_flats=keep_flats, keep_steps=keep_steps, reference=reference,
            callback=callback,
        )  # fmt: skip

    __call__ = colorize

    def read_reference(self, reference: ReferenceInput) -> PreparedReference:
        """A reference read and measured once, to pass as ``reference`` for many sketches.

        See :func:`read_reference`; the result is only for models of this reference size.
        """
        return read_reference(reference, self.bundle)

    def colorize_batch(
        self,
        sketches: Sequence[ImageInput],
        hints: Sequence[HintLayer | ImageInput | None] | None = None,
        *,
        references: Sequence[ReferenceInput | None] | None = None,
        seeds: Sequence[int] | None = None,
        flat: bool = False,
        hint_regions: bool = True,
        keep_flats: bool = False,
        callback: StepCallback | None = None,
        **settings: Any,
    ) -> list[ColorizeResult]:
        """Colourise several sketches, batching the network (see :func:`colorize_batch`)."""
        sample_config = self._settings(self.sample_config, settings)
        return colorize_batch(
            sketches, list(hints) if hints is not None else [None] * len(sketches), self.bundle, sample_config,
            seeds, flat=flat, hint_regions=hint_regions, keep_flats=keep_flats, references=references,
            callback=callback,
        )  # fmt: skip


def _point_texts(points: Sequence[PointInput]) -> list[str]:
    """Points as ``X,Y,COLOR`` texts (what :func:`build_hints` parses)."""
    texts = []
    for p in points:
        if isinstance(p, str):
            texts.append(p)
            continue
        x, y, colour = p
        if not isinstance(colour, str):
            r, g, b = (round(float(c) * 255) for c in colour)
            colour = f"#{r:02x}{g:02x}{b:02x}"
        texts.append(f"{x!r},{y!r},{colour}")
    return texts


__all__ = [
    "ColorizeResult",
    "Colorizer",
    "NamedReference",
    "PreparedReference",
    "clear_model_cache",
    "build_hints",
    "colorize",
    "colorize_batch",
    "derive_seed",
    "hints_from_image",
    "is_colour_image",
    "load_model",
    "read_reference",
    "require_reference",
    "read_sketch",
    "SampledBatch",
    "sample",
    "sample_batch",
    "split_hints_from_sketch",
    "working_size",
]
