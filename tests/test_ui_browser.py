"""`sketchcolor ui` in a real browser: Debian's headless Chromium, driven through Playwright.

The server runs in this process on 127.0.0.1 (a free port) with the bundled model. The browser
uploads a sketch, paints a stroke with mouse events on the canvas, presses Colourise and reads the
result back; a non-image upload must give a message in the page while the server goes on.

Skipped, with the reason, when Chromium (``apt-get install chromium``), Playwright's Python
package (the ``ui-test`` extra; never ``playwright install``) or Gradio (the ``ui`` extra) is
missing, unless ``SKETCHCOLOR_BROWSER_TESTS=required`` (set by .ci/run): then they fail.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from sketchcolor.cli import main

pytestmark = [
    pytest.mark.browser,
    # Deprecation notes from Gradio's own use of pandas (not ours).
    pytest.mark.filterwarnings("ignore::DeprecationWarning:gradio"),
    pytest.mark.filterwarnings("ignore::FutureWarning:gradio"),
]

CHROMIUM = (
    os.environ.get("SKETCHCOLOR_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
)
#: Flags that work headless, as root, without a GPU or any network but loopback.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SIZE = (256, 192)  # W, H of the test sketch


def missing() -> str | None:
    if CHROMIUM is None:
        return "no Chromium browser (apt-get install chromium, or set SKETCHCOLOR_CHROMIUM)"
    if importlib.util.find_spec("playwright") is None:
        return 'Playwright\'s Python package is not installed (pip install "sketchcolor[ui-test]")'
    if importlib.util.find_spec("gradio") is None:
        return 'Gradio is not installed (pip install "sketchcolor[ui]")'
    return None


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    reason = missing()
    if reason is not None:
        if os.environ.get("SKETCHCOLOR_BROWSER_TESTS") == "required":
            pytest.fail(f"browser tests are required here, but: {reason}")
        pytest.skip(reason)
    from sketchcolor.cli.ui import colorize_files
    from sketchcolor.ui import Studio, build_app, launch

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    studio = Studio(colorize_files, tmp_path_factory.mktemp("ui-work"), device="cpu")
    app = build_app(studio)
    url = launch(app, "127.0.0.1", port)
    try:
        yield url
    finally:
        app.close()


@pytest.fixture(scope="module")
def browser(server: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any, server: str) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1000, "height": 900})
    page = context.new_page()
    page.set_default_timeout(90_000)  # generous: CI machines may be busy
    page.goto(server)
    page.wait_for_selector("#sketch-file input[type=file]", state="attached")
    try:
        yield page
    finally:
        context.close()


def circle_sketch(path: Path) -> Path:
    """A closed outline: the bundled model fills a line-enclosed region that holds hints with them."""
    img = Image.new("RGB", SIZE, "white")
    ImageDraw.Draw(img).ellipse((40, 20, 216, 172), outline="black", width=4)
    img.save(path)
    return path


def status(page: Any) -> str:
    return str(page.inner_text("#status"))


def wait_status(page: Any, text: str, timeout_ms: int = 180_000) -> str:
    page.wait_for_function(
        "t => document.querySelector('#status').innerText.includes(t)", arg=text, timeout=timeout_ms
    )
    return status(page)


def paint_stroke(page: Any) -> None:
    """Drag the brush across the middle of the canvas until the stroke shows on it.

    The canvas takes a moment to set itself up after the sketch arrives; a stroke painted before
    is lost, so it is painted again until red appears in the canvas's own pixels.
    """
    canvas = page.locator("#canvas canvas").first
    for _ in range(15):
        box = canvas.bounding_box()
        cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(cx - 30, cy)
        page.mouse.down()
        for k in range(1, 5):
            page.mouse.move(cx - 30 + 15 * k, cy)
        page.mouse.up()
        shot = np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("RGB"), dtype=int)
        red = (shot[..., 0] > 150) & (shot[..., 1] < 90) & (shot[..., 2] < 90)
        if red.sum() > 50:
            return
        time.sleep(1.0)
    raise AssertionError("the brush stroke never appeared on the canvas")


def fetch(page: Any, url: str) -> bytes:
    return bytes(page.request.get(url).body())


def test_a_painted_stroke_colours_its_region_as_the_cli_does(page, tmp_path, capsys):
    sketch = circle_sketch(tmp_path / "circle.png")
    page.set_input_files("#sketch-file input[type=file]", str(sketch))
    wait_status(page, "256x192")
    paint_stroke(page)
    page.click("#colourise")
    message = wait_status(page, "seed 0")
    if "canvas is empty" in message:
        # On a very busy machine the editor can still be passing the fresh stroke on when the
        # button is pressed; the page says so, and pressing again (as a user would) uses it.
        time.sleep(5.0)
        page.click("#colourise")
        message = wait_status(page, "with hints")
    assert "with hints" in message, message
    page.wait_for_selector("#result img")
    shown = fetch(page, page.get_attribute("#result img", "src"))
    result = np.asarray(Image.open(io.BytesIO(shown)).convert("RGB"), dtype=int)
    assert result.shape == (SIZE[1], SIZE[0], 3)
    # The stroke ran through the middle of the sketch: red dominates there (and fills the circle).
    w, h = SIZE
    for x, y in ((w // 2, h // 2), (w // 2 - 5, h // 2), (w // 2, h // 2 - 40)):
        r, g, b = result[y - 2 : y + 3, x - 2 : x + 3].reshape(-1, 3).mean(axis=0)
        assert r > 150 and r > g + 80 and r > b + 80, (x, y, r, g, b)
    assert (result[5, 5] > 240).all()  # the paper outside stays white
    # The shown picture carries the CLI's record, and the downloaded hints file with the shown seed
    # gives the same pixels through `sketchcolor colorize`.
    assert json.loads(Image.open(io.BytesIO(shown)).text["sketchcolor"])["seed"] == 0
    links = [a.get_attribute("href") for a in page.locator("#downloads a").all()]
    hints_url = next(u for u in links if u and u.split("?")[0].endswith(".hints.png"))
    hints = tmp_path / "downloaded.hints.png"
    hints.write_bytes(fetch(page, hints_url))
    out = tmp_path / "cli.png"
    code = main(
        ["colorize", str(sketch), "--hints", str(hints), "--seed", "0", "-o", str(out), "--device", "cpu"]
    )
    assert code == 0, capsys.readouterr().err
    assert np.array_equal(np.asarray(Image.open(out).convert("RGB"), dtype=int), result)


def test_a_non_image_is_a_message_in_the_page_and_the_server_goes_on(page, tmp_path):
    fake = tmp_path / "notes.png"
    fake.write_text("this is not a picture")
    page.set_input_files("#sketch-file input[type=file]", str(fake))
    assert "notes.png: not an image file" in wait_status(page, "Refused")
    page.wait_for_selector("#sketch-file input[type=file]", state="attached")  # ready for another
    page.set_input_files("#sketch-file input[type=file]", str(circle_sketch(tmp_path / "circle.png")))
    wait_status(page, "256x192")
    page.click("#colourise")  # an empty canvas colourises without hints
    assert "without hints" in wait_status(page, "seed 0")
