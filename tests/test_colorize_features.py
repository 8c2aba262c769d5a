"""Any size, every hint format, flats, variations, step GIFs and reproduction (issue: colorize features)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from skimage.measure import label

from sketchcolor.checkpoint import load_checkpoint
from sketchcolor.cli import main
from sketchcolor.conditioning import HintLayer
from sketchcolor.config import SampleConfig
from sketchcolor.errors import HintError
from sketchcolor.io import image_to_tensor, read_png_text, tensor_to_image
from sketchcolor.pipeline import build_hints, colorize

from .conftest import draw_hints, draw_sketch


@pytest.fixture
def bundle(tiny_checkpoint):
    return load_checkpoint(tiny_checkpoint)


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_large_sketch_keeps_size_and_line_darkness(bundle):
    sketch = draw_sketch((2048, 1536))
    result = colorize(sketch, draw_hints((2048, 1536)), bundle, SampleConfig(steps=2), keep_flats=True)
    assert result.image.size == (2048, 1536)
    out = np.asarray(result.image).astype(int)
    ref = np.asarray(sketch).astype(int)
    lines = ref.max(axis=2) < 128
    assert lines.sum() > 10_000
    assert (out[lines] <= ref[lines] + 1).all()
    assert result.flats[0].size == (2048, 1536)


def test_flat_gives_one_colour_per_region(bundle):
    sketch = draw_sketch((192, 128))
    result = colorize(
        sketch, draw_hints((192, 128)), bundle, SampleConfig(steps=2), flat=True, keep_flats=True
    )
    flats = np.asarray(result.flats[0]).reshape(-1, 3)
    lightness = np.asarray(sketch.convert("L")) / 255.0
    regions = label(lightness >= 0.6, connectivity=1).reshape(-1)
    for r in np.unique(regions[regions > 0]):
        colours = np.unique(flats[regions == r], axis=0)
        assert len(colours) == 1, f"region {r} has {len(colours)} colours"


def test_default_is_smooth_where_model_is_not_uniform(bundle):
    # A random model's colours vary inside regions, so the default keeps them smooth (no snapping).
    sketch = draw_sketch((192, 128))
    smooth = np.asarray(colorize(sketch, None, bundle, SampleConfig(steps=2), keep_flats=True).flats[0])
    flat = np.asarray(
        colorize(sketch, None, bundle, SampleConfig(steps=2), flat=True, keep_flats=True).flats[0]
    )
    assert colorize(sketch, None, bundle, SampleConfig(steps=2)).flats == []  # only when asked for
    assert not np.array_equal(smooth, flat)


def _rgba_result(bundle, layer: HintLayer, sketch):
    rgba = tensor_to_image(layer.to_rgba())
    return np.asarray(colorize(sketch, rgba, bundle, SampleConfig(steps=2), seed=3).image)


def test_points_json_strokes_and_scribbles_equal_their_rgba_layer(bundle, tmp_path):
    size = (96, 64)
    sketch = draw_sketch(size)
    spec = {
        "points": [
            {"x": 20, "y": 30, "color": "#d03030", "radius": 3},
            {"x": 0.75, "y": 0.5, "color": "skyblue"},
        ],
        "strokes": [{"points": [[10, 10], [30, 20]], "color": "rgb(10, 200, 30)", "width": 3}],
    }
    (tmp_path / "h.json").write_text(json.dumps(spec))
    layers = {
        "points": build_hints((64, 96), points=["20,30,#d03030", "0.75,0.5,skyblue"]),
        "json": build_hints((64, 96), json_files=[tmp_path / "h.json"]),
        "image": build_hints((64, 96), images=[draw_hints(size)]),
    }
    for name, layer in layers.items():
        assert not layer.is_empty, name
        direct = np.asarray(colorize(sketch, layer, bundle, SampleConfig(steps=2), seed=3).image)
        assert np.array_equal(direct, _rgba_result(bundle, layer, sketch)), name
    # Fractions address pixel positions: 0.75 of 96 px is x = 72.
    assert layers["points"].mask[0, 0, 32, 72] == 1


def test_scribble_on_white_equals_transparent_layer(bundle):
    size = (96, 64)
    rgba = draw_hints(size)
    on_white = Image.new("RGB", size, "white")
    on_white.paste(rgba, mask=rgba.split()[3])
    a = np.asarray(colorize(draw_sketch(size), rgba, bundle, SampleConfig(steps=2)).image)
    b = np.asarray(colorize(draw_sketch(size), on_white, bundle, SampleConfig(steps=2)).image)
    assert np.array_equal(a, b)


def test_hints_in_sketch_split(capsys, tmp_path, tiny_checkpoint):
    size = (96, 64)
    sketch = draw_sketch(size)
    scribbled = sketch.copy()
    scribbled.paste(draw_hints(size), mask=draw_hints(size).split()[3])
    scribbled.save(tmp_path / "scribbled.png")
    code, _, err = run(capsys, "colorize", tmp_path / "scribbled.png", "--hints-in-sketch", "-m", tiny_checkpoint,
                       "-o", tmp_path / "a.png", "--steps", 2, "--save-hints", "-q")  # fmt: skip
    assert code == 0, err
    saved = np.asarray(Image.open(tmp_path / "a.hints.png"))
    assert saved[..., 3].sum() > 0  # the scribbles were found
    # Equal to giving the clean sketch and the same hints as a layer.
    sketch.save(tmp_path / "clean.png")
    code, _, err = run(capsys, "colorize", tmp_path / "clean.png", "--hints", tmp_path / "a.hints.png", "-m",
                       tiny_checkpoint, "-o", tmp_path / "b.png", "--steps", 2, "-q")  # fmt: skip
    assert code == 0, err
    assert np.array_equal(
        np.asarray(Image.open(tmp_path / "a.png")), np.asarray(Image.open(tmp_path / "b.png"))
    )


def test_cli_point_hints_equal_saved_layer(capsys, tmp_path, tiny_checkpoint, sketch_files):
    sketch, _ = sketch_files
    code, _, err = run(capsys, "colorize", sketch, "--hint", "20,30,red", "--hint", "0.8,0.5,#2040ff", "-m",
                       tiny_checkpoint, "-o", tmp_path / "p.png", "--steps", 2, "--save-hints", "--save-flats", "-q")  # fmt: skip
    assert code == 0, err
    assert (tmp_path / "p.flats.png").exists()
    code, _, _ = run(capsys, "colorize", sketch, "--hints", tmp_path / "p.hints.png", "-m", tiny_checkpoint,
                     "-o", tmp_path / "q.png", "--steps", 2, "-q")  # fmt: skip
    assert code == 0
    assert np.array_equal(
        np.asarray(Image.open(tmp_path / "p.png")), np.asarray(Image.open(tmp_path / "q.png"))
    )


def test_reproduce_from_png_identical(capsys, tmp_path, tiny_checkpoint, sketch_files):
    sketch, hints = sketch_files
    code, _, err = run(capsys, "colorize", sketch, "--hints", hints, "--hint", "5,5,orange", "-m", tiny_checkpoint,
                       "-o", tmp_path / "o.png", "--steps", 3, "--sampler", "ddpm", "--seed", 11, "--guidance", 2, "-q")  # fmt: skip
    assert code == 0, err
    record = json.loads(read_png_text(tmp_path / "o.png")["sketchcolor"])
    assert (
        record["seed"] == 11
        and record["sampler"] == "ddpm"
        and record["hint_sources"]["points"] == ["5,5,orange"]
    )
    code, _, err = run(
        capsys, "colorize", "--from-png", tmp_path / "o.png", "-o", tmp_path / "again.png", "-q"
    )
    assert code == 0, err
    assert np.array_equal(
        np.asarray(Image.open(tmp_path / "o.png")), np.asarray(Image.open(tmp_path / "again.png"))
    )
    # A changed sketch is detected.
    Image.new("RGB", (96, 64), "white").save(sketch)
    code, _, err = run(capsys, "colorize", "--from-png", tmp_path / "o.png", "-o", tmp_path / "x.png")
    assert code == 1 and "changed since" in err


def test_num_samples_and_save_steps(capsys, tmp_path, tiny_checkpoint, sketch_files):
    sketch, hints = sketch_files
    code, out, err = run(capsys, "colorize", sketch, "--hints", hints, "-m", tiny_checkpoint, "-o", tmp_path / "v.png",
                         "--steps", 3, "-n", 3, "--seed", 4, "--format", "json", "--save-steps", tmp_path / "s.gif")  # fmt: skip
    assert code == 0, err
    records = json.loads(out)
    assert [r["seed"] for r in records] == [4, 5, 6]
    pics = [np.asarray(Image.open(tmp_path / f"v-{i}.png")).astype(int) for i in (1, 2, 3)]
    assert not np.array_equal(pics[0], pics[1])
    gifs = sorted(p.name for p in tmp_path.glob("s-*.gif"))
    assert gifs == ["s-1.gif", "s-2.gif", "s-3.gif"]
    assert Image.open(tmp_path / "s-1.gif").n_frames == 3
    # The second variation equals a single run with its seed (up to float rounding in batching).
    code, _, _ = run(capsys, "colorize", sketch, "--hints", hints, "-m", tiny_checkpoint, "-o", tmp_path / "one.png",
                     "--steps", 3, "--seed", 5, "-q")  # fmt: skip
    alone = np.asarray(Image.open(tmp_path / "one.png")).astype(int)
    assert np.abs(alone - pics[1]).max() <= 2


def test_empty_hints_warn_and_still_work(capsys, tmp_path, tiny_checkpoint, sketch_files):
    sketch, _ = sketch_files
    Image.new("RGBA", (96, 64), (255, 255, 255, 255)).save(tmp_path / "white.png")
    code, _, err = run(capsys, "colorize", sketch, "--hints", tmp_path / "white.png", "-m", tiny_checkpoint,
                       "-o", tmp_path / "o.png", "--steps", 2, "-q")  # fmt: skip
    assert code == 0
    assert "no hint pixels" in err and "warning" in err


def test_point_outside_image_is_named(capsys, tmp_path, tiny_checkpoint, sketch_files):
    sketch, _ = sketch_files
    code, _, err = run(
        capsys, "colorize", sketch, "--hint", "500,10,red", "-m", tiny_checkpoint, "-o", tmp_path / "o.png"
    )
    assert code == 1 and "hint point '500,10,red' is outside the 96x64 image" in err
    code, _, err = run(
        capsys,
        "colorize",
        sketch,
        "--hint",
        "5,5,notacolour",
        "-m",
        tiny_checkpoint,
        "-o",
        tmp_path / "o.png",
    )
    assert code == 1 and "'notacolour' is not a colour" in err


def test_colour_sketch_warns(capsys, tmp_path, tiny_checkpoint):
    img = Image.new("RGB", (64, 64), (200, 40, 40))
    ImageDraw.Draw(img).rectangle((10, 10, 50, 50), outline="black", width=2)
    img.save(tmp_path / "colour.png")
    code, _, err = run(
        capsys,
        "colorize",
        tmp_path / "colour.png",
        "-m",
        tiny_checkpoint,
        "-o",
        tmp_path / "o.png",
        "--steps",
        2,
    )
    assert code == 0 and "already in colour" in err and "--mode photo" in err
    assert "colour.png is already in colour" in err  # which file: a batch has many


def test_blank_and_dark_sketches_warn_naming_each_page(capsys, tmp_path, tiny_checkpoint):
    pages = tmp_path / "in"
    pages.mkdir()
    Image.new("RGBA", (64, 48), (0, 0, 0, 0)).save(pages / "blank.png")  # transparent: white
    dark = Image.new("L", (64, 48), 0)
    ImageDraw.Draw(dark).ellipse((10, 8, 50, 40), outline=255, width=2)  # light lines on black
    dark.save(pages / "inverted.png")
    draw_sketch((64, 48)).save(pages / "good.png")
    coloured = Image.new("RGB", (64, 48), (200, 40, 40))
    ImageDraw.Draw(coloured).rectangle((10, 10, 50, 40), outline="black", width=2)
    coloured.save(pages / "red.png")
    code, _, err = run(capsys, "batch", pages, "-o", tmp_path / "out", "-m", tiny_checkpoint, "--steps", 1)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert any("blank.png has no lines" in w for w in warnings)
    assert any("inverted.png is mostly dark" in w and "invert it" in w for w in warnings)
    assert any("red.png is already in colour" in w for w in warnings)  # and only that for it
    assert not any("good.png" in w for w in warnings) and len(warnings) == 3, warnings


def test_sketch_problem_reads_blank_dark_and_thin_lines_right():
    from sketchcolor.conditioning import sketch_problem

    def problem(full: torch.Tensor) -> str | None:
        small = torch.nn.functional.interpolate(full, size=(64, 64), mode="area")
        return sketch_problem(full, small)

    page = torch.ones(1, 1, 1024, 1024)
    assert problem(page) is not None and problem(page).startswith("has no lines")
    page[..., 500, :] = 0.0  # one 1-pixel line across a large page: a sketch, however faint at 64 px
    assert problem(page) is None
    assert problem(1.0 - page).startswith("is mostly dark (100% of it)")
    half = torch.ones(1, 1, 64, 64)
    half[..., :40, :] = 0.0  # 62 % ink (a heavily inked page) is still line art
    assert problem(half) is None


def test_aspect_mismatch_needs_stretch(capsys, tmp_path, tiny_checkpoint, sketch_files):
    sketch, _ = sketch_files
    draw_hints((100, 100)).save(tmp_path / "square.png")
    args = [
        "colorize",
        sketch,
        "--hints",
        tmp_path / "square.png",
        "-m",
        tiny_checkpoint,
        "-o",
        tmp_path / "o.png",
        "--steps",
        2,
    ]
    code, _, err = run(capsys, *args)
    assert code == 1 and "different aspect ratio" in err and "--stretch-hints" in err
    code, _, err = run(capsys, *args, "--stretch-hints", "-q")
    assert code == 0, err


def test_mode_check(capsys, tmp_path, tiny_checkpoint, sketch_files):
    sketch, _ = sketch_files
    code, _, err = run(
        capsys, "colorize", sketch, "--mode", "photo", "-m", tiny_checkpoint, "-o", tmp_path / "o.png"
    )
    assert code == 1 and "is a lineart model, not a photo model" in err


def test_bad_json_hints(capsys, tmp_path, tiny_checkpoint, sketch_files):
    sketch, _ = sketch_files
    (tmp_path / "bad.json").write_text('{"points": [{"x": 1}]}')
    code, _, err = run(
        capsys,
        "colorize",
        sketch,
        "--hints",
        tmp_path / "bad.json",
        "-m",
        tiny_checkpoint,
        "-o",
        tmp_path / "o.png",
    )
    assert code == 1 and "bad.json: points[0].y must be a number" in err


def test_hint_layer_over():
    a = HintLayer(torch.ones(1, 3, 2, 2), torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]]))
    b = HintLayer(torch.zeros(1, 3, 2, 2), torch.ones(1, 1, 2, 2))
    merged = a.over(b)
    assert merged.mask.sum() == 4 and merged.rgb[0, 0, 0, 0] == 1 and merged.rgb[0, 0, 1, 1] == 0
    with pytest.raises(HintError, match="outside"):
        build_hints((10, 10), points=["0,10,red"])
    assert image_to_tensor(tensor_to_image(a.to_rgba())).shape == (1, 4, 2, 2)


def test_hint_regions_fill_closed_hinted_regions(bundle):
    size = (96, 64)
    sketch = draw_sketch(size)  # a closed circle and rectangle
    layer = build_hints((64, 96), points=["20,30,#d03030"])  # inside the circle
    on = np.asarray(colorize(sketch, layer, bundle, SampleConfig(steps=2), keep_flats=True).flats[0]).astype(
        int
    )
    off = np.asarray(
        colorize(sketch, layer, bundle, SampleConfig(steps=2), hint_regions=False, keep_flats=True).flats[0]
    ).astype(int)
    inside = on[30, 12:18]  # circle interior, away from the hint itself
    assert np.abs(inside - np.array([208, 48, 48])).max() <= 2
    assert not np.array_equal(on, off)


def test_pin_hints_holds_hinted_pixels_in_every_estimate(bundle):
    from sketchcolor.color import lab_to_model
    from sketchcolor.conditioning import make_conditioning
    from sketchcolor.pipeline import item_generators, sample

    sketch = torch.ones(1, 1, 32, 32)
    rgb = torch.zeros(1, 3, 32, 32)
    mask = torch.zeros(1, 1, 32, 32)
    rgb[..., 10, 12] = torch.tensor([0.9, 0.2, 0.1]).view(1, 3)
    mask[..., 10, 12] = 1
    cond = make_conditioning(sketch, rgb, mask, bundle.config.conditioning)
    target = lab_to_model(cond.hint_lab, bundle.config.color)[0, :, 10, 12]
    seen = []
    sample(bundle, cond, SampleConfig(steps=3, pin_hints=True), item_generators(0, 1), callback=seen.append)
    assert len(seen) == 3
    assert all(torch.allclose(info["x0_hat"][0, :, 10, 12].cpu(), target, atol=1e-5) for info in seen)
    free = []
    sample(bundle, cond, SampleConfig(steps=3), item_generators(0, 1), callback=free.append)
    assert not torch.allclose(free[0]["x0_hat"][0, :, 10, 12].cpu(), target, atol=1e-3)
