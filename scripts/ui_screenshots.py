"""Take the screenshots of docs/ui.md: the `sketchcolor ui` page in headless Chromium.

Usage: python scripts/ui_screenshots.py [--out docs/images]

Needs the ``ui`` and ``ui-test`` extras and Debian's Chromium (``apt-get install chromium``;
``SKETCHCOLOR_CHROMIUM`` names another binary). Serves the page on 127.0.0.1 with the bundled
model, paints hints on examples/fox.png, colourises four variations and saves small PNGs
(256-colour palettes) as docs/images/ui-*.png.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import socket
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
#: Hint strokes on examples/fox.png: (colour, points in sketch pixels).
STROKES = [
    ("#e8892c", [(215, 222), (250, 215), (290, 222)]),
    ("#e8892c", [(120, 250), (130, 300)]),
    ("#e8892c", [(390, 250), (380, 300)]),
    ("#f0c4a2", [(225, 420), (258, 425), (290, 420)]),
    ("#7a5236", [(125, 100), (140, 140)]),
    ("#7a5236", [(385, 100), (370, 140)]),
]


def save_small(png: bytes, path: Path) -> None:
    """A screenshot as a 256-colour PNG (a few tens of KB)."""
    img = Image.open(io.BytesIO(png)).convert("RGB")
    img.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)
    print(f"{path} ({path.stat().st_size // 1024} KB)")


def sketch_box_on_screen(page, size: tuple[int, int]) -> tuple[float, float, float]:
    """(left, top, scale) of the sketch on the screen: centred in the editor, at its shown zoom."""
    box = page.locator("#canvas").bounding_box()
    zoom = re.search(r"(\d+)%", page.locator("#canvas").inner_text())
    scale = int(zoom.group(1)) / 100 if zoom else 1.0
    w, h = size
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    return cx - w / 2 * scale, cy - h / 2 * scale, scale


def pick_brush_colour(page, colour: str) -> None:
    page.click("#canvas button[aria-label='Color']")
    page.wait_for_timeout(300)
    # The colour menu: the picker's hex field takes a typed colour.
    swatch = page.locator(f"#canvas button[style*='{hex_to_rgb_css(colour)}']")
    if swatch.count():
        swatch.first.click()
    page.keyboard.press("Escape")
    page.wait_for_timeout(200)


def hex_to_rgb_css(colour: str) -> str:
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    args = parser.parse_args()
    chromium = os.environ.get("SKETCHCOLOR_CHROMIUM") or shutil.which("chromium")
    if chromium is None:
        print("no Chromium: apt-get install chromium", file=sys.stderr)
        return 1
    from playwright.sync_api import sync_playwright

    from sketchcolor.cli.ui import colorize_files
    from sketchcolor.ui import Studio, build_app, launch

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fox = ROOT / "examples" / "fox.png"
    with tempfile.TemporaryDirectory() as tmp:
        app = build_app(Studio(colorize_files, tmp, device="cpu"))
        url = launch(app, "127.0.0.1", port)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium, headless=True, args=FLAGS)
                page = browser.new_page(viewport={"width": 1280, "height": 1000})
                page.set_default_timeout(60_000)
                page.goto(url)
                page.wait_for_selector("#sketch-file input[type=file]", state="attached")
                # A refused upload: the message in the page.
                bad = Path(tmp) / "notes.png"
                bad.write_text("not a picture")
                page.set_input_files("#sketch-file input[type=file]", str(bad))
                page.wait_for_function("document.querySelector('#status').innerText.includes('Refused')")
                page.wait_for_timeout(500)
                save_small(
                    page.screenshot(clip={"x": 0, "y": 0, "width": 1280, "height": 330}),
                    args.out / "ui-refused.png",
                )
                page.wait_for_selector("#sketch-file input[type=file]", state="attached")
                page.set_input_files("#sketch-file input[type=file]", str(fox))
                page.wait_for_function("document.querySelector('#status').innerText.includes('512x512')")
                page.wait_for_timeout(4000)  # the canvas sets itself up
                left, top, scale = sketch_box_on_screen(page, Image.open(fox).size)
                for colour, points in STROKES:
                    pick_brush_colour(page, colour)
                    x, y = points[0]
                    page.mouse.move(left + x * scale, top + y * scale)
                    page.mouse.down()
                    for x, y in points[1:]:
                        page.mouse.move(left + x * scale, top + y * scale, steps=3)
                    page.mouse.up()
                page.click("#canvas button[aria-label='Color']")
                page.wait_for_timeout(400)
                canvas_box = page.locator("#canvas").bounding_box()
                save_small(page.screenshot(clip=canvas_box), args.out / "ui-canvas.png")
                page.keyboard.press("Escape")
                page.mouse.click(5, 5)
                # Four variations.
                page.locator("#variations-count input[type=number]").fill("4")
                page.locator("#variations-count input[type=number]").press("Enter")
                page.click("#colourise")
                page.wait_for_function(
                    "document.querySelector('#status').innerText.includes('seed 0, 1, 2, 3')", timeout=180_000
                )
                page.wait_for_timeout(1500)
                save_small(page.screenshot(full_page=True), args.out / "ui-page.png")
                # Layers: flats and hints, no lines; the second variation picked.
                page.locator("#variations img").nth(1).click()
                page.wait_for_function(
                    "document.querySelector('#status').innerText.includes('Picked seed 1')"
                )
                page.locator("#layers").get_by_label("Lines").uncheck()
                page.locator("#layers").get_by_label("Hints").check()
                page.wait_for_timeout(1500)
                right = page.locator("#result").bounding_box()
                layers = page.locator("#layers").bounding_box()
                clip = {
                    "x": right["x"] - 10, "y": right["y"] - 10, "width": right["width"] + 20,
                    "height": layers["y"] + layers["height"] - right["y"] + 20,
                }  # fmt: skip
                save_small(page.screenshot(clip=clip), args.out / "ui-layers.png")
                # The advanced panel, with the CLI's defaults.
                page.get_by_text("Advanced (the command line's defaults)").click()
                page.locator("#pin-hints").wait_for(state="visible")
                page.wait_for_timeout(1500)
                go = page.locator("#colourise").bounding_box()
                seed = page.locator("#seed").bounding_box()
                bottom = page.locator("#pin-hints").bounding_box()
                clip = {
                    "x": seed["x"] - 12, "y": go["y"] - 12, "width": go["x"] + go["width"] - seed["x"] + 24,
                    "height": bottom["y"] + bottom["height"] - go["y"] + 24,
                }  # fmt: skip
                save_small(page.screenshot(clip=clip, full_page=True), args.out / "ui-advanced.png")
                browser.close()
        finally:
            app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
