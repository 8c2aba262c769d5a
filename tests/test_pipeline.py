import numpy as np
import pytest
import torch
from PIL import Image

import sketchcolor
from sketchcolor.checkpoint import load_checkpoint, save_checkpoint
from sketchcolor.conditioning import SparseHints
from sketchcolor.config import ConditioningConfig, SampleConfig
from sketchcolor.errors import CheckpointError, HintError
from sketchcolor.pipeline import colorize, working_size

from .conftest import draw_hints, draw_sketch, random_model, tiny_config


@pytest.fixture
def bundle(tiny_checkpoint):
    return load_checkpoint(tiny_checkpoint)


@pytest.mark.parametrize("size", [(96, 64), (33, 77), (200, 20), (16, 16)])
def test_output_has_sketch_size_and_is_finite(bundle, size):
    result = colorize(draw_sketch(size), None, bundle, SampleConfig(steps=3), seed=0)
    assert result.image.size == size and result.image.mode == "RGB"
    arr = np.asarray(result.image)
    assert arr.dtype == np.uint8


def test_reproducible_and_seed_dependent(bundle):
    cfg = SampleConfig(steps=4)
    a = np.asarray(colorize(draw_sketch(), draw_hints(), bundle, cfg, seed=1).image)
    b = np.asarray(colorize(draw_sketch(), draw_hints(), bundle, cfg, seed=1).image)
    c = np.asarray(colorize(draw_sketch(), draw_hints(), bundle, cfg, seed=2).image)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_hints_and_guidance_change_the_result(bundle):
    cfg = SampleConfig(steps=3)
    plain = np.asarray(colorize(draw_sketch(), None, bundle, cfg, seed=0).image)
    hinted = colorize(draw_sketch(), draw_hints(), bundle, cfg, seed=0)
    assert not np.array_equal(plain, np.asarray(hinted.image))
    guided = colorize(draw_sketch(), draw_hints(), bundle, SampleConfig(steps=3, guidance=3.0), seed=0)
    assert not np.array_equal(np.asarray(hinted.image), np.asarray(guided.image))
    assert hinted.record["hinted"] is True


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_line_pixels_never_lighter_than_sketch(bundle, sampler):
    sketch = draw_sketch((120, 80))
    out = np.asarray(
        colorize(sketch, draw_hints((120, 80)), bundle, SampleConfig(sampler=sampler, steps=3)).image
    )
    ref = np.asarray(sketch).astype(int)
    lines = ref.max(axis=2) < 128
    assert lines.sum() > 50
    assert (out[lines].astype(int) <= ref[lines] + 1).all()


def test_record_contents(bundle):
    result = colorize(draw_sketch(), None, bundle, SampleConfig(steps=2, sampler="ddpm"), seed=9)
    rec = result.record
    assert rec["seed"] == 9 and rec["sampler"] == "ddpm" and rec["steps"] == 2
    assert rec["model_digest"] == bundle.digest and rec["sketchcolor_version"] == sketchcolor.__version__
    assert rec["size"] == [96, 64] and rec["working_size"] == [32, 21] and rec["padded_size"] == [32, 22]


def test_hints_of_other_size_resized_and_aspect_checked(bundle):
    big_hints = draw_hints((192, 128))
    out = colorize(draw_sketch(), big_hints, bundle, SampleConfig(steps=2))
    assert out.image.size == (96, 64)
    with pytest.raises(HintError, match="different aspect ratio"):
        colorize(draw_sketch(), draw_hints((100, 100)), bundle, SampleConfig(steps=2))


def test_photo_mode_keeps_lightness(tmp_path):
    config = tiny_config(conditioning=ConditioningConfig(mode="photo"))
    path = save_checkpoint(tmp_path / "photo.safetensors", random_model(config), config)
    grey = np.tile(np.linspace(30, 220, 64, dtype=np.uint8), (48, 1))
    photo = Image.fromarray(grey).convert("RGB")
    out = colorize(photo, None, load_checkpoint(path), SampleConfig(steps=2))
    from skimage.color import rgb2lab

    l_in = rgb2lab(np.asarray(photo) / 255.0)[..., 0]
    l_out = rgb2lab(np.asarray(out.image) / 255.0)[..., 0]
    assert np.abs(l_in - l_out).mean() < 3.0


def test_region_fill_model_runs(tmp_path):
    config = tiny_config(conditioning=ConditioningConfig(region_fill=True))
    path = save_checkpoint(tmp_path / "fill.safetensors", random_model(config), config)
    out = colorize(draw_sketch(), draw_hints(), load_checkpoint(path), SampleConfig(steps=2))
    assert out.image.size == (96, 64)


def test_working_size():
    assert working_size((1000, 500), 64) == (64, 32)
    assert working_size((10, 5000), 64) == (1, 64)


def test_top_level_colorize(tiny_checkpoint, sketch_files):
    sketch, hints = sketch_files
    img = sketchcolor.colorize(sketch, hints=hints, model=tiny_checkpoint, steps=2, seed=3, device="cpu")
    assert isinstance(img, Image.Image) and img.size == (96, 64)


def test_sketch_tensor_input_validated(bundle):
    from sketchcolor.errors import ImageError

    with pytest.raises(ImageError, match="must be finite and in"):
        colorize(torch.full((1, 3, 8, 8), 2.0), None, bundle)


def test_no_default_model_is_a_clear_error(monkeypatch):
    import sketchcolor.checkpoint as ck

    monkeypatch.setattr(ck, "DEFAULT_MODEL_RESOURCE", ("sketchcolor.weights", "absent.safetensors"))
    with pytest.raises(CheckpointError, match="no default model"):
        ck.default_model_path()


@pytest.mark.parametrize("background", ["transparent", "white", "none"])
def test_hints_image_fast_path_follows_the_rgba_rule(background):
    """An RGBA hints picture at the sketch's size (read by its opaque box) gives the layer of the rule.

    The rule is conditioning.hints_from_rgba on the float picture: alpha >= 0.5 and not white.
    """
    from sketchcolor.conditioning import hints_from_rgba
    from sketchcolor.pipeline import hints_from_image

    g = torch.Generator().manual_seed(7)
    h, w = 61, 93
    rgba = torch.zeros(h, w, 4, dtype=torch.uint8)
    if background == "white":
        rgba[...] = 255  # scribbles on an opaque white page: the box is the whole picture
    # Strokes of random colours, near-white and half-transparent pixels included, one at a corner.
    for _ in range(40):
        y = int(torch.randint(0, h - 3, (1,), generator=g))
        x = int(torch.randint(0, w - 3, (1,), generator=g))
        rgba[y : y + 3, x : x + 3, :3] = torch.randint(0, 256, (3,), generator=g, dtype=torch.uint8)
        rgba[y : y + 3, x : x + 3, 3] = int(torch.randint(100, 256, (1,), generator=g))
    rgba[5:8, 5:8] = torch.tensor([250, 249, 251, 255], dtype=torch.uint8)  # near-white: no hint
    rgba[h - 1, w - 1] = torch.tensor([10, 200, 30, 128], dtype=torch.uint8)  # alpha exactly 0.5
    if background == "none":
        rgba[..., 3] = 0
    rgba[0, 1] = torch.tensor([200, 0, 0, 5], dtype=torch.uint8)  # faint: in the box, not a hint
    image = Image.fromarray(rgba.numpy(), "RGBA")
    layer = hints_from_image(image, (h, w))
    want_rgb, want_mask = hints_from_rgba(rgba.permute(2, 0, 1).unsqueeze(0).float() / 255.0)
    assert torch.equal(layer.mask, want_mask)
    assert torch.equal(layer.rgb, want_rgb * want_mask)
    assert (layer.mask.sum() > 0) == (background != "none")
    # The hinted pixels found on the way are those a pass over the layer finds.
    known, found = layer.known_hints, SparseHints.from_layer(layer.rgb, layer.mask)
    assert known is not None and known.size == found.size
    assert torch.equal(known.ys, found.ys) and torch.equal(known.xs, found.xs)
    assert torch.equal(known.rgb, found.rgb) and known.rgb.dtype == found.rgb.dtype
    assert layer.is_empty == (background == "none")


def test_grey_sketch_reads_as_its_rgb_conversion():
    """A mode-L sketch reads as PIL's RGB conversion of it, one plane seen as three channels."""
    from sketchcolor.pipeline import read_sketch_u8

    grey = Image.fromarray(np.random.default_rng(3).integers(0, 256, (37, 51), dtype=np.uint8), "L")
    got = read_sketch_u8(grey)
    want = read_sketch_u8(grey.convert("RGB"))
    assert got.shape == (1, 3, 37, 51) and got.dtype == torch.uint8
    assert torch.equal(got, want)
    assert got.stride(1) == 0  # one plane: the composition reads one byte per pixel
    assert want.permute(0, 2, 3, 1).is_contiguous()  # RGB pictures: channels-last, as stored
    before = got[0, 0, 0, 0].item()
    grey.putpixel((0, 0), (before + 1) % 256)
    assert got[0, 0, 0, 0].item() == before


@pytest.mark.parametrize("shape", [(96, 80), (40, 1100)])  # the second is labelled on a smaller grid
def test_grey_and_rgb_copies_of_a_sketch_colour_the_same(bundle, shape):
    """The one-plane path (mode L) gives the picture the three-plane path (mode RGB) gives."""
    h, w = shape
    rng = np.random.default_rng(5)
    page = np.full(shape, 235, dtype=np.uint8)  # tinted paper: the sketch is normalised
    page[h // 5 : h // 5 + 3, w // 8 : w - w // 8] = 0
    page[h // 5 :, w // 2 : w // 2 + 3] = 30
    page[h - h // 3 : h - h // 3 + 3, :] = 90
    page = np.clip(page.astype(int) + rng.integers(-6, 7, shape), 0, 255).astype(np.uint8)
    grey = Image.fromarray(page, "L")
    hints = Image.new("RGBA", grey.size, (0, 0, 0, 0))
    hints.paste((200, 40, 40, 255), (w // 8 + 2, h // 5 + 5, w // 2 - 4, h - h // 3 - 3))
    a = colorize(grey, hints, bundle, SampleConfig(steps=2), seed=4)
    b = colorize(grey.convert("RGB"), hints, bundle, SampleConfig(steps=2), seed=4)
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert a.record == b.record


def test_run_pipelined_overlaps_in_order_and_stays_bounded():
    """Producing item k+1 overlaps consuming item k; consumed in order; at most depth ahead."""
    import threading

    from sketchcolor.pipeline import run_pipelined

    produced: list[int] = []
    consumed: list[tuple[int, int]] = []
    second_made = threading.Event()
    ahead: list[int] = []

    def produce(x: int) -> int:
        produced.append(x)
        ahead.append(len(produced) - len(consumed))
        if x == 1:
            second_made.set()
        return x * 10

    def consume(x: int, made: int) -> None:
        if x == 0:  # would wait forever if item 1 were only produced after this returns
            assert second_made.wait(timeout=30)
        consumed.append((x, made))

    run_pipelined(range(6), produce, consume, depth=1)
    assert consumed == [(x, x * 10) for x in range(6)]
    assert max(ahead) <= 3  # one being consumed, one waiting, one being produced

    sequential: list[tuple[int, int]] = []
    run_pipelined(range(3), produce, lambda x, m: sequential.append((x, m)), depth=0)
    assert sequential == [(0, 0), (1, 10), (2, 20)]


def test_run_pipelined_failures():
    """A consumer failure stops production; a producer failure comes after the produced are consumed."""
    from sketchcolor.pipeline import run_pipelined

    class Stop(Exception):
        pass

    produced: list[int] = []

    def bad_consume(x: int, made: int) -> None:
        if x == 1:
            raise Stop("consume")

    with pytest.raises(Stop, match="consume"):
        run_pipelined(range(100), lambda x: produced.append(x) or x, bad_consume, depth=1)
    assert len(produced) < 10

    consumed: list[int] = []

    def bad_produce(x: int) -> int:
        if x == 3:
            raise Stop("produce")
        return x

    with pytest.raises(Stop, match="produce"):
        run_pipelined(range(10), bad_produce, lambda x, m: consumed.append(x), depth=1)
    assert consumed == [0, 1, 2]  # what was produced before the failure is not thrown away


def test_samples_of_one_sketch_share_one_preparation_and_labelling(bundle, monkeypatch):
    import sketchcolor.pipeline as pipeline
    from sketchcolor.pipeline import colorize_batch

    cfg = SampleConfig(steps=2, precision="fp32")
    sketch, hints = draw_sketch((80, 60)), draw_hints((80, 60))
    separate = [colorize(sketch, hints, bundle, cfg, seed=s).image.tobytes() for s in (5, 6, 7)]
    calls = {"prepare": 0, "labels": 0}
    real_prepare, real_labels = pipeline._prepare, pipeline.region_labels

    def prepare(*args, **kwargs):
        calls["prepare"] += 1
        return real_prepare(*args, **kwargs)

    def labels(*args, **kwargs):
        calls["labels"] += 1
        return real_labels(*args, **kwargs)

    monkeypatch.setattr(pipeline, "_prepare", prepare)
    monkeypatch.setattr(pipeline, "region_labels", labels)
    many = colorize(sketch, hints, bundle, cfg, seed=5, num_samples=3)
    assert calls == {"prepare": 1, "labels": 1}
    assert [im.tobytes() for im in many.images] == separate
    # A batch that gives one sketch (same object, same hints) three times prepares it once.
    calls.update(prepare=0, labels=0)
    batch = colorize_batch([sketch] * 3, [hints] * 3, bundle, cfg, [5, 6, 7])
    assert calls == {"prepare": 1, "labels": 1}
    assert [r.image.tobytes() for r in batch] == separate
    # Other hints (or none) are another preparation; without hint regions, another labelling.
    calls.update(prepare=0, labels=0)
    colorize_batch([sketch] * 3, [hints, None, hints], bundle, cfg, [5, 6, 7])
    assert calls == {"prepare": 2, "labels": 2}
    calls.update(prepare=0, labels=0)
    colorize(sketch, hints, bundle, cfg, seed=5, num_samples=2, hint_regions=False)
    assert calls == {"prepare": 1, "labels": 1}
