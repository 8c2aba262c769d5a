"""Carry the model's colours from its working resolution to the sketch's full size.

Owns: the line-art-aware upscaling of the colour layer and the final composition with the
artist's own lines. Line art tells where colour may change: at its lines, which separate regions
that are all white in the sketch. A generic edge-aware filter guided by the sketch's intensity
(bilateral, guided filter) cannot see such a boundary, because both sides of a line are equally
white; so this module works with the line-enclosed regions themselves:

1. :func:`remove_lines` — at the working size, replace the colour under line pixels by the colour of
   the nearby paper (normalised convolution), so the colour layer carries no blurred lines.
2. :func:`upsample` — bilinear upscaling of that colour layer to full size.
3. :func:`snap_to_regions` — label the regions enclosed by the full-resolution lines and give each
   region one colour: the mean of the upscaled colour over its interior (pixels far from lines,
   where no colour bleeds across a line). A region whose colour varies a lot (an open outline that
   merges areas, or real shading) keeps the smooth colour unless flats are asked for.
4. :func:`multiply_lines` — lay the original sketch over the colour (multiply), so every line pixel
   is at least as dark as in the input, at any output size.

Large images are processed in horizontal bands where that bounds memory. Imports ``color`` and
``conditioning`` only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .color import lab_to_rgb, rgb_to_lab, srgb_to_linear
from .conditioning import LINE_LEVEL, label_regions

#: Regions whose interior colour has a standard deviation above this (CIE LAB units, summed over
#: channels) are treated as shaded or leaking and keep their smooth colour (unless ``flat``).
SNAP_MAX_STD = 12.0
#: Rows per band when converting full-resolution images, bounding peak memory.
BAND_ROWS = 512


def sketch_lightness(rgb: torch.Tensor) -> torch.Tensor:
    """CIE L/100 of sRGB (N, 3, H, W) -> (N, 1, H, W), computed from luminance only (fast path).

    Equal to :func:`sketchcolor.color.lightness` but without the a/b channels, which matters at
    4096 x 4096 pixels.
    """
    lin = srgb_to_linear(rgb)
    y = 0.212671 * lin[:, 0:1] + 0.715160 * lin[:, 1:2] + 0.072169 * lin[:, 2:3]
    f = torch.where(y > 0.008856, y.clamp(min=0.008856) ** (1.0 / 3.0), 7.787 * y + 16.0 / 116.0)
    return ((116.0 * f - 16.0) / 100.0).clamp(0.0, 1.0)


def interior_weight(sketch_l: torch.Tensor) -> torch.Tensor:
    """0 on line pixels, rising to 1 on clean paper: ((L - LINE_LEVEL) / (1 - LINE_LEVEL))^2."""
    return ((sketch_l - LINE_LEVEL) / (1.0 - LINE_LEVEL)).clamp(0.0, 1.0) ** 2


def _gaussian(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(round(3 * sigma)))
    k = torch.exp(-(torch.arange(-radius, radius + 1, dtype=x.dtype) ** 2) / (2 * sigma**2))
    k = (k / k.sum()).to(x.device)
    c = x.shape[1]
    x = F.conv2d(
        F.pad(x, (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c
    )
    return F.conv2d(
        F.pad(x, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c
    )


def remove_lines(lab: torch.Tensor, sketch_l: torch.Tensor, sigma: float = 1.5) -> torch.Tensor:
    """Replace colours under lines by the colour of the surrounding paper.

    Args:
        lab: (N, 3, h, w) LAB colours at the working size.
        sketch_l: (N, 1, h, w) sketch lightness at the same size.
        sigma: Gaussian radius (pixels) of the normalised convolution.

    Returns:
        (N, 3, h, w) LAB where line pixels take a weighted mean of nearby paper pixels' colours.
    """
    w = interior_weight(sketch_l)
    num = _gaussian(lab * w, sigma)
    den = _gaussian(w, sigma)
    spread = num / den.clamp(min=1e-6)
    # Where there is no paper nearby (large ink areas), keep the model's own colour.
    trust = (den / 0.05).clamp(max=1.0)
    filled = trust * spread + (1 - trust) * lab
    return w * lab + (1 - w) * filled


def upsample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upscaling (N, C, h, w) -> (N, C, H, W); identity when the size already matches."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def snap_to_regions(
    lab_full: torch.Tensor,
    sketch_l_full: torch.Tensor,
    interior_small: torch.Tensor,
    *,
    flat: bool = False,
    max_std: float = SNAP_MAX_STD,
    hints: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Give each line-enclosed region of the full-size sketch one colour.

    A region holding user hints takes the mean colour of its hints (the classical flat fill),
    unless it touches the image border: an outline with a gap merges the background with the
    shape, and there the model's colours are kept.

    Args:
        lab_full: (1, 3, H, W) upscaled LAB colours (modified in place and returned).
        sketch_l_full: (1, 1, H, W) full-size sketch lightness.
        interior_small: (1, 1, h, w) weights at the working size that are 0 within one working
            pixel of a line: the region statistics use only pixels no colour can bleed into.
        flat: Snap every region (clean flats) instead of only the uniform ones.
        max_std: Uniformity threshold (see :data:`SNAP_MAX_STD`).
        hints: Optional full-size hints (``rgb`` (1, 3, H, W) in [0, 1], ``mask`` (1, 1, H, W)).

    Returns:
        ``lab_full`` with snapped regions; line pixels keep their smooth colour.
    """
    h, w = lab_full.shape[-2:]
    labels = torch.from_numpy(label_regions(sketch_l_full[0, 0].numpy())).view(-1).long()
    k = int(labels.max()) + 1
    if k <= 1:
        return lab_full
    weight = upsample(interior_small, (h, w)).view(-1)
    weight = weight * (labels > 0)
    flat_lab = lab_full.view(3, -1)
    w_sum = torch.bincount(labels, weights=weight, minlength=k)
    n_sum = torch.bincount(labels, minlength=k).to(lab_full.dtype)
    means = torch.zeros(3, k, dtype=lab_full.dtype)
    var = torch.zeros(k, dtype=lab_full.dtype)
    for c in range(3):
        wm = torch.bincount(labels, weights=weight * flat_lab[c], minlength=k)
        um = torch.bincount(labels, weights=flat_lab[c], minlength=k)
        # Regions too small to hold an interior pixel fall back to their plain mean.
        mean = torch.where(w_sum > 1e-6, wm / w_sum.clamp(min=1e-6), um / n_sum.clamp(min=1))
        means[c] = mean
        sq = torch.bincount(labels, weights=weight * flat_lab[c] ** 2, minlength=k)
        var += torch.where(w_sum > 1e-6, sq / w_sum.clamp(min=1e-6) - mean**2, torch.zeros_like(mean))
    snap = torch.ones(k, dtype=torch.bool) if flat else var.clamp(min=0).sqrt() <= max_std
    if hints is not None:
        trusted, hint_means = _hinted_regions(labels, hints, (h, w), k)
        for c in range(3):
            means[c] = torch.where(trusted, hint_means[c], means[c])
        snap |= trusted
    snap[0] = False  # line pixels
    chosen = snap[labels]
    for c in range(3):
        flat_lab[c] = torch.where(chosen, means[c][labels], flat_lab[c])
    return lab_full


def _hinted_regions(
    labels: torch.Tensor, hints: tuple[torch.Tensor, torch.Tensor], size: tuple[int, int], k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Regions (not touching the border) that hold hints, and their mean hint LAB (3, k)."""
    rgb, mask = hints
    idx = mask.reshape(-1).nonzero().squeeze(1)
    trusted = torch.zeros(k, dtype=torch.bool)
    means = torch.zeros(3, k, dtype=torch.float32)
    if idx.numel() == 0:
        return trusted, means
    lab = rgb_to_lab(rgb.reshape(3, -1)[:, idx].reshape(1, 3, 1, -1)).reshape(3, -1)
    lbl = labels[idx]
    count = torch.bincount(lbl, minlength=k).float()
    for c in range(3):
        means[c] = torch.bincount(lbl, weights=lab[c].double(), minlength=k).float() / count.clamp(min=1)
    h, w = size
    grid = labels.view(h, w)
    border = torch.unique(torch.cat([grid[0], grid[-1], grid[:, 0], grid[:, -1]]))
    trusted = count > 0
    trusted[border] = False
    trusted[0] = False
    return trusted, means


def lab_to_rgb_banded(lab: torch.Tensor) -> torch.Tensor:
    """:func:`~sketchcolor.color.lab_to_rgb` in bands of rows, bounding temporary memory."""
    if lab.shape[-2] <= BAND_ROWS:
        return lab_to_rgb(lab)
    out = torch.empty_like(lab)
    for top in range(0, lab.shape[-2], BAND_ROWS):
        out[..., top : top + BAND_ROWS, :] = lab_to_rgb(lab[..., top : top + BAND_ROWS, :])
    return out


def multiply_lines(colour_rgb: torch.Tensor, sketch_rgb: torch.Tensor) -> torch.Tensor:
    """Multiply the sketch over the colour: line pixels never get lighter than in the sketch."""
    return colour_rgb * sketch_rgb


def carry_to_full_size(
    lab_small: torch.Tensor,
    sketch_l_small: torch.Tensor,
    sketch_l_full: torch.Tensor,
    *,
    flat: bool = False,
    snap: bool = True,
    hints: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """The colour layer at full size, in sRGB (1, 3, H, W), without the lines.

    Args:
        lab_small: (1, 3, h, w) LAB from the model at the working size.
        sketch_l_small: (1, 1, h, w) sketch lightness at the working size.
        sketch_l_full: (1, 1, H, W) sketch lightness at full size.
        flat: One colour per line-enclosed region everywhere (clean flats).
        snap: Snap uniform regions to one colour (off: smooth bilinear colours).
        hints: Full-size hints (rgb, mask): closed regions holding hints take their hint colour.
    """
    size = (int(sketch_l_full.shape[-2]), int(sketch_l_full.shape[-1]))
    clean = remove_lines(lab_small, sketch_l_small)
    lab_full = upsample(clean, size).contiguous()
    if snap or flat:
        interior = -F.max_pool2d(-interior_weight(sketch_l_small), 3, stride=1, padding=1)
        lab_full = snap_to_regions(lab_full, sketch_l_full, interior, flat=flat, hints=hints)
    return lab_to_rgb_banded(lab_full)
