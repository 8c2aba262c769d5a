"""Carry the model's colours from its working resolution to the sketch's full size.

Owns: the line-art-aware upscaling of the colour layer and the final composition with the
artist's own lines. Line art tells where colour may change: at its lines, which separate regions
that are all white in the sketch. A generic edge-aware filter guided by the sketch's intensity
(bilateral, guided filter) cannot see such a boundary, because both sides of a line are equally
white; so this module works with the line-enclosed regions themselves:

1. :func:`remove_lines` — at the working size, replace the colour under line pixels by the colour of
   the nearby paper (normalised convolution), so the colour layer carries no blurred lines.
2. The cleaned colours are converted to sRGB at the working size and upscaled bilinearly.
3. :func:`region_colours` — label the regions enclosed by the full-resolution lines and give each
   region one colour: the mean of the model's colours sampled inside it, away from lines (where
   no colour bleeds across a line). Regions holding user hints are filled with them (nearest hint
   within the region). Outlines with small gaps are closed first.
   A region whose colour varies a lot (an open outline that merges areas, or real shading) keeps
   the smooth colour unless flats are asked for.
4. :func:`render_u8` — upscale, paint the snapped regions, lay the original sketch over the colour
   (multiply) and round to 8 bits, band by band, so every line pixel is at least as dark as in the
   input, at any output size.

Full-size work is kept to a few passes over the pixels: region statistics are gathered from the
working-size samples (one per working pixel), the snapped colours are laid out on the labelling
grid and read back by nearest neighbour, and the composition is done in horizontal bands straight
into 8-bit output. Bands are independent and run on several threads (numpy and scipy release the
GIL; :func:`parallel_map`), and the nearest-hint field is computed while the regions are labelled.
Every band does the same float operations whatever the thread count, so the pictures do not depend
on it. Imports ``color``, ``conditioning`` and ``parallel`` only.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F

from .color import lab_to_rgb, rgb_to_lab
from .conditioning import (
    LINE_LEVEL,
    SparseHints,
    background_labels,
    label_closed_regions,
    normalization_levels,
    normalize_sketch,
    sample_step,
    stretch_levels,
)
from .parallel import compose_threads, parallel_map

#: Regions whose interior colour has a standard deviation above this (CIE LAB units, summed over
#: channels) are treated as shaded or leaking and keep their smooth colour (unless ``flat``).
SNAP_MAX_STD = 12.0
#: Rows per band when converting full-resolution float images, bounding peak memory.
BAND_ROWS = 512
#: Pixels per band of :func:`render_u8`: a band's float buffers (about 1.5 MB each) stay in the
#: core's cache through the several passes made over them.
RENDER_BAND_PIXELS = 1 << 17
#: Regions are found on the sketch at most this large (long side); larger sketches are
#: area-downscaled for labelling and the labels are read back by nearest neighbour.
REGION_MAX_SIZE = 1024
#: A region whose colour is within this CIE LAB distance of white paper is painted pure white:
#: a model unsure of a region regresses towards a faint tint, which on line art is paper.
PAPER_DISTANCE = 6.0
#: A hint that falls in the page's background region (:data:`BACKGROUND_FRACTION`; an open outline
#: let the shape it was drawn in merge with the page) is looked for again with larger gaps closed,
#: up to these multiples of the usual gap, so it still colours the shape it was drawn in.
HINT_GAP_STEPS = (1.25, 1.5, 2.0)
#: Gaps in outlines up to about twice this many pixels per 128 px of the long side are closed
#: when finding regions (as the "close gap" option of paint-bucket tools), so a shape whose
#: outline is not quite closed does not merge with the background.
GAP_PER_128 = 2.0

#: A reference's palette is found on the reference at most this large (long side).
PALETTE_MAX_SIZE = 256
#: Reference pixels whose 3 x 3 neighbourhood spans at most this much CIE LAB (range per channel,
#: summed) are flat colour; only they vote for palette colours (edges and gradients do not).
PALETTE_FLAT_RANGE = 6.0
#: Flat reference pixels within this CIE LAB distance of a palette colour belong to it.
PALETTE_MERGE = 6.0
#: A palette colour needs at least this share of the flat pixels (and 8 of them).
PALETTE_MIN_SHARE = 0.002
#: At most this many palette colours.
PALETTE_MAX_COLOURS = 32


def _lightness_lut() -> tuple[torch.Tensor, torch.Tensor]:
    """Lookup tables for 8-bit sRGB: linear value per level, and L/100 of a grey level."""
    v = torch.arange(256, dtype=torch.float64) / 255.0
    linear = torch.where(v > 0.04045, ((v + 0.055) / 1.055) ** 2.4, v / 12.92)
    f = torch.where(
        linear > 0.008856, linear.clamp(min=0.008856) ** (1.0 / 3.0), 7.787 * linear + 16.0 / 116.0
    )
    grey_l = ((116.0 * f - 16.0) / 100.0).clamp(0.0, 1.0)
    return linear.float(), grey_l.float()


_LINEAR_LUT, _GREY_L_LUT = _lightness_lut()


#: Rows per band of :func:`sketch_lightness_u8`'s grey path (a few MB of output per band).
LIGHTNESS_BAND_ROWS = 256
#: Pixels per strip within a band of :func:`sketch_lightness_u8` (its temporaries stay in cache).
LIGHTNESS_STRIP_PIXELS = 1 << 15


def sketch_lightness_u8(
    rgb_u8: torch.Tensor, threads: int | None = None, *, normalize: bool = False
) -> torch.Tensor:
    """CIE L/100 of an 8-bit sRGB image (1, 3, H, W) uint8 -> (1, 1, H, W) float in [0, 1].

    Grey images (the usual sketch) take one table lookup per pixel; coloured ones go through
    luminance. Equal to :func:`sketchcolor.color.lightness` to within 1e-4. The grey test and the
    lookup run in bands of rows on ``threads`` threads (default :func:`compose_threads`; numpy
    releases the GIL for both); the result does not depend on it. A tensor whose three channels
    are one plane (channel stride 0, as :func:`~sketchcolor.pipeline.read_sketch_u8` gives for a
    grey picture) is grey without testing.

    ``normalize``: also stretch ink to black and paper to white, exactly as
    :func:`~sketchcolor.conditioning.normalize_sketch` does on the result; for a grey image the
    stretch is applied to the 256-entry table before the lookup (it is elementwise), so the
    full-size picture is passed over once.
    """
    r, g, b = rgb_u8[0, 0], rgb_u8[0, 1], rgb_u8[0, 2]

    def lookup(table: torch.Tensor, channel: torch.Tensor) -> torch.Tensor:
        # numpy's take reads the uint8 indices as they are (torch would widen them to int64 first).
        return torch.from_numpy(np.take(table.numpy(), channel.numpy()))

    one_plane = rgb_u8.stride(1) == 0
    grey_table = _GREY_L_LUT
    if normalize:
        step = sample_step(r.shape)
        levels = normalization_levels(lookup(_GREY_L_LUT, r[::step, ::step]))
        if levels is not None:
            grey_table = stretch_levels(_GREY_L_LUT, levels)  # used only if the image is grey
    rn, gn, bn = r.numpy(), g.numpy(), b.numpy()
    table = grey_table.numpy()
    out = np.empty(rn.shape, dtype=table.dtype)

    def grey_band(top: int) -> bool:
        # In strips small enough that numpy's temporaries (the indices widened to intp, the
        # equality tests) stay in the core's cache, which is markedly faster on large pages.
        step = max(1, LIGHTNESS_STRIP_PIXELS // max(1, rn.shape[1]))
        for strip in range(top, min(top + LIGHTNESS_BAND_ROWS, rn.shape[0]), step):
            rows = slice(strip, min(strip + step, top + LIGHTNESS_BAND_ROWS))
            if not one_plane and not (
                np.array_equal(rn[rows], gn[rows]) and np.array_equal(gn[rows], bn[rows])
            ):
                return False
            np.take(table, rn[rows], out=out[rows])
        return True

    if all(parallel_map(grey_band, range(0, rn.shape[0], LIGHTNESS_BAND_ROWS), threads)):
        return torch.from_numpy(out).view(1, 1, *r.shape)
    y = (
        0.212671 * lookup(_LINEAR_LUT, r)
        + 0.715160 * lookup(_LINEAR_LUT, g)
        + 0.072169 * lookup(_LINEAR_LUT, b)
    )
    f = torch.where(y > 0.008856, y.clamp(min=0.008856) ** (1.0 / 3.0), 7.787 * y + 16.0 / 116.0)
    lightness = ((116.0 * f - 16.0) / 100.0).clamp(0.0, 1.0).view(1, 1, *r.shape)
    return normalize_sketch(lightness) if normalize else lightness


def area_downscale(x: torch.Tensor, size: tuple[int, int], threads: int | None = None) -> torch.Tensor:
    """``F.interpolate(x, size, mode="area")`` of a (N, C, H, W) image, its rows split into bands.

    torch's pooling is parallel over planes only, so one plane pools on one core. Here the image's
    rows are cut into ``threads`` (default :func:`compose_threads`) equal bands that become the
    planes of one call, which torch spreads over its own threads. The bands start where an output
    row's window starts on a whole input row (every ``h / gcd(H, h)`` output rows), so each band's
    windows are exactly the whole image's and the values are identical; rows after the last whole
    band pool in a second call.

    All of it runs on the calling thread, never on composition threads: torch work there starts
    an OpenMP team in each such thread, and with more teams than cores every later parallel torch
    call of the process, the network's included, ran on about one core.
    """
    n_, c_, full_h, full_w = x.shape
    h, w = size
    period = h // math.gcd(full_h, h)  # output rows between exact band starts
    bands = compose_threads() if threads is None else threads
    band_h = period * ((h // period) // max(1, bands))  # output rows per band
    if bands <= 1 or band_h == 0:
        return F.interpolate(x, size=size, mode="area")
    rows_in = full_h * band_h // h  # input rows per band: exact, band_h is a multiple of period
    whole = x[..., : bands * rows_in, :].reshape(1, n_ * c_ * bands, rows_in, full_w)
    out = F.interpolate(whole, size=(band_h, w), mode="area").reshape(n_, c_, bands * band_h, w)
    if bands * band_h == h:
        return out
    tail = F.interpolate(x[..., bands * rows_in :, :], size=(h - bands * band_h, w), mode="area")
    return torch.cat([out, tail], dim=-2)


def sketch_lightness(rgb: torch.Tensor) -> torch.Tensor:
    """CIE L/100 of sRGB (N, 3, H, W) in [0, 1] -> (N, 1, H, W), from luminance only."""
    lin = torch.where(rgb > 0.04045, ((rgb.clamp(min=0.04045) + 0.055) / 1.055) ** 2.4, rgb / 12.92)
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


def _sample_positions(full: int, small: int) -> torch.Tensor:
    """Full-size row (or column) index of the centre of each working-size pixel."""
    return (
        ((torch.arange(small, dtype=torch.float64) + 0.5) * full / small).floor().long().clamp(max=full - 1)
    )


@dataclasses.dataclass(frozen=True)
class Regions:
    """Line-enclosed regions of a sketch and the colour chosen for each.

    Attributes:
        labels: (h, w) int32 region of every pixel of the labelling grid (0 on lines); the grid
            is the sketch itself, or an area-downscaled copy for sketches over
            :data:`REGION_MAX_SIZE`.
        snap: (K,) whether region k is painted with one colour.
        rgb: (3, K) that colour, sRGB in [0, 1].
        hint_rgb: (3, h, w) on the grid, the colour of the nearest hint (sRGB), or None.
        hint_use: (h, w) bool, where ``hint_rgb`` applies: pixels of hinted regions whose nearest
            hint lies in their own region (so a region hinted with two colours is split between
            them, as the user drew), or None.
    """

    labels: torch.Tensor
    snap: torch.Tensor
    rgb: torch.Tensor
    hint_rgb: torch.Tensor | None = None
    hint_use: torch.Tensor | None = None

    def labels_at(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Labels at full-size pixel rows and columns (nearest grid pixel)."""
        return self.labels[rows][:, cols]


def _as_sparse(hints: tuple[torch.Tensor, torch.Tensor] | SparseHints | None) -> SparseHints | None:
    if hints is None or isinstance(hints, SparseHints):
        return hints
    return SparseHints.from_layer(*hints)


def reference_palette(rgb: torch.Tensor) -> torch.Tensor:
    """The flat colours of a reference picture, most used first, as (K, 3) CIE LAB.

    Only flat pixels vote (their 3 x 3 neighbourhood spans at most :data:`PALETTE_FLAT_RANGE`), so
    outlines, anti-aliased edges and gradients add no colours of their own. Colours are found one
    at a time, most common first (mode seeking, no random start): the fullest 3-unit LAB bin of
    the pixels not yet taken seeds a colour, the pixels within :data:`PALETTE_MERGE` of the seed's
    mean form it, and the mean of those is the palette colour. Colours with fewer than
    :data:`PALETTE_MIN_SHARE` of the flat pixels are left out. The picture is area-downscaled to
    :data:`PALETTE_MAX_SIZE` first. A strip of swatches gives its swatches.

    Args:
        rgb: (1, 3, H, W) sRGB in [0, 1].

    Returns:
        (K, 3) float32, K from 0 (no flat colour at all) to :data:`PALETTE_MAX_COLOURS`.
    """
    h, w = rgb.shape[-2:]
    if max(h, w) > PALETTE_MAX_SIZE:
        scale = PALETTE_MAX_SIZE / max(h, w)
        rgb = area_downscale(rgb.float(), (max(1, round(h * scale)), max(1, round(w * scale))))
    lab = rgb_to_lab(rgb.float())
    if min(lab.shape[-2:]) >= 3:
        span = (F.max_pool2d(lab, 3, stride=1) + F.max_pool2d(-lab, 3, stride=1)).sum(1).reshape(-1)
        colours = lab[..., 1:-1, 1:-1].reshape(3, -1)[:, span <= PALETTE_FLAT_RANGE].T
    else:
        colours = lab.reshape(3, -1).T
    min_count = max(8, math.ceil(PALETTE_MIN_SHARE * len(colours)))
    palette: list[torch.Tensor] = []
    while len(palette) < PALETTE_MAX_COLOURS and len(colours) >= min_count:
        _, inverse, counts = torch.unique(
            torch.round(colours / 3.0).to(torch.int64), dim=0, return_inverse=True, return_counts=True
        )
        seed = colours[inverse == int(counts.argmax())].mean(0)
        member = (colours - seed).norm(dim=1) <= PALETTE_MERGE
        if int(member.sum()) < min_count:
            break
        palette.append(colours[member].mean(0))
        colours = colours[~member]
    return torch.stack(palette) if palette else torch.zeros((0, 3))


def snap_to_palette(
    lab: torch.Tensor, palette: torch.Tensor, distance: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each (3, K) LAB colour within ``distance`` (CIE LAB) of a palette colour becomes that colour.

    Returns:
        (the colours, (K,) bool which were replaced).
    """
    if len(palette) == 0 or distance <= 0:
        return lab, torch.zeros(lab.shape[1], dtype=torch.bool)
    gap, nearest = torch.cdist(lab.T.float(), palette.float()).min(dim=1)
    near = gap <= distance
    return torch.where(near, palette[nearest].T.to(lab.dtype), lab), near


def region_labels(
    sketch_l_full: torch.Tensor,
    hints: tuple[torch.Tensor, torch.Tensor] | SparseHints | None = None,
    threads: int | None = None,
) -> np.ndarray:
    """The line-enclosed regions :func:`region_colours` colours, on its labelling grid.

    The grid is the sketch itself, or an area-downscaled copy for sketches over
    :data:`REGION_MAX_SIZE`; outline gaps up to :data:`GAP_PER_128` pixels per 128 px of the
    grid are closed (:func:`label_closed_regions`), and hints drawn in the page's background
    through an open outline get their shape (:func:`_close_around_hints`). It depends on the
    sketch and the hints only, not on the model's colours, so every sample of a sketch can share
    it; at 4096 px it is most of :func:`region_colours`' time.

    Args:
        sketch_l_full: (1, 1, H, W) full-size sketch lightness.
        hints: The full-size hints, or None.
        threads: Threads for the labelling (default :func:`compose_threads`); the labels are the
            same for every value.

    Returns:
        (h, w) int32 labels, 0 on lines.
    """
    threads = compose_threads() if threads is None else threads
    sparse = _as_sparse(hints)
    full_h, full_w = sketch_l_full.shape[-2:]
    grid_l = sketch_l_full
    if max(full_h, full_w) > REGION_MAX_SIZE:
        scale = REGION_MAX_SIZE / max(full_h, full_w)
        # At least one row and column: a 8 x 100000 strip must not vanish.
        size = (max(1, round(full_h * scale)), max(1, round(full_w * scale)))
        grid_l = area_downscale(sketch_l_full, size, threads)
    h, w = grid_l.shape[-2:]
    gap = GAP_PER_128 * max(h, w) / 128.0
    grid_np = grid_l[0, 0].numpy()
    labels = label_closed_regions(grid_np, gap, threads=threads)
    if sparse is not None and not sparse.is_empty:
        labels = _close_around_hints(labels, grid_np, sparse, gap, threads)
    return labels


def region_colours(
    lab_small: torch.Tensor,
    sketch_l_full: torch.Tensor,
    interior_small: torch.Tensor,
    *,
    flat: bool = False,
    max_std: float = SNAP_MAX_STD,
    hints: tuple[torch.Tensor, torch.Tensor] | SparseHints | None = None,
    palette: torch.Tensor | None = None,
    palette_distance: float = 0.0,
    labels: np.ndarray | None = None,
) -> Regions:
    """Choose one colour per line-enclosed region of the full-size sketch.

    Region statistics come from the working-size samples: each working pixel's centre falls in
    one full-size region, and only samples at least one working pixel away from lines count
    (``interior_small``). A region is snapped when its samples are uniform (or ``flat``). A region
    holding user hints is filled with them: each pixel takes the colour of the nearest hint in
    its region (the classical flat fill, split between several hint colours). Regions are
    labelled with small outline gaps closed (:func:`label_closed_regions`).

    The nearest-hint field (a distance transform of the hints over the labelling grid, about
    0.06 s at 1024 x 1024) is computed only when some hinted region holds more than one hint
    colour: where each holds one, the nearest hint in a region has that colour wherever it is, so
    the region is filled with it directly (the usual case: one colour scribbled per shape).

    Args:
        lab_small: (1, 3, h, w) the model's colours (lines removed) at the working size.
        sketch_l_full: (1, 1, H, W) full-size sketch lightness.
        interior_small: (1, 1, h, w) sample weights, 0 within one working pixel of a line.
        flat: Snap every region that has samples (clean flats), not only uniform ones.
        max_std: Uniformity threshold (see :data:`SNAP_MAX_STD`).
        hints: Optional full-size hints: ``(rgb (1, 3, H, W) in [0, 1], mask (1, 1, H, W))`` or
            a :class:`SparseHints`.
        palette: Optional (P, 3) LAB colours (a reference's, :func:`reference_palette`): a
            region with samples and without hints whose mean colour is within
            ``palette_distance`` of one of them takes that colour exactly
            (:func:`snap_to_palette`), uniform or not (the model's uneven colour in a region is
            most often one colour it was unsure of), except the page's background when uneven
            (:func:`~sketchcolor.conditioning.background_labels`); regions painted white as
            paper stay white.
        palette_distance: CIE LAB distance for ``palette``; 0 leaves the colours as they are.
        labels: The regions, as :func:`region_labels` gives them for this sketch and these hints
            (None: labelled here). Several samples of one sketch share one labelling.

    Returns:
        The :class:`Regions`; line pixels (region 0) and regions without samples are not snapped.
    """
    sparse = _as_sparse(hints)
    if sparse is not None and sparse.is_empty:
        sparse = None
    labels_np = region_labels(sketch_l_full, sparse) if labels is None else labels
    h, w = labels_np.shape
    grid = torch.from_numpy(labels_np)  # (h, w) int32
    k = int(grid.max()) + 1
    sh, sw = lab_small.shape[-2:]
    sample_labels = grid[_sample_positions(h, sh)][:, _sample_positions(w, sw)].reshape(-1)
    weight = interior_small.reshape(-1) * (sample_labels > 0)
    w_sum = torch.bincount(sample_labels, weights=weight, minlength=k)
    samples = lab_small.reshape(3, -1)
    mean_lab = torch.stack(
        [torch.bincount(sample_labels, weights=weight * samples[c], minlength=k) for c in range(3)]
    )
    mean_lab = mean_lab / w_sum.clamp(min=1e-6)
    sq = torch.stack(
        [torch.bincount(sample_labels, weights=weight * samples[c] ** 2, minlength=k) for c in range(3)]
    )
    std = (sq / w_sum.clamp(min=1e-6) - mean_lab**2).clamp(min=0).sum(0).sqrt()
    sampled = w_sum > 1e-6
    snap = sampled & (torch.ones_like(sampled) if flat else std <= max_std)
    paper = torch.tensor([100.0, 0.0, 0.0]).view(3, 1)
    near_paper = (mean_lab - paper).norm(dim=0) <= PAPER_DISTANCE
    mean_lab = torch.where(near_paper & snap, paper, mean_lab)
    # Uniform or not, a region whose mean is near one of the reference's colours takes it (a
    # region the model coloured unevenly is most often one colour it was unsure of), but not the
    # page's background when uneven: an open outline may have merged shapes into it.
    snapped, near = snap_to_palette(
        mean_lab, torch.zeros((0, 3)) if palette is None else palette, palette_distance
    )
    if bool(near.any()):
        uneven_page = torch.from_numpy(background_labels(labels_np)) & ~snap
        take = near & sampled & ~(near_paper & snap) & ~uneven_page
        mean_lab = torch.where(take, snapped, mean_lab)
        snap |= take
    hint_rgb = hint_use = one_colour = None
    if sparse is not None:
        hinted = _hinted_regions(grid, sparse, k)
        mean_lab = torch.where(hinted.trusted, hinted.mean_lab, mean_lab)
        snap |= hinted.trusted
        if bool((hinted.one_colour | ~hinted.trusted).all()):
            one_colour = hinted  # each hinted region is filled with its one colour, exactly
        else:
            hint_rgb, nearest = _hint_field(sparse, (h, w))
            own = grid.reshape(-1)[nearest] == grid
            hint_use = own & hinted.trusted[grid] & (grid > 0)
    snap[0] = False  # line pixels keep the smooth colour (the lines go on top anyway)
    rgb = lab_to_rgb(mean_lab.T.reshape(k, 3, 1, 1)).reshape(k, 3).T.contiguous()
    if one_colour is not None:
        # The hint's own sRGB, not its round trip through the LAB mean.
        rgb = torch.where(one_colour.trusted, one_colour.rgb, rgb)
    return Regions(grid, snap, rgb, hint_rgb, hint_use)


def _close_around_hints(
    labels: np.ndarray, grid_l: np.ndarray, hints: SparseHints, gap: float, threads: int = 1
) -> np.ndarray:
    """Give hints drawn in the page's background, through an open outline, their own shape.

    For hint pixels whose region is background (:func:`~sketchcolor.conditioning.background_labels`),
    the sketch is labelled again with larger gaps closed (:data:`HINT_GAP_STEPS` times ``gap``);
    at the first step where such a pixel's region is no longer background, that region (where it
    lies in the background of ``labels``) becomes a region of its own. Hints really meant for the
    background stay in it: no gap step makes the page a closed shape.

    Returns:
        The labels (a copy when anything changed), 0 on lines.
    """
    full_h, full_w = hints.size
    grid_h, grid_w = labels.shape
    gy, gx = (hints.ys * grid_h // full_h).numpy(), (hints.xs * grid_w // full_w).numpy()
    background = background_labels(labels)
    open_hint = background[labels[gy, gx]]
    if not open_hint.any():
        return labels
    labels = labels.copy()
    in_background = background[labels]
    next_label = int(labels.max()) + 1
    pending = np.flatnonzero(open_hint)
    for step in HINT_GAP_STEPS:
        wider = label_closed_regions(grid_l, gap * step, threads=threads)
        closed = ~background_labels(wider)
        found = closed[wider[gy[pending], gx[pending]]] & (wider[gy[pending], gx[pending]] > 0)
        for region in np.unique(wider[gy[pending[found]], gx[pending[found]]]):
            take = (wider == region) & in_background
            labels[take] = next_label
            in_background &= ~take
            next_label += 1
        pending = pending[~found]
        if not len(pending):
            break
    return labels


def _hint_field(hints: SparseHints, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per grid pixel: the colour of the nearest hint, and where that hint is.

    Returns:
        ``hint_rgb`` (3, h, w) (a channels-last view, as the renderer reads it) and the nearest
        hint's flat grid index (h, w) int64.
    """
    from scipy import ndimage

    rgb, hinted = hints.on_grid(size)
    nearest = ndimage.distance_transform_edt(~hinted.numpy(), return_distances=False, return_indices=True)
    flat = nearest[0].astype(np.intp) * size[1] + nearest[1]
    rgb_hwc = rgb.permute(1, 2, 0).reshape(-1, 3).numpy()
    hint_rgb = torch.from_numpy(np.take(rgb_hwc, flat, axis=0)).permute(2, 0, 1)
    return hint_rgb, torch.from_numpy(flat)


@dataclasses.dataclass(frozen=True)
class _HintedRegions:
    """What the hints say about each region of a labelling (all indexed by label, K entries).

    Attributes:
        trusted: (K,) bool: the region holds hints and is not the page's background.
        mean_lab: (3, K) mean LAB of the region's hint pixels.
        one_colour: (K,) bool: every hint pixel of the region has the same sRGB colour.
        rgb: (3, K) that colour where ``one_colour`` (elsewhere the per-channel minimum, unused).
    """

    trusted: torch.Tensor
    mean_lab: torch.Tensor
    one_colour: torch.Tensor
    rgb: torch.Tensor


def _hinted_regions(labels: torch.Tensor, hints: SparseHints, k: int) -> _HintedRegions:
    """Which regions hold hints, with what colours.

    ``labels`` is the labelling grid; full-size hint pixels are mapped onto it. A hinted region
    that touches the border and covers more than :data:`BACKGROUND_FRACTION` of the picture is not
    trusted: that is the background merged with a shape whose outline is open, and filling it
    would flood the page with the shape's colour.
    """
    full_h, full_w = hints.size
    grid_h, grid_w = labels.shape
    means = torch.zeros(3, k, dtype=torch.float32)
    lab = rgb_to_lab(hints.rgb.reshape(1, 3, 1, -1)).reshape(3, -1)
    lbl = labels[hints.ys * grid_h // full_h, hints.xs * grid_w // full_w]
    count = torch.bincount(lbl, minlength=k).float()
    for c in range(3):
        means[c] = torch.bincount(lbl, weights=lab[c], minlength=k) / count.clamp(min=1)
    trusted = count > 0
    trusted &= ~torch.from_numpy(background_labels(labels.numpy()))
    trusted[0] = False
    index = lbl.expand(3, -1)
    low = torch.zeros(3, k, dtype=hints.rgb.dtype).scatter_reduce(
        1, index, hints.rgb, "amin", include_self=False
    )
    high = torch.zeros(3, k, dtype=hints.rgb.dtype).scatter_reduce(
        1, index, hints.rgb, "amax", include_self=False
    )
    return _HintedRegions(trusted, means, (low == high).all(dim=0), low)


def _bilinear_rows(small: int, full: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source rows and weights of bilinear upscaling (align_corners=False, as F.interpolate)."""
    src = ((torch.arange(full, dtype=torch.float64) + 0.5) * small / full - 0.5).clamp(min=0.0)
    lo = src.floor().long().clamp(max=small - 1)
    hi = (lo + 1).clamp(max=small - 1)
    return lo, hi, (src - lo).float()


@dataclasses.dataclass(frozen=True)
class _Canvas:
    """What every band of :func:`render_u8` reads (numpy, channels last)."""

    cols: np.ndarray  # (h, W, 3) float32: the working-size colours upscaled along rows only
    lo: np.ndarray  # (H,) source row below each output row
    hi: np.ndarray  # (H,) source row above
    frac: np.ndarray  # (H,) float32 weight of ``hi``
    one_minus_frac: np.ndarray  # (H,) float32 weight of ``lo``
    sketch: np.ndarray | None  # (H, W, 3) uint8, or None (multiply by 255: flats)
    flat: _FlatLayer | None


@dataclasses.dataclass(frozen=True)
class _FlatLayer:
    """The snapped and hinted colours on the labelling grid, read back by nearest neighbour.

    One lookup per grid pixel: ``index`` points into ``table``, whose first K rows are the
    regions' colours (-1 where a region is not snapped) and whose further rows are the grid's
    nearest-hint colours, used where a hint applies.
    """

    index: np.ndarray  # (h, w) intp
    table: np.ndarray  # (K [+ h * w], 3) float32 in [0, 1], or -1: not flat
    grid_rows: np.ndarray  # (H,) grid row of each output row
    grid_cols: np.ndarray | None  # (W,) grid column of each output column; None: the same
    same_rows: bool  # grid rows are output rows (the grid is the full size)

    def colours(self, top: int, bottom: int) -> np.ndarray:
        """(bottom - top, W, 3) flat colours of output rows top..bottom, -1 where not flat."""
        rows = self.grid_rows[top:bottom]
        g0, g1 = int(rows[0]), int(rows[-1]) + 1
        colour = np.take(self.table, self.index[g0:g1], axis=0)  # (g, w, 3)
        if self.grid_cols is not None:
            colour = np.take(colour, self.grid_cols, axis=1)
        if not self.same_rows:
            colour = np.take(colour, rows - g0, axis=0)
        return colour


def _flat_layer(regions: Regions, size: tuple[int, int]) -> _FlatLayer:
    h_out, w_out = size
    grid_h, grid_w = regions.labels.shape
    # Clamped here, once per region: clamping commutes with choosing between colours.
    table = regions.rgb.T.clamp(0.0, 1.0).contiguous().numpy()
    table[~regions.snap.numpy()] = -1.0
    index = regions.labels.numpy().astype(np.intp)
    if regions.hint_rgb is not None and regions.hint_use is not None:
        hint_rgb = regions.hint_rgb.clamp(0.0, 1.0).permute(1, 2, 0).reshape(-1, 3).numpy()
        index = np.where(
            regions.hint_use.numpy(), len(table) + np.arange(index.size).reshape(index.shape), index
        )
        table = np.concatenate([table, hint_rgb])
    grid_rows = (torch.arange(h_out) * grid_h // h_out).numpy()
    grid_cols = None if grid_w == w_out else (torch.arange(w_out) * grid_w // w_out).numpy()
    return _FlatLayer(index, table, grid_rows, grid_cols, grid_h == h_out)


def _render_rows(canvas: _Canvas, out: np.ndarray, top: int, bottom: int, band_rows: int) -> None:
    """Compose output rows top..bottom into ``out``, ``band_rows`` at a time (one thread)."""
    w_out = canvas.cols.shape[1]
    band = np.empty((band_rows, w_out, 3), dtype=np.float32)
    upper = np.empty_like(band)
    spread = np.empty((band_rows, w_out, 3), dtype=np.uint8)  # see the sketch multiply below
    for start in range(top, bottom, band_rows):
        stop = min(start + band_rows, bottom)
        n = stop - start
        b, u = band[:n], upper[:n]
        lo, hi = canvas.lo[start:stop], canvas.hi[start:stop]
        # Bilinear along rows: out = cols[lo] * (1 - f) + cols[hi] * f, row by row of equal
        # source rows (broadcast, no gather); the same float operations as F.interpolate's.
        cut = np.flatnonzero((lo[1:] != lo[:-1]) | (hi[1:] != hi[:-1])) + 1
        for s, e in zip(np.r_[0, cut], np.r_[cut, n], strict=True):
            rows = slice(start + s, start + e)
            np.multiply(canvas.cols[lo[s]], canvas.one_minus_frac[rows, None, None], out=b[s:e])
            np.multiply(canvas.cols[hi[s]], canvas.frac[rows, None, None], out=u[s:e])
        np.add(b, u, out=b)
        np.clip(b, 0.0, 1.0, out=b)
        if canvas.flat is not None:
            colour = canvas.flat.colours(start, stop)
            np.copyto(b, colour, where=colour >= 0.0)
        if canvas.sketch is None:
            np.multiply(b, 255.0, out=b)
        else:
            sketch = canvas.sketch[start:stop]
            if not sketch.flags.c_contiguous:
                # A grey sketch's one plane (stride 0) or another layout: three planes side by
                # side in this band first, so the multiply runs over contiguous memory (numpy's
                # broadcast over the 3 channels is several times slower).
                for c in range(3):
                    spread[:n, :, c] = sketch[..., c]
                sketch = spread[:n]
            np.multiply(b, sketch, out=b)
        np.add(b, 0.5, out=b)
        np.copyto(out[start:stop], b, casting="unsafe")  # truncation: round half up


def render_u8(
    rgb_small: torch.Tensor,
    size: tuple[int, int],
    *,
    regions: Regions | None = None,
    sketch_u8: torch.Tensor | None = None,
    threads: int | None = None,
) -> np.ndarray:
    """The full-size picture as (H, W, 3) uint8, built band by band of rows.

    Each band is the bilinear upscaling of ``rgb_small`` (columns first, at the working height,
    then rows), with snapped regions painted in their region colour, multiplied by the sketch
    (when given) and rounded to 8 bits. No full-size float image is ever held in memory. Bands
    are independent and run on ``threads`` threads (numpy releases the GIL); every band does
    the same float operations whatever the thread count, so the result does not depend on it.

    Args:
        rgb_small: (1, 3, h, w) sRGB colours at the working size.
        size: Output (H, W).
        regions: Region colours (:func:`region_colours`), or None for smooth colours only.
        sketch_u8: (1, 3, H, W) uint8 sketch to multiply over the colour, or None (flats).
        threads: Threads to use (default :func:`compose_threads`).
    """
    h_out, w_out = size
    cols = F.interpolate(rgb_small, size=(rgb_small.shape[-2], w_out), mode="bilinear", align_corners=False)[
        0
    ]
    lo, hi, frac = _bilinear_rows(rgb_small.shape[-2], h_out)
    sketch = None
    if sketch_u8 is not None:
        # A view: contiguous for channels-last sketches, one plane (stride 0) for grey ones.
        sketch = sketch_u8[0].permute(1, 2, 0).numpy()
    frac_np = frac.numpy()
    canvas = _Canvas(
        cols.permute(1, 2, 0).contiguous().numpy(), lo.numpy(), hi.numpy(), frac_np, 1 - frac_np, sketch,
        _flat_layer(regions, size) if regions is not None else None,
    )  # fmt: skip
    out = np.empty((h_out, w_out, 3), dtype=np.uint8)
    band_rows = max(1, min(h_out, RENDER_BAND_PIXELS // max(1, w_out)))
    threads = compose_threads() if threads is None else threads
    # Up to four bands per task (scratch buffers are reused within a task), and enough tasks to
    # keep every thread busy.
    bands = -(-h_out // band_rows)
    per_task = band_rows * max(1, min(4, bands // (2 * threads)))
    tasks = [(top, min(top + per_task, h_out)) for top in range(0, h_out, per_task)]
    parallel_map(lambda span: _render_rows(canvas, out, span[0], span[1], band_rows), tasks, threads)
    return out


def carry_to_full_size(
    lab_small: torch.Tensor,
    sketch_l_small: torch.Tensor,
    sketch_l_full: torch.Tensor,
    sketch_u8: torch.Tensor | None,
    *,
    flat: bool = False,
    snap: bool = True,
    hints: tuple[torch.Tensor, torch.Tensor] | SparseHints | None = None,
    keep_flats: bool = False,
    threads: int | None = None,
    palette: torch.Tensor | None = None,
    palette_distance: float = 0.0,
    labels: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The model's colours at full size with the sketch's lines on top, as 8-bit pictures.

    Args:
        lab_small: (1, 3, h, w) LAB from the model at the working size.
        sketch_l_small: (1, 1, h, w) sketch lightness at the working size.
        sketch_l_full: (1, 1, H, W) sketch lightness at full size.
        sketch_u8: (1, 3, H, W) the sketch, multiplied over the colour (None: colour only).
        flat: One colour per line-enclosed region everywhere (clean flats).
        snap: Snap uniform regions to one colour (off: smooth bilinear colours).
        hints: Full-size hints ((rgb, mask) or :class:`SparseHints`): regions holding hints are
            filled with them.
        keep_flats: Also return the colour layer without lines.
        threads: Threads for the full-size work (default :func:`compose_threads`); the pictures
            are identical for every value.
        palette: A reference's flat colours, (P, 3) LAB (see :func:`region_colours`).
        palette_distance: Regions within this CIE LAB distance of one of them take it.
        labels: The sketch's :func:`region_labels` for these hints, when already known.

    Returns:
        (picture (H, W, 3) uint8, colour layer (H, W, 3) uint8 or None).
    """
    size = (int(sketch_l_full.shape[-2]), int(sketch_l_full.shape[-1]))
    clean = remove_lines(lab_small, sketch_l_small)
    regions = None
    if snap or flat:
        interior = -F.max_pool2d(-interior_weight(sketch_l_small), 3, stride=1, padding=1)
        regions = region_colours(
            clean, sketch_l_full, interior, flat=flat, hints=hints, palette=palette,
            palette_distance=palette_distance, labels=labels,
        )  # fmt: skip
    rgb_small = lab_to_rgb(clean)
    picture = render_u8(rgb_small, size, regions=regions, sketch_u8=sketch_u8, threads=threads)
    flats = render_u8(rgb_small, size, regions=regions, threads=threads) if keep_flats else None
    return picture, flats


def lab_to_rgb_banded(lab: torch.Tensor) -> torch.Tensor:
    """:func:`~sketchcolor.color.lab_to_rgb` in bands of rows, bounding temporary memory."""
    out = torch.empty_like(lab)
    for top in range(0, lab.shape[-2], BAND_ROWS):
        out[..., top : top + BAND_ROWS, :] = lab_to_rgb(lab[..., top : top + BAND_ROWS, :])
    return out


def to_u8(rgb: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) float sRGB -> (H, W, 3) uint8, in bands of rows."""
    _, _, h, w = rgb.shape
    out = np.empty((h, w, 3), dtype=np.uint8)
    for top in range(0, h, BAND_ROWS):
        band = rgb[0, :, top : top + BAND_ROWS].clamp(0.0, 1.0) * 255.0
        out[top : top + BAND_ROWS] = band.add_(0.5).to(torch.uint8).permute(1, 2, 0).numpy()
    return out
