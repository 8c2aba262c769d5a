"""Hints do what the docs say: paper stays paper under guidance, hints colour open shapes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from sketchcolor.color import rgb_to_lab
from sketchcolor.compose import carry_to_full_size, sketch_lightness_u8
from sketchcolor.conditioning import hinted_region_mask
from sketchcolor.config import ScheduleConfig
from sketchcolor.denoiser import Denoiser, GuidedDenoiser
from sketchcolor.metrics import ciede2000
from sketchcolor.schedules import NoiseSchedule

ROOT = Path(__file__).resolve().parents[1]


def open_box(size: int = 128, gap: int = 7) -> Image.Image:
    """A box outline with a gap in its right side, on white (the shape is open to the page)."""
    img = Image.new("RGB", (size, size), "white")
    d = ImageDraw.Draw(img)
    d.rectangle((size * 0.25, size * 0.25, size * 0.75, size * 0.75), outline="black", width=3)
    d.rectangle((size * 0.74, size / 2 - gap / 2, size * 0.8, size / 2 + gap / 2), fill="white")
    return img


def test_guidance_weight_limits_where_it_acts():
    class FromCond(torch.nn.Module):
        def forward(self, x_t, t, cond):
            return cond[:, :1].expand_as(x_t) * 1.0

    den = Denoiser(FromCond(), NoiseSchedule(ScheduleConfig()), "x0")
    x_t = torch.zeros(1, 3, 2, 2)
    full, uncond = torch.ones(1, 2, 2, 2), torch.zeros(1, 2, 2, 2)
    weight = torch.tensor([[[[1.0, 0.0], [0.0, 0.5]]]])
    x0, _ = GuidedDenoiser(den, [(uncond, 3.0, weight)])(x_t, torch.tensor([10]), full)
    expected = 1.0 + 2.0 * weight  # full + (s - 1) * w * (full - uncond)
    assert torch.allclose(x0, expected.expand_as(x0))


def test_hinted_region_mask_leaves_the_background_out():
    img = Image.new("L", (64, 64), 255)
    ImageDraw.Draw(img).ellipse((16, 16, 48, 48), outline=0, width=2)
    sketch = torch.from_numpy(np.asarray(img, np.float32) / 255.0).view(1, 1, 64, 64)
    hints = torch.zeros(1, 1, 64, 64)
    hints[0, 0, 32, 32] = 1  # inside the circle
    hints[0, 0, 2, 2] = 1  # on the page
    mask = hinted_region_mask(sketch, hints)
    assert mask[0, 0, 30, 34] == 1  # the whole hinted circle
    assert mask[0, 0, 2, 2] == 1 and mask[0, 0, 60, 60] == 0  # the page: only the hint itself


def test_hint_in_an_open_shape_colours_the_shape_not_the_page():
    sketch = open_box()
    sketch_u8 = torch.from_numpy(np.asarray(sketch).copy()).permute(2, 0, 1)[None]
    sketch_l = sketch_lightness_u8(sketch_u8)
    small = torch.nn.functional.interpolate(sketch_l, size=(32, 32), mode="area")
    lab_small = torch.zeros(1, 3, 32, 32)
    lab_small[:, 0] = 100.0  # the model proposes white paper everywhere
    hint_rgb = torch.zeros(1, 3, 128, 128)
    hint_mask = torch.zeros(1, 1, 128, 128)
    hint_rgb[0, :, 50:54, 50:60] = torch.tensor([0.95, 0.85, 0.1]).view(3, 1, 1)  # yellow, in the box
    hint_mask[0, 0, 50:54, 50:60] = 1
    picture, _ = carry_to_full_size(lab_small, small, sketch_l, sketch_u8, hints=(hint_rgb, hint_mask))
    inside = picture[40:80, 40:80].reshape(-1, 3).astype(int)
    outside = picture[5:25, 5:120].reshape(-1, 3).astype(int)
    assert np.abs(inside.mean(0) - [242, 217, 26]).max() < 12  # the box takes the hint
    assert outside.min() >= 250  # the page stays white


@pytest.fixture(scope="module")
def bundled():
    from sketchcolor.pipeline import load_model

    return load_model(None, "cpu")


def _run(bundle, name: str, **settings):
    from sketchcolor.config import SampleConfig
    from sketchcolor.pipeline import colorize

    sketch = ROOT / "examples" / f"{name}.png"
    hints = ROOT / "examples" / f"{name}.hints.png"
    result = colorize(sketch, hints, bundle, SampleConfig(**settings), seed=0)
    return np.asarray(result.image.convert("RGB")), result.hints


def _hint_error(picture: np.ndarray, layer) -> float:
    m = layer.mask[0, 0].bool()
    pred = torch.from_numpy(picture.copy()).permute(2, 0, 1).float()[None] / 255.0
    lab_p = rgb_to_lab(pred)[0][:, m]
    lab_h = rgb_to_lab(layer.rgb)[0][:, m]
    return float(ciede2000(lab_p.reshape(1, 3, 1, -1), lab_h.reshape(1, 3, 1, -1)).mean())


def test_paper_stays_paper_under_guidance_with_the_bundled_model(bundled):
    plain, layer = _run(bundled, "fox")
    strong, _ = _run(bundled, "fox", guidance=3.0)
    sketch = np.asarray(Image.open(ROOT / "examples" / "fox.png").convert("RGB"))
    paper = (sketch.min(axis=2) > 250) & (plain.min(axis=2) > 250)  # paper at guidance 1
    assert paper.mean() > 0.2
    assert np.percentile(strong[paper].min(axis=1), 1) >= 248  # still paper at guidance 3
    assert _hint_error(strong, layer) <= _hint_error(plain, layer) + 0.5


def test_taxi_example_takes_its_yellow_hint(bundled):
    picture, layer = _run(bundled, "taxi")
    hinted = int(((layer.rgb[0, 2] < 0.4) & (layer.mask[0, 0] > 0)).sum())  # the yellow dash
    r, g, b = (picture[..., c].astype(int) for c in range(3))
    yellow = (r > 200) & (g > 170) & (b < 110)
    # The car body around the dash, not only the hinted pixels, is yellow.
    assert hinted > 0 and yellow.sum() > 15 * hinted, (int(yellow.sum()), hinted)
