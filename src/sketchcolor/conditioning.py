"""What the model is conditioned on: the sketch, colour hints and (optionally) a region fill.

Owns: the :class:`Conditioning` record and its fixed channel order (:meth:`Conditioning.as_channels`),
turning user hints (an RGBA layer, points) into tensors, resizing hints so that no dot is lost,
the classical line-enclosed region fill, and hint sampling/dropout for training.
The model never parses hints; it only sees :meth:`Conditioning.as_channels`.

Imports only :mod:`sketchcolor.config`, :mod:`sketchcolor.errors`, :mod:`sketchcolor.parallel` and
:mod:`sketchcolor.color`.

Conventions (see docs/conventions.md):

* ``sketch``: (N, 1, H, W) lightness L/100 in [0, 1]; white paper 1, black ink 0.
* ``hint_lab``: (N, 3, H, W) full LAB (L in [0, 100]) of each hinted pixel; exactly 0 where
  ``hint_mask`` is 0. Hints carry lightness: dark red and pink differ only in L.
* ``hint_mask``: (N, 1, H, W) in {0, 1}; 1 where the user gave a colour. It separates "no hint"
  from "a grey hint with a = b = 0".
* ``fill_lab``/``fill_mask``: the hints spread over each line-enclosed region (present when the
  model's :class:`~sketchcolor.config.ConditioningConfig` asks for ``region_fill``).
* ``reference_lab``: (N, 3, S, S) LAB of a reference picture letterboxed onto a white square
  (:func:`letterbox_reference`), and ``reference_mask`` (N,) in {0, 1}: whether item i has one.
  The reference is not a spatial channel: the network reads it through its reference encoder and
  cross-attention (:class:`ModelCond`).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .color import lab_to_model, rgb_to_lab
from .config import ColorConfig, ConditioningConfig, HintConfig, ReferenceConfig
from .errors import HintError
from .parallel import parallel_map

#: A pixel whose every RGB channel is at least this is "white paper" in a hints image: no hint.
HINT_WHITE_LEVEL = 0.97
#: A hints pixel with alpha below this is transparent: no hint.
HINT_ALPHA_LEVEL = 0.5
#: Sketch pixels with lightness (L/100) below this are line pixels; they bound regions.
LINE_LEVEL = 0.6
#: A region that touches the image border and covers more than this fraction of the image is the
#: page's background (possibly merged with a shape whose outline is open), not a shape of its own.
BACKGROUND_FRACTION = 0.25


@dataclasses.dataclass(frozen=True)
class Conditioning:
    """The conditioning of a batch, in natural units (see the module docstring for ranges).

    Attributes:
        sketch: (N, 1, H, W) lightness in [0, 1].
        hint_lab: (N, 3, H, W) LAB of hinted pixels, 0 elsewhere.
        hint_mask: (N, 1, H, W) 1 where hinted, else 0.
        fill_lab: (N, 3, H, W) region-filled hint LAB, or None.
        fill_mask: (N, 1, H, W) 1 where a region received a hint colour, or None.
        reference_lab: (N, 3, S, S) LAB of the letterboxed reference pictures, or None.
        reference_mask: (N,) 1 for items that have a reference, 0 for the others, or None.
    """

    sketch: torch.Tensor
    hint_lab: torch.Tensor
    hint_mask: torch.Tensor
    fill_lab: torch.Tensor | None = None
    fill_mask: torch.Tensor | None = None
    reference_lab: torch.Tensor | None = None
    reference_mask: torch.Tensor | None = None

    def __post_init__(self) -> None:
        n, c, h, w = self.sketch.shape
        if c != 1:
            raise ValueError(f"sketch must be (N, 1, H, W), got {tuple(self.sketch.shape)}")
        if self.hint_lab.shape != (n, 3, h, w):
            raise ValueError(f"hint_lab must be {(n, 3, h, w)}, got {tuple(self.hint_lab.shape)}")
        if self.hint_mask.shape != (n, 1, h, w):
            raise ValueError(f"hint_mask must be {(n, 1, h, w)}, got {tuple(self.hint_mask.shape)}")
        if (self.fill_lab is None) != (self.fill_mask is None):
            raise ValueError("fill_lab and fill_mask must be given together")
        if (self.reference_lab is None) != (self.reference_mask is None):
            raise ValueError("reference_lab and reference_mask must be given together")
        if self.reference_lab is not None and self.reference_mask is not None:
            r = self.reference_lab
            if r.dim() != 4 or r.shape[0] != n or r.shape[1] != 3 or r.shape[2] != r.shape[3]:
                raise ValueError(f"reference_lab must be ({n}, 3, S, S), got {tuple(r.shape)}")
            if tuple(self.reference_mask.shape) != (n,):
                raise ValueError(f"reference_mask must be ({n},), got {tuple(self.reference_mask.shape)}")

    @property
    def batch_size(self) -> int:
        return int(self.sketch.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(H, W)."""
        return int(self.sketch.shape[-2]), int(self.sketch.shape[-1])

    @property
    def has_reference(self) -> bool:
        """Whether any item of the batch has a reference picture."""
        return self.reference_mask is not None and bool(self.reference_mask.any())

    def with_region_fill(self, gap: float = 0.0) -> Conditioning:
        """Return a copy with ``fill_lab``/``fill_mask`` computed by :func:`region_fill`.

        Args:
            gap: Outline gaps up to about twice this many pixels per 128 px of the long side are
                closed before the regions are found (``ConditioningConfig.region_gap``).
        """
        radius = gap * max(self.size) / 128.0
        fill_lab, fill_mask = region_fill(self.sketch, self.hint_lab, self.hint_mask, gap=radius)
        return dataclasses.replace(self, fill_lab=fill_lab, fill_mask=fill_mask)

    def with_reference(self, reference_lab: torch.Tensor | None) -> Conditioning:
        """A copy whose items all take ``reference_lab`` (1 or N, 3, S, S), or none (None)."""
        if reference_lab is None:
            return dataclasses.replace(self, reference_lab=None, reference_mask=None)
        n = self.batch_size
        ref = reference_lab.expand(n, -1, -1, -1) if reference_lab.shape[0] == 1 else reference_lab
        return dataclasses.replace(self, reference_lab=ref, reference_mask=ref.new_ones(n))

    def without_hints(self) -> Conditioning:
        """The same sketch (and reference) with every hint removed (a branch of guidance)."""
        return self.keep_hints(torch.zeros(self.batch_size, dtype=torch.bool, device=self.sketch.device))

    def without_reference(self) -> Conditioning:
        """The same sketch and hints with no reference (the other branch of guidance)."""
        return dataclasses.replace(self, reference_lab=None, reference_mask=None)

    def keep_hints(self, keep: torch.Tensor) -> Conditioning:
        """Drop the hints of items where ``keep`` (N,) is False (hint dropout, guidance)."""
        k = keep.to(self.sketch.dtype).view(-1, 1, 1, 1)
        fill_lab = None if self.fill_lab is None else self.fill_lab * k
        fill_mask = None if self.fill_mask is None else self.fill_mask * k
        return dataclasses.replace(
            self,
            hint_lab=self.hint_lab * k,
            hint_mask=self.hint_mask * k,
            fill_lab=fill_lab,
            fill_mask=fill_mask,
        )

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Conditioning:
        """Move every tensor to ``device``."""
        moved: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            moved[f.name] = None if value is None else value.to(device, non_blocking=non_blocking)
        return Conditioning(**moved)

    @staticmethod
    def cat(items: Sequence[Conditioning]) -> Conditioning:
        """Concatenate records along the batch axis.

        Items without a reference get a blank one (``reference_mask`` 0) when others have one;
        all references must share one size.
        """

        def cat_opt(xs: list[torch.Tensor | None]) -> torch.Tensor | None:
            return None if xs[0] is None else torch.cat(xs, dim=0)  # type: ignore[arg-type]

        reference_lab = reference_mask = None
        with_ref = [c for c in items if c.reference_lab is not None]
        if with_ref:
            like = typing.cast(torch.Tensor, with_ref[0].reference_lab)
            refs, masks = [], []
            for c in items:
                if c.reference_lab is None or c.reference_mask is None:
                    refs.append(like.new_zeros(c.batch_size, *like.shape[1:]))
                    masks.append(like.new_zeros(c.batch_size))
                else:
                    refs.append(c.reference_lab)
                    masks.append(c.reference_mask)
            reference_lab, reference_mask = torch.cat(refs), torch.cat(masks)
        return Conditioning(
            torch.cat([c.sketch for c in items]),
            torch.cat([c.hint_lab for c in items]),
            torch.cat([c.hint_mask for c in items]),
            cat_opt([c.fill_lab for c in items]),
            cat_opt([c.fill_mask for c in items]),
            reference_lab,
            reference_mask,
        )

    def as_channels(self, config: ConditioningConfig, color: ColorConfig) -> torch.Tensor:
        """The spatial channels the model sees, in the order ``config.channels`` names them.

        Layout (``ConditioningConfig.channels``): ``sketch`` (scaled to [-1, 1], white = +1),
        ``hint_L, hint_a, hint_b`` (model space, 0 where no hint), ``hint_mask`` (0 or 1), then,
        with ``region_fill``, ``fill_L, fill_a, fill_b, fill_mask`` in the same units.

        Returns:
            (N, len(config.channels), H, W).

        Raises:
            ValueError: ``config`` asks for the region fill but this record has none.
        """
        parts = [self.sketch * 2.0 - 1.0, lab_to_model(self.hint_lab, color) * self.hint_mask, self.hint_mask]
        if config.region_fill:
            if self.fill_lab is None or self.fill_mask is None:
                raise ValueError("this model needs the region fill; call with_region_fill() first")
            parts += [lab_to_model(self.fill_lab, color) * self.fill_mask, self.fill_mask]
        return torch.cat(parts, dim=1)

    def as_reference(self, config: ConditioningConfig, color: ColorConfig) -> torch.Tensor | None:
        """The reference input of the network: (N, 4, S, S), or None when no item has one.

        Channels: the reference's L, a, b in model space (0 for items without one) and a constant
        plane holding ``reference_mask`` (1: this item has a reference). The network ignores the
        reference of items whose mask is 0, exactly as when None is given.

        Raises:
            ValueError: A reference is given to a layout without reference conditioning, or at a
                size other than ``config.reference_size``.
        """
        if not self.has_reference:
            return None
        if not config.reference:
            raise ValueError("this model takes no reference picture")
        ref = typing.cast(torch.Tensor, self.reference_lab)
        mask = typing.cast(torch.Tensor, self.reference_mask).to(ref.dtype).view(-1, 1, 1, 1)
        if ref.shape[-1] != config.reference_size:
            raise ValueError(f"reference must be {config.reference_size} px square, got {ref.shape[-1]}")
        plane = mask.expand(-1, 1, *ref.shape[-2:])
        return torch.cat([lab_to_model(ref, color) * mask, plane], dim=1)

    def model_input(self, config: ConditioningConfig, color: ColorConfig) -> ModelCond:
        """Everything the network is conditioned on, in model space (:class:`ModelCond`)."""
        return ModelCond(self.as_channels(config, color), self.as_reference(config, color))


@dataclasses.dataclass(frozen=True)
class ModelCond:
    """The network's conditioning in model space, as samplers pass it to the denoiser unchanged.

    Attributes:
        channels: (N, C_cond, H, W) spatial channels concatenated to ``x_t``
            (:meth:`Conditioning.as_channels`).
        reference: (N, 4, S, S) reference input (:meth:`Conditioning.as_reference`), or None.
    """

    channels: torch.Tensor
    reference: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return int(self.channels.shape[0])

    def to(
        self, device: torch.device | str, *, memory_format: torch.memory_format = torch.contiguous_format
    ) -> ModelCond:
        """Move to ``device`` (spatial tensors in ``memory_format``)."""
        ref = (
            None
            if self.reference is None
            else self.reference.to(device).contiguous(memory_format=memory_format)
        )
        return ModelCond(self.channels.to(device).contiguous(memory_format=memory_format), ref)

    @staticmethod
    def cat(items: Sequence[ModelCond]) -> ModelCond:
        """Concatenate along the batch axis; a missing reference becomes a blank one (mask 0)."""
        refs = [c.reference for c in items]
        reference = None
        if any(r is not None for r in refs):
            like = next(r for r in refs if r is not None)
            reference = torch.cat(
                [
                    r if r is not None else like.new_zeros(c.batch_size, *like.shape[1:])
                    for r, c in zip(refs, items, strict=True)
                ]
            )
        return ModelCond(torch.cat([c.channels for c in items]), reference)


# ----------------------------------------------------------------------------------------------
# User hints -> tensors
# ----------------------------------------------------------------------------------------------


def hints_from_rgba(rgba: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split an RGBA hints layer into hint colours and a hint mask.

    Transparent pixels (alpha < :data:`HINT_ALPHA_LEVEL`) and white pixels (every channel at least
    :data:`HINT_WHITE_LEVEL`) mean "no hint"; every other pixel is a hint of its RGB colour.

    Args:
        rgba: (N, 4, H, W) in [0, 1] (an opaque image has alpha 1 everywhere).

    Returns:
        ``hint_rgb`` (N, 3, H, W) in [0, 1], 0 where unhinted, and ``hint_mask`` (N, 1, H, W).
    """
    if rgba.dim() != 4 or rgba.shape[1] != 4:
        raise ValueError(f"rgba must be (N, 4, H, W), got {tuple(rgba.shape)}")
    rgb, alpha = rgba[:, :3], rgba[:, 3:]
    white = (rgb >= HINT_WHITE_LEVEL).all(dim=1, keepdim=True)
    mask = ((alpha >= HINT_ALPHA_LEVEL) & ~white).to(rgb.dtype)
    return rgb * mask, mask


def resize_hints(
    hint_rgb: torch.Tensor, hint_mask: torch.Tensor, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize hints to ``size`` (H, W) so that no hinted pixel is ever lost.

    Downscaling: every input pixel belongs to exactly one output cell (the one its position maps
    to); a cell takes the mean colour of the hinted pixels in it and is hinted if it holds any, so
    a one-pixel dot survives any downscale. Only hinted pixels are visited, so sparse hints on huge
    images cost little. Upscaling is nearest-neighbour, so hint edges stay sharp.

    Args:
        hint_rgb: (N, 3, h, w) colours in [0, 1] (values where the mask is 0 are ignored).
        hint_mask: (N, 1, h, w) in {0, 1}.
        size: Target (H, W).

    Returns:
        ``hint_rgb`` (N, 3, H, W) and ``hint_mask`` (N, 1, H, W) in {0, 1}.
    """
    if tuple(hint_mask.shape[-2:]) == tuple(size):
        return hint_rgb * hint_mask, hint_mask
    n, _, h, w = hint_mask.shape
    out_h, out_w = size
    if out_h >= h and out_w >= w:
        rgb = F.interpolate(hint_rgb * hint_mask, size=size, mode="nearest-exact")
        mask = F.interpolate(hint_mask, size=size, mode="nearest-exact")
        return rgb, mask
    rgb_out = torch.zeros(n, 3, out_h * out_w, dtype=hint_rgb.dtype)
    mask_out = torch.zeros(n, 1, out_h * out_w, dtype=hint_mask.dtype)
    for i in range(n):
        ys, xs = hint_mask[i, 0].nonzero(as_tuple=True)
        if ys.numel() == 0:
            continue
        cell = (ys * out_h // h) * out_w + (xs * out_w // w)
        count = torch.bincount(cell, minlength=out_h * out_w).to(hint_rgb.dtype)
        colours = hint_rgb[i][:, ys, xs]
        total = torch.zeros(3, out_h * out_w, dtype=hint_rgb.dtype).index_add_(1, cell, colours)
        rgb_out[i] = total / count.clamp(min=1)
        mask_out[i, 0] = (count > 0).to(hint_mask.dtype)
    return rgb_out.view(n, 3, out_h, out_w).clamp(0.0, 1.0), mask_out.view(n, 1, out_h, out_w)


def hints_to_lab(hint_rgb: torch.Tensor, hint_mask: torch.Tensor) -> torch.Tensor:
    """Hint colours in sRGB -> LAB, exactly 0 where there is no hint."""
    return rgb_to_lab(hint_rgb) * hint_mask


def from_points(
    points: Sequence[tuple[float, float, tuple[float, float, float]]],
    size: tuple[int, int],
    *,
    radius: float = 2.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paint point hints as small discs.

    Args:
        points: (x, y, (r, g, b)) with x, y in pixels (0 = left/top) and RGB in [0, 1].
        size: Image (H, W).
        radius: Disc radius in pixels (at least the pixel under the point is always painted).

    Returns:
        ``hint_rgb`` (1, 3, H, W) and ``hint_mask`` (1, 1, H, W); later points paint over earlier.

    Raises:
        HintError: A point lies outside the image.
    """
    h, w = size
    rgb = torch.zeros(1, 3, h, w)
    mask = torch.zeros(1, 1, h, w)
    r = max(radius, 0.0)
    # Each disc is computed in its bounding window only (the same pixels as over the whole image):
    # a stroke is thousands of dots, and a full-image pass per dot took minutes on a large page.
    reach = max(h, w) if r == math.inf else (int(r) if r == r else 0)
    for x, y, colour in points:
        if not (0 <= x < w and 0 <= y < h):
            raise HintError(f"hint point ({x:g}, {y:g}) is outside the {w}x{h} image")
        cx, cy = int(x), int(y)
        y0, y1, x0, x1 = (
            max(0, cy - reach),
            min(h, cy + reach + 1),
            max(0, cx - reach),
            min(w, cx + reach + 1),
        )
        yy = torch.arange(y0, y1, dtype=torch.float32).view(-1, 1)
        xx = torch.arange(x0, x1, dtype=torch.float32).view(1, -1)
        disc = ((xx - float(cx)) ** 2 + (yy - float(cy)) ** 2) <= r * r  # r * r: inf, never OverflowError
        disc[cy - y0, cx - x0] = True
        rgb[0, :, y0:y1, x0:x1][:, disc] = torch.tensor(colour, dtype=torch.float32).view(3, 1)
        mask[0, 0, y0:y1, x0:x1][disc] = 1.0
    return rgb, mask


# ----------------------------------------------------------------------------------------------
# Region fill: hints spread over line-enclosed regions
# ----------------------------------------------------------------------------------------------


def label_regions(sketch: np.ndarray, line_level: float = LINE_LEVEL) -> np.ndarray:
    """Label the 4-connected regions of non-line pixels of one sketch.

    Args:
        sketch: (H, W) lightness in [0, 1].
        line_level: Pixels darker than this are lines (label 0).

    Returns:
        (H, W) int32 labels, 0 on lines, 1..K for regions.
    """
    from skimage.measure import label  # local: skimage import is slow and only needed here

    return label(sketch >= line_level, connectivity=1).astype(np.int32)


def within_distance(points: np.ndarray, radius: float) -> np.ndarray:
    """The pixels at Euclidean distance at most ``radius`` from a True pixel of ``points``.

    The same set as ``scipy.ndimage.distance_transform_edt(~points) <= radius`` (when ``points``
    has a True pixel; with none, the empty set), computed as the number of True pixels within a
    disc of that radius: a convolution of the indicator with the disc, by FFT in float32. The
    counts are integers and the FFT's rounding error is far below the 0.5 the count is compared
    with (about 2e-4 on a 1024 x 1024 page; tests/test_conditioning.py checks against scipy),
    so the set is exact. At 1024 x 1024 this takes a fifth of the distance transform's time.

    Args:
        points: (H, W) bool.
        radius: Distance in pixels, >= 0.

    Returns:
        (H, W) bool.
    """
    r = int(math.floor(radius))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    # The comparison scipy's result is compared with: the square root of the integer squared distance.
    disc = torch.from_numpy((np.sqrt((xx * xx + yy * yy).astype(np.float64)) <= radius).astype(np.float32))
    h, w = points.shape
    size = (h + 2 * r, w + 2 * r)  # room for the disc on every side: no wrap-around
    x = torch.from_numpy(points.astype(np.float32))
    counts = torch.fft.irfft2(torch.fft.rfft2(x, s=size) * torch.fft.rfft2(disc, s=size), s=size)
    return (counts[r : r + h, r : r + w] > 0.5).numpy()


#: :func:`nearest_feature` uses bands from this many pixels (about 724 x 724); below, handing the
#: bands to threads costs about what they save.
NEAREST_BAND_PIXELS = 1 << 19


def nearest_feature(
    background: np.ndarray, threads: int = 1, *, reach: int = 32, care: np.ndarray | None = None
) -> np.ndarray:
    """Per pixel, the row and column of the nearest False pixel of ``background``.

    scipy's exact Euclidean feature transform (``distance_transform_edt(background,
    return_indices=True)``), on ``threads`` threads: the rows are cut into bands, and each band is
    transformed with ``reach`` more rows on either side. A pixel whose nearest False pixel lies
    within ``reach`` has it inside its band's rows, so it gets the whole grid's answer (ties
    included: tests/test_conditioning.py compares the two on random and lattice grids, where ties
    abound). Each band checks that every pixel of ``care`` found its answer within ``reach``; if
    one did not, the whole grid is transformed at once. scipy releases the GIL in the transform, so
    the bands share the cores. Grids under :data:`NEAREST_BAND_PIXELS` are transformed whole.

    Args:
        background: (H, W) bool with at least one False pixel.
        threads: Threads (bands) to use; 1 transforms the whole grid on the calling thread.
        reach: Rows each band sees beyond its own, on either side.
        care: (H, W) bool, the pixels whose answer matters (None: all). Pixels outside it get a
            False pixel that need not be the nearest.

    Returns:
        (2, H, W) int32 (as scipy gives it): rows, then columns.
    """
    from scipy import ndimage

    def whole() -> np.ndarray:
        return ndimage.distance_transform_edt(background, return_distances=False, return_indices=True)

    h, w = background.shape
    bands = min(threads, h // max(64, 2 * reach)) if h * w >= NEAREST_BAND_PIXELS else 1
    if bands <= 1:
        return whole()
    edges = np.linspace(0, h, bands + 1).round().astype(int)
    out = np.empty((2, h, w), dtype=np.int32)
    columns = np.arange(w)

    def band(i: int) -> bool:
        top, bottom = int(edges[i]), int(edges[i + 1])
        lo, hi = max(0, top - reach), min(h, bottom + reach)
        part = background[lo:hi]
        if part.all():
            return False
        found = ndimage.distance_transform_edt(part, return_distances=False, return_indices=True)
        rows, cols = found[0, top - lo : bottom - lo], found[1, top - lo : bottom - lo]
        dy = rows - np.arange(top - lo, bottom - lo)[:, None]
        dx = cols - columns
        far = dy * dy + dx * dx > reach * reach
        if care is not None:
            far &= care[top:bottom]
        if far.any():
            return False
        out[0, top:bottom] = rows + lo
        out[1, top:bottom] = cols
        return True

    if all(parallel_map(band, range(bands), threads)):
        return out
    return whole()


def label_closed_regions(
    sketch: np.ndarray, gap: float, line_level: float = LINE_LEVEL, threads: int = 1
) -> np.ndarray:
    """Label line-enclosed regions, closing gaps in the outlines up to about ``2 * gap`` pixels.

    Lines are thickened by ``gap`` pixels (a Euclidean distance threshold) before labelling, then
    the pixels the thickening took are given back to their nearest region, so regions keep their
    full extent up to the original lines (the "close gaps" option of paint-bucket tools).

    Args:
        sketch: (H, W) lightness in [0, 1].
        gap: Thickening radius in pixels (below 1: plain labelling).
        line_level: Pixels darker than this are lines.
        threads: Threads for finding the nearest regions (:func:`nearest_feature`); the labels
            are the same for every value.

    Returns:
        (H, W) int32 labels, 0 on line pixels, 1..K for regions.
    """
    lines = sketch < line_level
    if gap < 1:
        return label_regions(sketch, line_level)
    thick = within_distance(lines, gap)
    labels = label_regions(np.where(thick, 0.0, 1.0))
    if labels.max() == 0:
        return label_regions(sketch, line_level)
    # A pixel the thickening took is within ``gap`` of a line, and its region is most often just
    # beyond: a reach of a few gaps finds nearly all of them within their band.
    nearest = nearest_feature(labels == 0, threads, reach=int(math.ceil(4 * gap)) + 2, care=~lines)
    labels = labels[nearest[0], nearest[1]]
    labels[lines] = 0
    return labels.astype(np.int32)


def background_labels(labels: np.ndarray, fraction: float = BACKGROUND_FRACTION) -> np.ndarray:
    """Which labels of a labelling are background: touching the border, larger than ``fraction``.

    Args:
        labels: (H, W) int labels (0 = lines).
        fraction: Area threshold as a fraction of the image (:data:`BACKGROUND_FRACTION`).

    Returns:
        (K,) bool, indexed by label; label 0 (lines) is never background.
    """
    k = int(labels.max()) + 1
    area = np.bincount(labels.ravel(), minlength=k)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    out = np.zeros(k, dtype=bool)
    out[border] = area[border] > fraction * labels.size
    out[0] = False
    return out


def hinted_region_mask(sketch: torch.Tensor, hint_mask: torch.Tensor, gap: float = 2.0) -> torch.Tensor:
    """Where the hints apply: the line-enclosed regions holding hints, the page's background left out.

    Used to keep classifier-free guidance on the hints where the hints are (so white paper stays
    paper under guidance). Regions are found with outline gaps closed (``gap`` pixels per 128 px of
    the long side, see :func:`label_closed_regions`); a hinted region that is the background
    (:func:`background_labels`) is left out, while the hinted pixels themselves always count.

    Args:
        sketch: (N, 1, H, W) lightness in [0, 1].
        hint_mask: (N, 1, H, W) in {0, 1}.
        gap: Gap closing radius per 128 px.

    Returns:
        (N, 1, H, W) float mask in {0, 1}.
    """
    out = hint_mask.detach().float().cpu().clone()
    radius = gap * max(sketch.shape[-2:]) / 128.0
    for i in range(sketch.shape[0]):
        m = out[i, 0].numpy() > 0
        if not m.any():
            continue
        labels = label_closed_regions(sketch[i, 0].detach().float().cpu().numpy(), radius)
        hinted = np.zeros(int(labels.max()) + 1, dtype=bool)
        hinted[np.unique(labels[m])] = True
        hinted &= ~background_labels(labels)
        hinted[0] = False
        out[i, 0] = torch.from_numpy((hinted[labels] | m).astype(np.float32))
    return out.to(hint_mask.device)


def region_fill(
    sketch: torch.Tensor,
    hint_lab: torch.Tensor,
    hint_mask: torch.Tensor,
    line_level: float = LINE_LEVEL,
    *,
    gap: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Give each line-enclosed region the mean LAB of the hints inside it (a classical flat fill).

    Args:
        sketch: (N, 1, H, W) lightness in [0, 1].
        hint_lab: (N, 3, H, W) LAB, 0 where unhinted.
        hint_mask: (N, 1, H, W) in {0, 1}.
        line_level: Line threshold on lightness (see :func:`label_regions`).
        gap: Close outline gaps up to about twice this many pixels first
            (:func:`label_closed_regions`).

    Returns:
        ``fill_lab`` (N, 3, H, W), 0 outside filled regions, and ``fill_mask`` (N, 1, H, W), 1 in
        regions holding at least one hint (line pixels are never filled).
    """
    n, _, h, w = sketch.shape
    fill_lab = torch.zeros_like(hint_lab)
    fill_mask = torch.zeros_like(hint_mask)
    sk = sketch.detach().float().cpu().numpy()
    lab = hint_lab.detach().float().cpu().numpy()
    msk = hint_mask.detach().float().cpu().numpy()
    for i in range(n):
        if not msk[i, 0].any():
            continue  # no hints: nothing to fill (and no labelling to pay for)
        labels = label_closed_regions(sk[i, 0], gap, line_level)
        k = int(labels.max()) + 1
        flat = labels.ravel()
        m = msk[i, 0].ravel()
        count = np.bincount(flat, weights=m, minlength=k)
        count[0] = 0.0  # lines are never filled
        has = count > 0
        out = np.zeros((3, h * w), dtype=np.float32)
        for c in range(3):
            total = np.bincount(flat, weights=lab[i, c].ravel() * m, minlength=k)
            mean = np.where(has, total / np.maximum(count, 1e-12), 0.0)
            out[c] = mean[flat]
        fill_lab[i] = torch.from_numpy(out.reshape(3, h, w)).to(fill_lab)
        fill_mask[i, 0] = torch.from_numpy(has[flat].reshape(h, w).astype(np.float32)).to(fill_mask)
    return fill_lab, fill_mask


def normalize_sketch(sketch: torch.Tensor) -> torch.Tensor:
    """Stretch a sketch's lightness so its paper is white (1) and its darkest lines black (0).

    Light-grey or pencil lines and tinted or scanned paper then look like the inked line art the
    model and the region logic expect (:data:`LINE_LEVEL`). Per image: the paper level is the 75th
    percentile of the lightness, the ink level the 0.5th percentile, both taken on a regular
    subsample of at most about 256 x 256 pixels, so the cost is small at any size. An image whose
    paper and ink differ by less than 0.15 (blank or almost uniform) is returned as is.

    Args:
        sketch: (N, 1, H, W) lightness in [0, 1].

    Returns:
        (N, 1, H, W) in [0, 1].
    """
    out = []
    step = sample_step(sketch.shape[-2:])
    for x in sketch:
        levels = normalization_levels(x[..., ::step, ::step])
        out.append(x if levels is None else stretch_levels(x, levels))
    return torch.stack(out)


def sample_step(size: Sequence[int]) -> int:
    """Stride of the regular subsample (at most about 256 x 256) :func:`normalize_sketch` reads."""
    return max(1, max(size) // 256)


def normalization_levels(sample: torch.Tensor) -> tuple[float, float] | None:
    """The (ink, paper) levels :func:`normalize_sketch` stretches to (0, 1), from its subsample.

    ``sample`` holds the lightness values of the subsample (any shape). None: paper and ink differ
    by less than 0.15 (a blank or almost uniform picture, left as is).
    """
    ink, paper = (float(v) for v in torch.quantile(sample.reshape(-1).float(), torch.tensor([0.005, 0.75])))
    return None if paper - ink < 0.15 else (ink, paper)


#: A sketch more than this share of whose pixels are line-dark after normalisation is warned about
#: (light lines on dark paper, or a photo given as line art).
DARK_SKETCH_FRACTION = 0.7


def sketch_problem(sketch_l: torch.Tensor, sketch_small: torch.Tensor) -> str | None:
    """What makes a (normalised) line-art sketch unusable, in words, or None when it looks right.

    Args:
        sketch_l: (1, 1, H, W) full-size lightness in [0, 1] (no line pixel at all: blank).
        sketch_small: (1, 1, h, w) the working-size lightness (the share of dark pixels).

    Returns:
        "has no lines ...": no pixel darker than :data:`LINE_LEVEL` (a blank or almost uniform
        page); "is mostly dark ...": more than :data:`DARK_SKETCH_FRACTION` of it is; else None.
    """
    if float(sketch_l.amin()) >= LINE_LEVEL:
        return "has no lines (a blank page?): the colours are the model's guess, with nothing to follow"
    dark = float((sketch_small < LINE_LEVEL).float().mean())
    if dark > DARK_SKETCH_FRACTION:
        return (
            f"is mostly dark ({dark:.0%} of it): line art is expected as dark lines on light paper "
            "(invert it if its lines are light)"
        )
    return None


def stretch_levels(x: torch.Tensor, levels: tuple[float, float]) -> torch.Tensor:
    """Lightness ``x`` with the ``levels`` (ink, paper) stretched to (0, 1), clamped.

    Elementwise, so applying it to a lookup table and then looking up gives the same values as
    applying it to the looked-up picture.
    """
    ink, paper = levels
    return ((x - ink) / (paper - ink)).clamp(0.0, 1.0)


def make_conditioning(
    sketch: torch.Tensor,
    hint_rgb: torch.Tensor | None,
    hint_mask: torch.Tensor | None,
    config: ConditioningConfig,
) -> Conditioning:
    """Build the :class:`Conditioning` of a batch from a sketch and (optional) sRGB hints.

    Args:
        sketch: (N, 1, H, W) lightness in [0, 1].
        hint_rgb: (N, 3, H, W) hint colours in [0, 1], or None for no hints.
        hint_mask: (N, 1, H, W) in {0, 1}, or None.
        config: The model's conditioning layout (adds the region fill when it asks for one).
    """
    n, _, h, w = sketch.shape
    if hint_rgb is None or hint_mask is None:
        hint_lab = sketch.new_zeros(n, 3, h, w)
        hint_mask = sketch.new_zeros(n, 1, h, w)
    else:
        if tuple(hint_mask.shape[-2:]) != (h, w):
            raise HintError(
                f"hints are {hint_mask.shape[-1]}x{hint_mask.shape[-2]} but the sketch is {w}x{h}"
            )
        hint_lab = hints_to_lab(hint_rgb, hint_mask)
    cond = Conditioning(sketch, hint_lab, hint_mask)
    return cond.with_region_fill(config.region_gap) if config.region_fill else cond


# ----------------------------------------------------------------------------------------------
# Synthetic hints for training and evaluation
# ----------------------------------------------------------------------------------------------


def sample_training_hints(
    rgb: torch.Tensor,
    sketch: torch.Tensor,
    config: HintConfig,
    generator: torch.Generator,
    *,
    num_strokes: int | None = None,
    first_starts: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw synthetic colour hints for one picture from its ground truth.

    The distribution is :class:`~sketchcolor.config.HintConfig`'s (documented there): a number of
    strokes (zero with probability ``p_none``), each a dot or a random walk of random length and
    width, coloured with the ground truth under it and never on line pixels. Hint dropout is
    separate (:func:`drop_hints`). Every draw comes from ``generator`` in a fixed order, so a seed
    gives the same hints everywhere (training and ``eval`` share this).

    Args:
        rgb: (3, H, W) ground-truth colours in [0, 1].
        sketch: (1, H, W) lightness in [0, 1]; pixels below :data:`LINE_LEVEL` are lines.
        config: The stroke distribution.
        generator: CPU generator.
        num_strokes: Draw exactly this many strokes instead of the random count (hint sweeps).
        first_starts: Optional flat pixel indices (y * W + x) the first stroke starts from (one
            drawn at random), e.g. pixels next to a gap in an outline; ignored when none of them
            is off the lines.

    Returns:
        ``hint_rgb`` (3, H, W), 0 where unhinted, and ``hint_mask`` (1, H, W) in {0, 1}.
    """
    _, h, w = rgb.shape
    mask = torch.zeros(1, 1, h, w)
    allowed = sketch[0] >= LINE_LEVEL
    free = allowed.flatten().nonzero().flatten()

    def uniform() -> float:
        return float(torch.rand((), generator=generator))

    def randint(lo: int, hi: int) -> int:  # inclusive bounds
        return int(torch.randint(lo, hi + 1, (), generator=generator))

    if num_strokes is not None:
        n_strokes = num_strokes
    elif uniform() < config.p_none or config.max_strokes == 0:
        n_strokes = 0
    else:
        n_strokes = randint(1, config.max_strokes)
    if len(free) == 0:
        n_strokes = 0
    preferred = None
    if first_starts is not None and len(first_starts):
        preferred = first_starts[allowed.flatten()[first_starts]]
    for k in range(n_strokes):
        if k == 0 and preferred is not None and len(preferred):
            start = int(preferred[randint(0, len(preferred) - 1)])
        else:
            start = int(free[randint(0, len(free) - 1)])
        y0, x0 = divmod(start, w)
        is_dot = uniform() < config.p_dot
        width = randint(config.min_width, config.max_width)
        if is_dot:
            ys, xs = torch.tensor([float(y0)]), torch.tensor([float(x0)])
        else:
            length = randint(config.min_length, config.max_length)
            heading = uniform() * 2 * math.pi
            turns = (torch.rand(length, generator=generator) * 2 - 1) * config.max_turn
            angles = heading + torch.cumsum(turns, 0)
            # Half-pixel steps so the walk has no gaps when rounded to pixels.
            ys = y0 + torch.cumsum(0.5 * torch.sin(angles).repeat_interleave(2), 0)
            xs = x0 + torch.cumsum(0.5 * torch.cos(angles).repeat_interleave(2), 0)
            ys = torch.cat([torch.tensor([float(y0)]), ys])
            xs = torch.cat([torch.tensor([float(x0)]), xs])
        stroke = torch.zeros(1, 1, h, w)
        yi = ys.round().long().clamp(0, h - 1)
        xi = xs.round().long().clamp(0, w - 1)
        stroke[0, 0, yi, xi] = 1.0
        if width > 1:
            stroke = F.max_pool2d(stroke, kernel_size=width, stride=1, padding=width // 2)[..., :h, :w]
        mask = torch.maximum(mask, stroke)
    mask = mask[0] * allowed.to(mask.dtype)
    return rgb * mask, mask


def drop_hints(p: float, generator: torch.Generator) -> bool:
    """Whether to keep a sample's hints under hint dropout with probability ``p`` (one draw)."""
    return bool(torch.rand((), generator=generator) >= p)


# ----------------------------------------------------------------------------------------------
# Reference pictures
# ----------------------------------------------------------------------------------------------


def letterbox(rgb: torch.Tensor, size: int) -> torch.Tensor:
    """Fit a picture onto a white ``size`` x ``size`` square, aspect kept, centred.

    The long side becomes ``size`` (area filter when shrinking, bilinear when enlarging).

    Args:
        rgb: (N, 3, H, W) sRGB in [0, 1].
        size: Side of the square.

    Returns:
        (N, 3, size, size) sRGB in [0, 1], white around the picture.
    """
    h, w = rgb.shape[-2:]
    scale = size / max(h, w)
    nh, nw = max(1, min(size, round(h * scale))), max(1, min(size, round(w * scale)))
    if (nh, nw) != (h, w):
        mode = "area" if scale < 1 else "bilinear"
        kwargs = {} if mode == "area" else {"align_corners": False}
        rgb = F.interpolate(rgb, size=(nh, nw), mode=mode, **kwargs).clamp(0.0, 1.0)
    out = rgb.new_ones(rgb.shape[0], 3, size, size)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[:, :, top : top + nh, left : left + nw] = rgb
    return out


def reference_lab_from_rgb(rgb: torch.Tensor, size: int) -> torch.Tensor:
    """A reference picture as the model takes it: (1, 3, H, W) sRGB -> (1, 3, size, size) LAB.

    The picture is letterboxed onto white paper (:func:`letterbox`); any size or aspect works.
    """
    return rgb_to_lab(letterbox(rgb.float(), size))


def _tps_grid(src: torch.Tensor, dst: torch.Tensor, size: int) -> torch.Tensor:
    """Sampling grid of the thin-plate spline mapping output points ``dst`` to input ``src``.

    Both are (K, 2) in [-1, 1] (x, y). Returns (1, size, size, 2) for ``F.grid_sample``
    (Bookstein 1989: radial basis U(r) = r^2 log r^2 plus an affine part).
    """

    def basis(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return d2 * torch.log(d2.clamp(min=1e-12))

    k = dst.shape[0]
    ones = torch.ones(k, 1, dtype=torch.float64)
    p = torch.cat([ones, dst.double()], dim=1)  # (K, 3)
    system = torch.zeros(k + 3, k + 3, dtype=torch.float64)
    system[:k, :k] = basis(dst.double(), dst.double())
    system[:k, k:] = p
    system[k:, :k] = p.T
    rhs = torch.zeros(k + 3, 2, dtype=torch.float64)
    rhs[:k] = src.double()
    coef = torch.linalg.solve(system, rhs)  # (K + 3, 2)
    lin = torch.linspace(-1, 1, size, dtype=torch.float64)
    yy, xx = torch.meshgrid(lin, lin, indexing="ij")
    pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)
    full = torch.cat([basis(pts, dst.double()), torch.ones(len(pts), 1, dtype=torch.float64), pts], dim=1)
    return (full @ coef).float().view(1, size, size, 2)


def warp_reference(
    rgb: torch.Tensor, config: ReferenceConfig, size: int, generator: torch.Generator
) -> torch.Tensor:
    """A deformed, colour-jittered copy of a picture, to serve as its own reference.

    The picture is letterboxed to ``size``, warped (``config.warp``: a random affine map with a
    smooth displacement field, or a thin-plate spline; white paper fills what comes in from
    outside), and its lightness contrast and saturation are changed by up to ``config.jitter``.
    Every draw comes from ``generator`` in a fixed order.

    Args:
        rgb: (3, H, W) sRGB in [0, 1].
        config: Warp and jitter ranges.
        size: Side of the (square) reference.
        generator: CPU generator.

    Returns:
        (3, size, size) LAB.
    """

    def uniform(lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=generator))

    square = letterbox(rgb[None].float(), size)
    angle = math.radians(uniform(-config.rotate, config.rotate))
    scale = uniform(config.scale_min, config.scale_max)
    tx, ty = uniform(-config.shift, config.shift) * 2, uniform(-config.shift, config.shift) * 2
    flip = -1.0 if uniform(0.0, 1.0) < config.flip else 1.0
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    # Output -> input coordinates (grid_sample's convention), in [-1, 1].
    theta = torch.tensor([[cos * flip, -sin, tx], [sin * flip, cos, ty]], dtype=torch.float32)
    grid = F.affine_grid(theta[None], [1, 3, size, size], align_corners=False)
    if config.warp == "tps":
        lin = torch.linspace(-1, 1, 3)
        yy, xx = torch.meshgrid(lin, lin, indexing="ij")
        dst = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)
        src = dst + torch.randn(dst.shape, generator=generator) * config.elastic * 2
        tps = _tps_grid(src, dst, size)  # smooth deformation of the identity
        grid = F.grid_sample(
            grid.permute(0, 3, 1, 2), tps, mode="bilinear", padding_mode="border", align_corners=True
        ).permute(0, 2, 3, 1)
    elif config.elastic > 0:
        field = torch.randn((1, 2, 4, 4), generator=generator) * config.elastic * 2
        field = F.interpolate(field, size=(size, size), mode="bicubic", align_corners=True)
        grid = grid + field.permute(0, 2, 3, 1)
    # Sample (picture - 1) with zero padding so whatever comes from outside is white paper.
    warped = (
        F.grid_sample(square - 1.0, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 1.0
    )
    lab = rgb_to_lab(warped.clamp(0.0, 1.0))[0]
    contrast = uniform(1 - config.jitter, 1 + config.jitter)
    saturation = uniform(1 - config.jitter, 1 + config.jitter)
    lab = torch.stack([(lab[0] - 50.0) * contrast + 50.0, lab[1] * saturation, lab[2] * saturation])
    return torch.stack([lab[0].clamp(0.0, 100.0), lab[1].clamp(-128, 127), lab[2].clamp(-128, 127)])


# ----------------------------------------------------------------------------------------------
# Hint layers from every source users give
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SparseHints:
    """User hints as their hinted pixels only (hints are sparse; full-size passes are costly).

    Attributes:
        size: (H, W) of the picture the hints belong to.
        ys, xs: (n,) int64 row and column of each hinted pixel, in row-major order.
        rgb: (3, n) float32 sRGB colour of each, in [0, 1].
    """

    size: tuple[int, int]
    ys: torch.Tensor
    xs: torch.Tensor
    rgb: torch.Tensor

    @staticmethod
    def from_layer(rgb: torch.Tensor, mask: torch.Tensor) -> SparseHints:
        """From a dense layer: ``rgb`` (1, 3, H, W) in [0, 1] and ``mask`` (1, 1, H, W) in {0, 1}."""
        ys, xs = mask[0, 0].nonzero(as_tuple=True)
        return SparseHints((int(mask.shape[-2]), int(mask.shape[-1])), ys, xs, rgb[0][:, ys, xs])

    @staticmethod
    def none(size: tuple[int, int]) -> SparseHints:
        """No hints on a picture of ``size``."""
        empty = torch.zeros(0, dtype=torch.int64)
        return SparseHints(size, empty, empty, torch.zeros(3, 0))

    @property
    def is_empty(self) -> bool:
        return self.ys.numel() == 0

    def on_grid(self, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The hints on a grid of ``size`` (h, w) no larger than theirs, as ``resize_hints`` does.

        Returns:
            ``rgb`` (3, h, w) and ``mask`` (h, w) bool. Each grid cell takes the mean colour of
            the hinted pixels mapped into it (clamped to [0, 1]); at equal size, the pixels' own.
        """
        h, w = size
        full_h, full_w = self.size
        rgb = torch.zeros(3, h * w, dtype=self.rgb.dtype)
        if (h, w) == (full_h, full_w):
            cell = self.ys * w + self.xs
            rgb[:, cell] = self.rgb
            mask = torch.zeros(h * w, dtype=torch.bool)
            mask[cell] = True
            return rgb.view(3, h, w), mask.view(h, w)
        # The same arithmetic as conditioning.resize_hints, so both give identical colours.
        cell = (self.ys * h // full_h) * w + (self.xs * w // full_w)
        count = torch.bincount(cell, minlength=h * w).to(self.rgb.dtype)
        rgb.index_add_(1, cell, self.rgb)
        rgb = (rgb / count.clamp(min=1)).clamp(0.0, 1.0)
        return rgb.view(3, h, w), (count > 0).view(h, w)


@dataclasses.dataclass(frozen=True)
class HintLayer:
    """User hints at the sketch's size, whatever their source.

    Attributes:
        rgb: (1, 3, H, W) hint colours in [0, 1], 0 where unhinted.
        mask: (1, 1, H, W) in {0, 1}.
    """

    rgb: torch.Tensor
    mask: torch.Tensor
    #: The layer's hinted pixels, when whoever made it found them anyway (as the reader of a hints
    #: picture does); :meth:`hinted` then costs nothing. Not compared, not shown.
    known_hints: SparseHints | None = dataclasses.field(default=None, compare=False, repr=False)

    @staticmethod
    def empty(size: tuple[int, int]) -> HintLayer:
        return HintLayer(torch.zeros(1, 3, *size), torch.zeros(1, 1, *size), SparseHints.none(size))

    def hinted(self) -> SparseHints:
        """The hinted pixels (one pass over the layer unless they are already known)."""
        if self.known_hints is not None:
            return self.known_hints
        return SparseHints.from_layer(self.rgb, self.mask)

    @property
    def size(self) -> tuple[int, int]:
        return int(self.mask.shape[-2]), int(self.mask.shape[-1])

    @property
    def is_empty(self) -> bool:
        if self.known_hints is not None:
            return self.known_hints.is_empty
        return not bool(self.mask.any())

    def over(self, below: HintLayer) -> HintLayer:
        """This layer painted over ``below`` (where both hint a pixel, this one wins)."""
        m = self.mask
        return HintLayer(self.rgb * m + below.rgb * (1 - m), torch.maximum(m, below.mask))

    def to_rgba(self) -> torch.Tensor:
        """(1, 4, H, W) RGBA layer: the hint colours, transparent where there is no hint."""
        return torch.cat([self.rgb * self.mask, self.mask], dim=1)


def resolve_coordinate(value: float, extent: int, text: str) -> float:
    """A coordinate given as pixels (integers or values above 1) or a fraction in [0, 1].

    A value written with a decimal point and within [0, 1] (``"0.5"``) is a fraction of the
    image's width or height; anything else is a pixel position. Fractions map to pixel centres, so
    ``1.0`` is the last pixel.
    """
    if "." in text and 0.0 <= value <= 1.0:
        return min(value * extent, extent - 1)
    return value


def from_strokes(
    strokes: Sequence[tuple[Sequence[tuple[float, float]], tuple[float, float, float], float]],
    size: tuple[int, int],
) -> HintLayer:
    """Paint polyline strokes: each ``(points in pixels, (r, g, b) in [0, 1], width in pixels)``.

    Raises:
        HintError: A point lies outside the image.
    """
    h, w = size
    layer = HintLayer.empty(size)
    for points, colour, width in strokes:
        dots: list[tuple[float, float, tuple[float, float, float]]] = []
        pts = list(points)
        for x, y in pts:
            if not (0 <= x < w and 0 <= y < h):
                raise HintError(f"hint stroke point ({x:g}, {y:g}) is outside the {w}x{h} image")
        for (xa, ya), (xb, yb) in zip(pts, pts[1:] or pts, strict=False):
            n = max(1, int(math.ceil(max(abs(xb - xa), abs(yb - ya)) * 2)))
            for i in range(n + 1):
                dots.append((xa + (xb - xa) * i / n, ya + (yb - ya) * i / n, colour))
        rgb, mask = from_points(dots, size, radius=max(0.0, width / 2.0))
        layer = HintLayer(rgb, mask).over(layer)
    return layer


def split_hints_from_sketch(
    sketch_rgb: torch.Tensor, *, chroma_level: float = 20.0
) -> tuple[torch.Tensor, HintLayer]:
    """Split colour scribbles drawn onto a sketch (the Diffusart data layout) from its lines.

    Pixels whose LAB chroma exceeds ``chroma_level`` are hints of their colour; in the returned
    sketch they become white paper, leaving only the (grey or black) lines.

    Args:
        sketch_rgb: (1, 3, H, W) sketch with scribbles, in [0, 1].

    Returns:
        The clean sketch (1, 3, H, W) and the hints.
    """
    lab = rgb_to_lab(sketch_rgb)
    chroma = torch.sqrt(lab[:, 1:2] ** 2 + lab[:, 2:3] ** 2)
    mask = (chroma > chroma_level).to(sketch_rgb.dtype)
    clean = sketch_rgb * (1 - mask) + mask
    return clean, HintLayer(sketch_rgb * mask, mask)
