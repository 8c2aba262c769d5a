"""Render the bundled examples: held-out OpenMoji sketches with user-like hint scribbles.

Usage:
    python scripts/make_examples.py --package data/package --out examples [--size 512]

``--package`` is the unpacked ``openmoji@17.0.0`` npm package (``npm pack openmoji@17.0.0``).
The chosen emoji are in the held-out test split of scripts/prepare_openmoji.py (split by drawing),
so the bundled model never trained on them. For each, the line art is rendered to ``NAME.png``
(greyscale) and ``NAME.hints.png`` gets one short stroke per large flat-colour area (up to 8),
placed at the area's most interior point and coloured with its median true colour: what a user
scribbling flat colours would draw. Needs the ``data`` extra (resvg-py).
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage
from skimage.measure import label

#: name -> OpenMoji hexcode (all three in the held-out test split).
EXAMPLES = {"fox": "1F98A", "taxi": "1F695", "strawberry": "1F353"}
MAX_STROKES = 8


def render(svg: Path, size: int) -> Image.Image:
    import resvg_py

    png = resvg_py.svg_to_bytes(svg_string=svg.read_text(encoding="utf-8"), width=size, height=size)
    rgba = Image.open(io.BytesIO(bytes(png))).convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def scribbles(sketch: np.ndarray, truth: np.ndarray, size: int) -> Image.Image:
    """One short stroke per large flat-colour area, in its median true colour, on transparency.

    Areas are connected pixels of (nearly) the same true colour away from the lines; OpenMoji
    outlines often have gaps, so line-enclosed regions alone would merge with the background.
    White paper and black ink are never hinted.
    """
    quant = (truth // 24).astype(np.int32)
    index = quant[..., 0] * 10000 + quant[..., 1] * 100 + quant[..., 2]
    index[sketch < 150] = -1
    areas_map = label(index, background=-1, connectivity=1)
    areas = np.bincount(areas_map.ravel())
    areas[0] = 0
    layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    width = max(3, size // 60)
    strokes = 0
    for r in np.argsort(areas)[::-1]:
        if strokes == MAX_STROKES or areas[r] < (size / 40) ** 2:
            break
        inside = areas_map == r
        colour = np.median(truth[inside], axis=0)
        if colour.min() > 235 or colour.max() < 40:  # paper or ink
            continue
        depth = ndimage.distance_transform_edt(inside)
        y, x = np.unravel_index(np.argmax(depth), depth.shape)
        reach = int(min(depth[y, x] * 0.6, size / 16))
        draw.line((x - reach, y, x + reach, y), fill=(*(int(c) for c in colour), 255), width=width)
        strokes += 1
    return layer


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--package", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("examples"))
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, code in EXAMPLES.items():
        sketch = render(args.package / "black" / "svg" / f"{code}.svg", args.size).convert("L")
        truth = render(args.package / "color" / "svg" / f"{code}.svg", args.size)
        sketch.save(args.out / f"{name}.png", optimize=True)
        hints = scribbles(np.asarray(sketch), np.asarray(truth), args.size)
        hints.save(args.out / f"{name}.hints.png", optimize=True)
        print(f"{name}: {args.out / f'{name}.png'}, {args.out / f'{name}.hints.png'}")


if __name__ == "__main__":
    main()
