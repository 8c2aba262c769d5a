"""Classical baseline: G'MIC's "Colorize lineart [smart coloring]" filter, driven by colour hints.

The filter (command ``fx_colorize_lineart_smart``, by D. Tschumperlé, S. Fourey and D. Revoy; the
one GIMP's G'MIC-Qt lists as *Colorize Lineart [Smart Coloring]*) closes gaps in the line art,
then grows the user's colour spots over the line-enclosed regions with a watershed. There is no
``fx_colorize_lineart_auto``; the other line-art colourers in G'MIC are ``fx_colorize_lineart``
("[propagation]") and ``fx_autofill_lineart`` ("[auto-fill]", random flat colours, no hints).

How the command is driven here (read from its source in G'MIC 3.6.3's stdlib):

* mode ``$1 = 1`` ("Extrapolate Color Spots on Transparent Top Layer") expects two layers,
  top layer first: ``[spots, lineart]``. ``spots`` is RGBA; only pixels with alpha == 255 are
  spots, and spots are told apart by their colour. ``lineart`` is opaque RGB, black on white: its
  pixels darker than ``255 * (1 - contour%)`` (95 % -> luminance < 12.75 after negation) are lines;
* it leaves ``[spots, lineart (layer mode multiply), new_colors (RGBA, flat fill)]``; as in GIMP,
  the result is ``new_colors * lineart / 255``;
* every parameter other than the mode keeps G'MIC-Qt's default; the trailing ``-1`` that
  ``fx_colorize_lineart_smart`` appends selects the full (non-preview) output.

``python benchmarks/gmic_baseline.py`` runs the filter on a few prepared OpenMoji test items (see
``scripts/prepare_openmoji.py``) with hints made from the true colours and writes a side-by-side
sheet (sketch | hints | G'MIC | truth).

Needs the ``gmic`` wheel from PyPI (the ``bench`` extra); it is imported only when called.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

GMIC_COMMAND = "fx_colorize_lineart_smart"
#: Parameters of ``fx_colorize_lineart_smart`` after the mode, as G'MIC-Qt's defaults (3.6.3):
#: contour detection 95 %, discard contour guides 0, output region delimiters 0, hue/size 1,
#: max saturation 24, min intensity 200 (random mode only), colour shading 0 %, end point rate 75 %,
#: end point connectivity 2, spline max length 60 px, segment max length 20 px, spline max angle 90°,
#: spline roundness 1, minimal region area 10, allow self intersections 1, preview type 0.
DEFAULT_PARAMS: tuple[float, ...] = (95, 0, 0, 1, 24, 200, 0, 75, 2, 60, 20, 90, 1, 10, 1, 0)
MODE_COLOR_SPOTS = 1

_interpreter: Any = None


def _gmic() -> Any:
    """The gmic module, imported on first use."""
    try:
        import gmic
    except ImportError as exc:
        raise ImportError(
            "the G'MIC baseline needs the 'gmic' package: pip install 'sketchcolor[bench]' "
            "(or pip install gmic)"
        ) from exc
    return gmic


def _to_gmic(gmic: Any, array: np.ndarray) -> Any:
    """(H, W, C) array -> gmic.Image (G'MIC stores x, y, z, c)."""
    xyzc = np.ascontiguousarray(np.asarray(array, dtype=np.float32).transpose(1, 0, 2)[:, :, None, :])
    return gmic.Image(xyzc)


def _from_gmic(image: Any) -> np.ndarray:
    """gmic.Image (x, y, 1, c) -> (H, W, C) float32 array."""
    return np.asarray(image.to_numpy())[:, :, 0, :].transpose(1, 0, 2)


def gmic_smart_colour(
    sketch_rgb: np.ndarray,
    hints_rgba: np.ndarray,
    *,
    params: Sequence[float] = DEFAULT_PARAMS,
) -> np.ndarray:
    """Colour a black-on-white sketch from colour hints with G'MIC's smart colouring.

    Args:
        sketch_rgb: (H, W, 3) uint8 line art, dark lines on white ((H, W) or (H, W, 1) grey works too).
        hints_rgba: (H, W, 4) uint8; pixels with alpha >= 128 are hints of their RGB colour, the rest
            is ignored.
        params: the 16 parameters after the mode (see ``DEFAULT_PARAMS``).

    Returns:
        (H, W, 3) uint8: the flat colour fill multiplied by the line art. Without any hint the
        filter has nothing to spread (it would return black), so the sketch is returned unchanged.
    """
    global _interpreter
    gmic = _gmic()
    sketch = np.asarray(sketch_rgb)
    if sketch.ndim == 2:
        sketch = sketch[..., None]
    if sketch.ndim != 3 or sketch.shape[2] not in (1, 3):
        raise ValueError(f"sketch_rgb must be (H, W, 3), got {sketch.shape}")
    if sketch.shape[2] == 1:
        sketch = np.repeat(sketch, 3, axis=2)
    hints = np.asarray(hints_rgba)
    if hints.shape != sketch.shape[:2] + (4,):
        raise ValueError(f"hints_rgba must be {sketch.shape[:2] + (4,)}, got {hints.shape}")
    if len(params) != len(DEFAULT_PARAMS):
        raise ValueError(f"params must have {len(DEFAULT_PARAMS)} values, got {len(params)}")
    sketch = sketch.astype(np.uint8, copy=False)

    spots = np.zeros(hints.shape, dtype=np.float32)
    on = hints[..., 3] >= 128
    if not on.any():
        return sketch.copy()
    spots[on, :3] = hints[on, :3]
    spots[on, 3] = 255.0

    if _interpreter is None:
        _interpreter = gmic.Gmic()
    images = gmic.ImageList([_to_gmic(gmic, spots), _to_gmic(gmic, sketch)])
    args = ",".join(f"{p:g}" for p in (MODE_COLOR_SPOTS, *params))
    _interpreter.run(f"{GMIC_COMMAND} {args}", images)
    if len(images) != 3:
        raise RuntimeError(f"{GMIC_COMMAND} returned {len(images)} images, expected 3")
    lineart = _from_gmic(images[1])[..., :3]
    fill = _from_gmic(images[2])[..., :3]
    return np.clip(np.rint(fill * lineart / 255.0), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------- hints for the check


def stroke_hints(
    sketch_rgb: np.ndarray,
    color_rgb: np.ndarray,
    *,
    line_level: int = 128,
    colour_step: int = 24,
    min_clearance: float = 2.5,
    max_regions: int = 12,
    half_length: int = 3,
) -> np.ndarray:
    """Short hint strokes of the true colour, like a user marking each differently coloured area.

    Areas are the 4-connected components of paper pixels (sketch lighter than ``line_level``) of one
    true colour, quantised in steps of ``colour_step``; so an area ends at a line or where the truth
    changes colour (open line art, shading). In each of the ``max_regions`` largest areas whose
    deepest point is at least ``min_clearance`` px from the area's edge, a horizontal stroke (2 px
    thick, up to ``2 * half_length + 1`` long, kept inside the area) is drawn through that point in
    the colour the truth has there.
    """
    from scipy import ndimage
    from skimage.measure import label

    grey = np.asarray(sketch_rgb, dtype=np.float32)
    if grey.ndim == 3:
        grey = grey.mean(axis=2)
    truth = np.asarray(color_rgb)[..., :3]
    q = (truth // colour_step).astype(np.int64)
    codes = 1 + q[..., 0] + 64 * q[..., 1] + 64 * 64 * q[..., 2]
    codes[grey < line_level] = 0
    labels = label(codes, background=0, connectivity=1)
    # interior: the pixel and its 4 neighbours share a label; clearance: distance to a non-interior pixel
    padded = np.pad(labels, 1, constant_values=0)
    interior = labels > 0
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        interior &= padded[dy : dy + labels.shape[0], dx : dx + labels.shape[1]] == labels
    clearance = ndimage.distance_transform_edt(interior)

    hints = np.zeros(grey.shape + (4,), dtype=np.uint8)
    areas = np.bincount(labels.ravel())
    areas[0] = 0
    h, w = grey.shape
    for region in np.argsort(areas)[::-1][:max_regions]:
        if areas[region] == 0:
            break
        depth = np.where(labels == region, clearance, 0.0)
        y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
        if depth[y, x] < min_clearance:
            continue
        colour = truth[y, x]
        for xx in range(max(0, x - half_length), min(w, x + half_length + 1)):
            for yy in (y, min(h - 1, y + 1)):
                if labels[yy, xx] == region and clearance[yy, xx] >= 1:
                    hints[yy, xx, :3] = colour
                    hints[yy, xx, 3] = 255
    return hints


def _hints_on_grey(hints_rgba: np.ndarray) -> np.ndarray:
    """Hints over mid-grey paper, so that white hints show."""
    view = np.full(hints_rgba.shape[:2] + (3,), 128, dtype=np.uint8)
    on = hints_rgba[..., 3] >= 128
    view[on] = hints_rgba[on, :3]
    return view


def main(argv: list[str] | None = None) -> int:
    from PIL import Image

    parser = argparse.ArgumentParser(description="Check the G'MIC smart-colouring baseline on OpenMoji.")
    parser.add_argument(
        "--data",
        type=Path,
        default=Path("/work/data/openmoji128"),
        help="output of scripts/prepare_openmoji.py",
    )
    parser.add_argument(
        "--stems", nargs="*", default=None, help="test stems to use (default: 3 spread over the test split)"
    )
    parser.add_argument("--out", type=Path, default=Path("gmic_check.png"), help="side-by-side PNG")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per image")
    args = parser.parse_args(argv)

    manifest = json.loads((args.data / "manifest.json").read_text(encoding="utf-8"))
    test = manifest["stems"]["test"]
    stems = args.stems or [test[len(test) * k // 3 + len(test) // 6] for k in range(3)]
    rows = []
    first_call = None
    for stem in stems:
        sketch = np.asarray(Image.open(args.data / "test" / "sketch" / f"{stem}.png").convert("RGB"))
        truth = np.asarray(Image.open(args.data / "test" / "color" / f"{stem}.png").convert("RGB"))
        hints = stroke_hints(sketch, truth)
        t0 = time.perf_counter()
        result = gmic_smart_colour(sketch, hints)
        if first_call is None:
            first_call = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(args.repeat):
            gmic_smart_colour(sketch, hints)
        per_image = (time.perf_counter() - t0) / max(1, args.repeat)
        err = np.abs(result.astype(np.int16) - truth.astype(np.int16)).mean()
        print(
            f"{stem}: {int((hints[..., 3] > 0).sum())} hint px, {per_image * 1000:.1f} ms/image, "
            f"mean |result - truth| {err:.1f}/255"
        )
        rows.append(np.concatenate([sketch, _hints_on_grey(hints), result, truth], axis=1))
    print(f"first call (includes G'MIC start-up): {first_call * 1000:.1f} ms")
    sheet = np.concatenate(rows, axis=0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(args.out)
    print(f"wrote {args.out} (columns: sketch | hints | G'MIC | truth)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
