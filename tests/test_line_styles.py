"""Many line styles: the training augmentation, sketch normalisation, gap-closed region fill."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from sketchcolor.conditioning import (
    label_closed_regions,
    normalize_sketch,
    region_fill,
    sample_training_hints,
)
from sketchcolor.config import HintConfig, LineStyleConfig
from sketchcolor.data import augment_lines
from sketchcolor.io import image_to_tensor

OFF = LineStyleConfig(
    p_width=0, p_light=0, p_gaps=0, p_jitter=0, p_blur=0, p_paper=0, p_noise=0, p_jpeg=0, p_any=1.0
)


def ring(size: int = 64, gap: int = 0, width: int = 3) -> torch.Tensor:
    """A black circle outline on white, (1, 1, S, S) lightness; ``gap`` px cut out on the right."""
    img = Image.new("L", (size, size), 255)
    d = ImageDraw.Draw(img)
    d.ellipse((size * 0.2, size * 0.2, size * 0.8, size * 0.8), outline=0, width=width)
    if gap:
        d.rectangle((size * 0.7, size / 2 - gap / 2, size, size / 2 + gap / 2), fill=255)
    return image_to_tensor(img)


def only(**kwargs) -> LineStyleConfig:
    return dataclasses.replace(OFF, **kwargs)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_nothing_enabled_is_identity():
    sketch = ring()
    out, gaps = augment_lines(sketch, OFF, gen())
    assert torch.equal(out, sketch) and gaps is None
    out, gaps = augment_lines(sketch, dataclasses.replace(LineStyleConfig(), p_any=0.0), gen())
    assert torch.equal(out, sketch) and gaps is None


def test_augmentation_is_a_function_of_the_generator():
    sketch = ring()
    a, _ = augment_lines(sketch, LineStyleConfig(p_any=1.0), gen(4))
    b, _ = augment_lines(sketch, LineStyleConfig(p_any=1.0), gen(4))
    assert torch.equal(a, b)
    assert any(
        not torch.equal(a, augment_lines(sketch, LineStyleConfig(p_any=1.0), gen(s))[0]) for s in range(5, 9)
    )


def ink(x: torch.Tensor) -> float:
    return float((1 - x).sum())


def test_width_changes_make_lines_thicker_or_thinner():
    sketch = ring(width=4)
    inks = {round(ink(augment_lines(sketch, only(p_width=1.0), gen(s))[0])) for s in range(12)}
    assert min(inks) < ink(sketch) < max(inks)


def test_gaps_erase_line_pixels_and_are_reported():
    sketch = ring()
    out, gaps = augment_lines(sketch, only(p_gaps=1.0, max_gaps=3, gap_radius=3.0), gen(1))
    assert gaps is not None and gaps.sum() > 0
    erased = (sketch < 0.5) & (out > 0.5)
    assert erased.any()
    assert bool((gaps[erased] == 1).all())  # every erased line pixel lies in a reported gap


def test_light_lines_and_tinted_paper():
    sketch = ring()
    light, _ = augment_lines(sketch, only(p_light=1.0, light_min=0.7), gen(2))
    assert light.min() > 0.0 and light.min() <= 0.7 + 1e-6 and light.max() == 1.0
    paper, _ = augment_lines(sketch, only(p_paper=1.0, paper_min=0.85), gen(3))
    assert 0.85 <= float(paper.max()) < 1.0


def test_noise_blur_jitter_and_jpeg_keep_range_and_shape():
    sketch = ring()
    for cfg in (
        only(p_noise=1.0),
        only(p_blur=1.0),
        only(p_jitter=1.0, jitter=2.0),
        only(p_jpeg=1.0, jpeg_min=10),
    ):
        out, _ = augment_lines(sketch, cfg, gen(5))
        assert out.shape == sketch.shape and 0.0 <= out.min() and out.max() <= 1.0
        assert not torch.equal(out, sketch)


def test_normalize_makes_grey_lines_black_and_tinted_paper_white():
    sketch = ring()
    washed = 0.9 - (1 - sketch) * 0.35  # lines at L 0.55, paper at 0.9
    norm = normalize_sketch(washed)
    assert float(norm.min()) == 0.0 and float(norm.max()) == 1.0
    assert torch.allclose(norm, sketch, atol=0.02)
    # Ink already black on white paper: unchanged.
    assert torch.allclose(normalize_sketch(sketch), sketch, atol=1e-6)
    # A blank or almost uniform page is left alone (nothing to stretch).
    blank = torch.full((1, 1, 32, 32), 0.93)
    assert torch.equal(normalize_sketch(blank), blank)


def test_normalize_is_per_image():
    a, b = ring(), 0.9 - (1 - ring()) * 0.35
    both = normalize_sketch(torch.cat([a, b]))
    assert torch.allclose(both[0], normalize_sketch(a)[0]) and torch.allclose(both[1], normalize_sketch(b)[0])


def test_gap_closing_keeps_a_broken_region_apart():
    broken = ring(gap=4)[0, 0].numpy()
    plain = label_closed_regions(broken, gap=0)
    closed = label_closed_regions(broken, gap=3)
    centre, corner = (32, 32), (2, 2)
    assert plain[centre] == plain[corner]  # leaks into the page through the gap
    assert closed[centre] != closed[corner] and closed[centre] > 0


def test_region_fill_with_gap_colours_only_the_region():
    sketch = ring(gap=4)
    hint_lab = torch.zeros(1, 3, 64, 64)
    hint_mask = torch.zeros(1, 1, 64, 64)
    hint_lab[0, :, 32, 32] = torch.tensor([50.0, 60.0, 40.0])
    hint_mask[0, 0, 32, 32] = 1
    _, leaky = region_fill(sketch, hint_lab, hint_mask)
    _, held = region_fill(sketch, hint_lab, hint_mask, gap=3.0)
    assert leaky[0, 0, 2, 2] == 1  # floods the page
    assert held[0, 0, 2, 2] == 0 and held[0, 0, 32, 32] == 1


def test_first_stroke_starts_where_asked():
    rgb = torch.rand(3, 32, 32, generator=gen(0))
    sketch = torch.ones(1, 32, 32)
    starts = torch.tensor([5 * 32 + 7])  # pixel (y=5, x=7)
    config = HintConfig(p_none=0.0, max_strokes=1, p_dot=1.0, min_width=1, max_width=1)
    _, mask = sample_training_hints(rgb, sketch, config, gen(3), first_starts=starts)
    assert mask[0, 5, 7] == 1 and mask.sum() == 1
    # Starts on a line are ignored (hints never cover lines): any free pixel may be chosen then.
    lined = sketch.clone()
    lined[0, 5, 7] = 0.0
    _, mask = sample_training_hints(rgb, lined, config, gen(3), first_starts=starts)
    assert mask.sum() == 1 and mask[0, 5, 7] == 0


@pytest.mark.parametrize("normalize", [False, True])
def test_training_samples_with_styles_and_references(normalize):
    from sketchcolor.config import ConditioningConfig, DataConfig, ReferenceConfig
    from sketchcolor.data import PreparedData, TrainingSet

    from .conftest import tiny_config

    n = 4
    colour = np.full((n, 3, 40, 40), 255, np.uint8)
    colour[:, 0, 10:30, 10:30] = 30
    sketch = np.stack([(ring(40)[0].numpy() * 255).astype(np.uint8) for _ in range(n)])
    data = PreparedData(colour, sketch, [f"p{i}" for i in range(n)], "d", [])
    layout = ConditioningConfig(
        region_fill=True, region_gap=2.0, normalize_sketch=normalize, reference=True, reference_size=16
    )
    config = tiny_config(conditioning=layout)
    ds = TrainingSet(
        data, range(n), config, HintConfig(), DataConfig(), lines=LineStyleConfig(p_any=1.0),
        reference=ReferenceConfig(p_reference=0.5),
    )  # fmt: skip
    present = []
    for i in range(n * 4):
        item = ds[(i % n, 100 + i)]
        assert item["cond"].shape == (len(layout.channels), 32, 32)
        assert item["reference"].shape == (4, 16, 16) and item["reference_lab"].shape == (3, 16, 16)
        flag = float(item["reference"][3, 0, 0])
        present.append(flag)
        if flag == 0:
            assert torch.count_nonzero(item["reference"]) == 0
    assert 0 < sum(present) < len(present)
    assert torch.equal(ds[(1, 7)]["cond"], ds[(1, 7)]["cond"])  # a pure function of the key
