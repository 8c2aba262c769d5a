"""Real colouring-book pages, by eye: black-and-white clip art the models never saw, coloured.

Usage (from the repository root; the drawings come from Debian's ``openclipart-svg`` package,
unpacked as in docs/datasets.md)::

    python benchmarks/colouring_book.py --svg-root /work/data/oc/usr/share/openclipart/svg \\
        --v1-model data/models/v1.safetensors --out docs/images/v2/colouring-book.png

Each row: the drawing (rendered with resvg at ``--size`` px on white) | v1 without hints | the
model without hints | the model with three point hints. The pages are held-out OpenClipart
drawings that ``scripts/prepare_sources.py`` dropped as greyscale (they have no colours to
learn from) and assigned to the test split, so no model was trained on them. The point hints are
chosen without looking at any output: the centroids of the three largest closed regions of the
drawing that do not touch the border, with fixed colours (red, yellow, blue in that order), so
the figure is reproducible. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

#: Held-out black-and-white drawings (test split, dropped as greyscale; docs/datasets.md).
PAGES = (
    "food/meats_and_eggs/hamburger_bw.svg",
    "signs_and_symbols/hazard/poison_bw_jean-victor_ba_01.svg",
    "food/desserts/pie_pumpkin_bw.svg",
    "recreation/sports/baseball_glove_bw_ganson.svg",
    "food/desserts/glace_06_bw_jean-victor__01.svg",
    "food/beverages/pop_can_bw.svg",
)
HINT_COLOURS = ("#d23c3c", "#f0c828", "#3c64d2")


def render(path: Path, size: int) -> Image.Image:
    import resvg_py

    png = resvg_py.svg_to_bytes(svg_string=path.read_text(), width=size, height=size, dpi=96.0)
    with Image.open(io.BytesIO(bytes(png))) as im:
        rgba = im.convert("RGBA")
    page = Image.new("RGB", rgba.size, "white")
    page.paste(rgba, mask=rgba.getchannel("A"))
    square = Image.new("RGB", (max(page.size),) * 2, "white")
    square.paste(page, ((square.width - page.width) // 2, (square.height - page.height) // 2))
    return square


def region_points(sketch: Image.Image, count: int = 3) -> list[str]:
    """``--hint``-style points at the centroids of the largest closed regions off the border."""
    from skimage.measure import label, regionprops

    grey = np.asarray(sketch.convert("L"))
    regions = label(grey > 128, connectivity=1)
    h, w = grey.shape
    border = set(np.unique(np.concatenate([regions[0], regions[-1], regions[:, 0], regions[:, -1]])))
    props = sorted(
        (p for p in regionprops(regions) if p.label not in border and p.area >= 0.002 * h * w),
        key=lambda p: -p.area,
    )
    points = []
    for p, colour in zip(props[:count], HINT_COLOURS, strict=False):
        ys, xs = np.nonzero(regions == p.label)
        k = int(np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2))  # a pixel inside it
        points.append(f"{xs[k] / w:.4f},{ys[k] / h:.4f},{colour}")
    return points


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--svg-root", type=Path, required=True)
    parser.add_argument("--model", default=None, help="the model (default: the bundled model)")
    parser.add_argument("--v1-model", default=None, help="also show this model without hints")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    import sketchcolor

    model = sketchcolor.Colorizer(args.model, device="cpu")
    v1 = sketchcolor.Colorizer(args.v1_model, device="cpu") if args.v1_model else None
    rows = []
    for rel in PAGES:
        sketch = render(args.svg_root / rel, args.size)
        points = region_points(sketch)
        row = [sketch]
        if v1 is not None:
            row.append(v1(sketch, seed=args.seed).images[0])
        row.append(model(sketch, seed=args.seed).images[0])
        hinted = model(sketch, points=points, seed=args.seed).images[0].copy()
        draw = ImageDraw.Draw(hinted)
        for p in points:  # mark where the points were given
            x, y, colour = p.split(",")
            cx, cy = float(x) * hinted.width, float(y) * hinted.height
            draw.ellipse((cx - 4, cy - 4, cx + 4, cy + 4), outline="black", fill=colour)
        row.append(hinted)
        rows.append(row)
        print(f"{rel}: points {' '.join(points) or '(no closed region)'}")
    s, cols = args.size, len(rows[0])
    sheet = Image.new("RGB", (cols * s + (cols - 1) * 4, len(rows) * s + (len(rows) - 1) * 4), "white")
    for r, row in enumerate(rows):
        for c, im in enumerate(row):
            sheet.paste(im.resize((s, s)), (c * (s + 4), r * (s + 4)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # A 256-colour PNG (median cut, no dithering): a third of the bytes of the RGB sheet, which
    # keeps the repository light; by eye the same figure.
    sheet.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        args.out, optimize=True
    )
    columns = (
        "drawing | v1, no hints | model, no hints | model, 3 points"
        if v1
        else "drawing | no hints | 3 points"
    )
    print(f"wrote {args.out} ({columns})")


if __name__ == "__main__":
    main()
