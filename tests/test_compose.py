import numpy as np
import pytest
import torch

from sketchcolor.color import lab_to_rgb, lightness, rgb_to_lab
from sketchcolor.compose import (
    carry_to_full_size,
    interior_weight,
    reference_palette,
    region_colours,
    region_labels,
    remove_lines,
    render_u8,
    sketch_lightness,
    sketch_lightness_u8,
    snap_to_palette,
)


def _two_regions(size=32):
    """A sketch with one vertical line splitting it in two regions."""
    sketch_l = torch.ones(1, 1, size, size)
    sketch_l[..., :, size // 2] = 0.0
    return sketch_l


def test_sketch_lightness_matches_lab_lightness():
    rgb = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(sketch_lightness(rgb), lightness(rgb), atol=1e-4)
    u8 = (rgb[:1] * 255).round().to(torch.uint8)
    assert torch.allclose(sketch_lightness_u8(u8), lightness(u8.float() / 255), atol=1e-4)
    grey = u8[:, :1].expand(1, 3, 8, 8).contiguous()  # the lookup-table path
    assert torch.allclose(sketch_lightness_u8(grey), lightness(grey.float() / 255), atol=1e-4)


def test_banded_grey_lightness_is_one_rule_for_the_whole_page(monkeypatch):
    from sketchcolor import compose

    monkeypatch.setattr(compose, "LIGHTNESS_BAND_ROWS", 4)  # many bands on a small page
    gen = torch.Generator().manual_seed(1)
    grey = torch.randint(0, 256, (1, 1, 37, 11), dtype=torch.uint8, generator=gen).expand(1, 3, 37, 11)
    channels_last = grey[0].permute(1, 2, 0).contiguous().permute(2, 0, 1)[None]  # as pictures are read
    table = compose._GREY_L_LUT[grey[0, 0].long()].view(1, 1, 37, 11)
    for threads in (1, 3):
        assert torch.equal(sketch_lightness_u8(channels_last, threads=threads), table)
    # One coloured pixel in the last band: the whole page takes the luminance path, as a whole.
    tinted = channels_last.clone()
    tinted[0, 0, 36, 10] = 255 - int(tinted[0, 1, 36, 10])
    expected = compose.sketch_lightness_u8(tinted, threads=1)
    assert torch.equal(sketch_lightness_u8(tinted, threads=3), expected)
    assert not torch.equal(expected[..., :32, :], table[..., :32, :])  # not the table, even where grey
    assert torch.allclose(expected, lightness(tinted.float() / 255), atol=1e-4)


@pytest.mark.parametrize("paper", [255, 228, 140])  # white, tinted, and too faint to stretch
def test_normalised_lightness_is_normalize_sketch_of_the_lightness(paper):
    """normalize=True (the stretch applied to the lookup table) equals normalize_sketch after."""
    from sketchcolor.conditioning import normalize_sketch

    gen = torch.Generator().manual_seed(paper)
    plane = torch.full((1, 1, 300, 517), paper, dtype=torch.uint8)
    plane[..., 40:260:9, :] = torch.randint(0, 120, (1, 1, 25, 517), dtype=torch.uint8, generator=gen)
    if paper == 140:
        plane[plane < 120] = 130  # paper and ink within 0.15: left as is
    one_plane = plane.expand(1, 3, 300, 517)
    three = one_plane.contiguous()
    want = normalize_sketch(sketch_lightness_u8(three))
    for u8 in (one_plane, three):
        for threads in (1, 2):
            assert torch.equal(sketch_lightness_u8(u8, threads, normalize=True), want)
    coloured = three.clone()
    coloured[0, 0, :50] = 255  # a coloured picture takes luminance, then the stretch
    assert torch.equal(
        sketch_lightness_u8(coloured, normalize=True), normalize_sketch(sketch_lightness_u8(coloured))
    )
    assert not torch.equal(sketch_lightness_u8(coloured), sketch_lightness_u8(three))


def test_one_plane_sketch_renders_as_three_planes():
    """A grey sketch given as one plane (channel stride 0) multiplies exactly as its RGB copy."""
    gen = torch.Generator().manual_seed(2)
    plane = torch.randint(0, 256, (1, 1, 70, 45), dtype=torch.uint8, generator=gen)
    one_plane = plane.expand(1, 3, 70, 45)
    three = one_plane[0].permute(1, 2, 0).contiguous().permute(2, 0, 1)[None]
    rgb_small = torch.rand(1, 3, 9, 7, generator=gen)
    for threads in (1, 2):
        got = render_u8(rgb_small, (70, 45), sketch_u8=one_plane, threads=threads)
        assert np.array_equal(got, render_u8(rgb_small, (70, 45), sketch_u8=three, threads=threads))
    assert not np.array_equal(got, render_u8(rgb_small, (70, 45)))  # the sketch was multiplied


def test_remove_lines_keeps_paper_and_replaces_line_colour():
    sketch_l = _two_regions(16)
    lab = torch.zeros(1, 3, 16, 16)
    lab[:, 0] = 80.0
    lab[..., 8] = torch.tensor([5.0, 0.0, 0.0]).view(1, 3, 1)  # the model drew a dark line
    out = remove_lines(lab, sketch_l)
    assert torch.allclose(out[..., 2], lab[..., 2])  # paper untouched
    assert torch.allclose(out[:, 0, :, 8], torch.full((1, 16), 80.0), atol=1e-3)  # line -> paper colour


def _interior(sketch_l_small):
    return -torch.nn.functional.max_pool2d(-interior_weight(sketch_l_small), 3, stride=1, padding=1)


def test_snap_gives_uniform_regions_their_interior_mean():
    sketch_full = _two_regions(64)
    sketch_full[..., 30:34] = 0.0  # a 4 px line: one working pixel wide at 16 px
    small_l = torch.nn.functional.interpolate(sketch_full, size=(16, 16), mode="area")
    lab_small = torch.zeros(1, 3, 16, 16)
    lab_small[:, 0, :, :8] = 60.0
    lab_small[:, 0, :, 8:] = 30.0
    lab_small[:, 0, :, 7:9] = 45.0  # colour bled across the line near the boundary
    regions = region_colours(lab_small, sketch_full, _interior(small_l))
    grey = torch.full((1, 3, 16, 16), 0.5)
    out = torch.from_numpy(render_u8(grey, (64, 64), regions=regions)).permute(2, 0, 1).float() / 255
    left = lab_to_rgb(torch.tensor([60.0, 0.0, 0.0]).view(1, 3, 1, 1)).flatten()
    right = lab_to_rgb(torch.tensor([30.0, 0.0, 0.0]).view(1, 3, 1, 1)).flatten()
    assert torch.allclose(out[:, 10, :30], left.view(3, 1).expand(3, 30), atol=1 / 255)
    assert torch.allclose(out[:, 10, 34:], right.view(3, 1).expand(3, 30), atol=1 / 255)
    assert torch.allclose(out[:, 10, 32], torch.full((3,), 0.5), atol=1 / 255)  # lines keep the smooth colour


def test_non_uniform_region_kept_smooth_unless_flat():
    sketch_full = torch.ones(1, 1, 32, 32)  # one region, a strong gradient inside it
    lab_small = torch.zeros(1, 3, 8, 8)
    lab_small[:, 0] = 50.0
    lab_small[:, 1] = torch.linspace(-60, 60, 8).view(1, 1, 8)
    smooth = lab_to_rgb(lab_small)
    kept = region_colours(lab_small, sketch_full, torch.ones(1, 1, 8, 8))
    assert not kept.snap.any()
    assert np.array_equal(render_u8(smooth, (32, 32), regions=kept), render_u8(smooth, (32, 32)))
    flat = region_colours(lab_small, sketch_full, torch.ones(1, 1, 8, 8), flat=True)
    assert len(np.unique(render_u8(smooth, (32, 32), regions=flat).reshape(-1, 3), axis=0)) == 1


def test_hinted_regions_take_their_hint_colours():
    # A closed square (rows/cols 8..23 outlined) inside an open background touching the border.
    sketch_l = torch.ones(1, 1, 32, 32)
    sketch_l[..., 8, 8:24] = sketch_l[..., 23, 8:24] = 0.0
    sketch_l[..., 8:24, 8] = sketch_l[..., 8:24, 23] = 0.0
    lab_small = torch.zeros(1, 3, 32, 32)
    lab_small[:, 0] = 50.0  # the model's (grey) colours everywhere
    rgb = torch.zeros(1, 3, 32, 32)
    mask = torch.zeros(1, 1, 32, 32)
    rgb[..., 15, 15] = torch.tensor([1.0, 0.0, 0.0]).view(1, 3)  # red hint inside the square
    mask[..., 15, 15] = 1
    rgb[..., 2, 2] = torch.tensor([0.0, 0.0, 1.0]).view(1, 3)  # blue hint in the background
    mask[..., 2, 2] = 1
    regions = region_colours(lab_small, sketch_l, _interior(sketch_l), hints=(rgb, mask))
    out = render_u8(torch.zeros(1, 3, 32, 32), (32, 32), regions=regions)
    assert out[12, 12].tolist() == [255, 0, 0]
    grey = (lab_to_rgb(torch.tensor([50.0, 0.0, 0.0]).view(1, 3, 1, 1)).flatten() * 255 + 0.5).to(torch.uint8)
    # The large open background is not flooded with its hint: the model colours it.
    assert out[2, 30].tolist() == grey.tolist()


def test_small_border_region_with_hints_is_filled():
    sketch_l = torch.ones(1, 1, 32, 32)
    sketch_l[..., 6, :8] = 0.0
    sketch_l[..., :6, 7] = 0.0  # a small corner region touching the border
    lab_small = torch.zeros(1, 3, 32, 32)
    lab_small[:, 0] = 50.0
    rgb = torch.zeros(1, 3, 32, 32)
    mask = torch.zeros(1, 1, 32, 32)
    rgb[..., 2, 2] = torch.tensor([0.0, 0.0, 1.0]).view(1, 3)
    mask[..., 2, 2] = 1
    regions = region_colours(lab_small, sketch_l, torch.ones(1, 1, 32, 32), hints=(rgb, mask))
    out = render_u8(torch.zeros(1, 3, 32, 32), (32, 32), regions=regions)
    assert out[0, 0].tolist() == [0, 0, 255]


def test_region_with_two_hint_colours_is_split_between_them():
    sketch_l = torch.ones(1, 1, 32, 32)
    sketch_l[..., 0, :] = sketch_l[..., -1, :] = 0.0  # a frame: one closed region inside
    sketch_l[..., :, 0] = sketch_l[..., :, -1] = 0.0
    lab_small = torch.zeros(1, 3, 32, 32)
    lab_small[:, 0] = 50.0
    rgb = torch.zeros(1, 3, 32, 32)
    mask = torch.zeros(1, 1, 32, 32)
    rgb[..., 16, 2] = torch.tensor([1.0, 0.0, 0.0]).view(1, 3)
    rgb[..., 16, 29] = torch.tensor([0.0, 1.0, 0.0]).view(1, 3)
    mask[..., 16, 2] = mask[..., 16, 29] = 1
    regions = region_colours(lab_small, sketch_l, torch.ones(1, 1, 32, 32), hints=(rgb, mask))
    out = render_u8(torch.zeros(1, 3, 32, 32), (32, 32), regions=regions)
    assert out[5, 5].tolist() == [255, 0, 0] and out[5, 26].tolist() == [0, 255, 0]


def test_region_with_one_hint_colour_takes_it_exactly_without_the_nearest_hint_field(monkeypatch):
    from sketchcolor import compose

    # Two boxes side by side; each gets one scribble colour (an sRGB that does not survive a
    # round trip through LAB bit for bit); the right box's scribble lies next to the left box.
    sketch_l = torch.ones(1, 1, 32, 64)
    sketch_l[..., 0, :] = sketch_l[..., -1, :] = 0.0
    sketch_l[..., :, 0] = sketch_l[..., :, 31] = sketch_l[..., :, -1] = 0.0
    lab_small = torch.zeros(1, 3, 32, 64)
    lab_small[:, 0] = 50.0
    colours = (torch.tensor([0.8, 0.3, 0.1]), torch.tensor([0.1, 0.6, 0.9]))
    rgb = torch.zeros(1, 3, 32, 64)
    mask = torch.zeros(1, 1, 32, 64)
    rgb[..., 10:20, 4] = colours[0].view(1, 3, 1)
    rgb[..., 10:20, 34] = colours[1].view(1, 3, 1)
    mask[..., 10:20, 4] = mask[..., 10:20, 34] = 1

    def no_field(*args, **kwargs):
        raise AssertionError("the nearest-hint field is not needed when each region holds one colour")

    monkeypatch.setattr(compose, "_hint_field", no_field)
    regions = region_colours(lab_small, sketch_l, torch.ones(1, 1, 32, 64), hints=(rgb, mask))
    assert regions.hint_rgb is None
    for colour, (y, x) in zip(colours, ((15, 28), (15, 60)), strict=True):  # far from the own scribble
        label = int(regions.labels[y, x])
        assert bool(regions.snap[label]) and torch.equal(regions.rgb[:, label], colour)
    monkeypatch.undo()
    # A second colour in the left box: the field splits that box between its two scribbles.
    rgb[..., 10:20, 26] = torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1)
    mask[..., 10:20, 26] = 1
    regions = region_colours(lab_small, sketch_l, torch.ones(1, 1, 32, 64), hints=(rgb, mask))
    out = render_u8(torch.zeros(1, 3, 32, 64), (32, 64), regions=regions)
    assert regions.hint_rgb is not None
    assert out[15, 6].tolist() == [204, 77, 26] and out[15, 24].tolist() == [0, 0, 255]


def test_small_gaps_in_outlines_are_closed():
    # A square whose outline has a 2 px gap: without gap closing it merges with the background.
    sketch_l = torch.ones(1, 1, 64, 64)
    sketch_l[..., 16, 16:48] = sketch_l[..., 47, 16:48] = 0.0
    sketch_l[..., 16:48, 16] = sketch_l[..., 16:48, 47] = 0.0
    sketch_l[..., 30:32, 16] = 1.0  # the gap
    lab_small = torch.zeros(1, 3, 64, 64)
    lab_small[:, 0] = 100.0  # white paper from the model
    rgb = torch.zeros(1, 3, 64, 64)
    mask = torch.zeros(1, 1, 64, 64)
    rgb[..., 32, 32] = torch.tensor([1.0, 0.0, 0.0]).view(1, 3)
    mask[..., 32, 32] = 1
    regions = region_colours(lab_small, sketch_l, torch.ones(1, 1, 64, 64), hints=(rgb, mask))
    out = render_u8(torch.ones(1, 3, 64, 64), (64, 64), regions=regions)
    assert out[20, 40].tolist() == [255, 0, 0]  # inside the square
    assert out[5, 5].tolist() == [255, 255, 255]  # the background did not flood


def test_given_region_labels_are_used_as_they_are(monkeypatch):
    import sketchcolor.compose as compose

    # The gap-closed square of the test above, with a hint in it and one in the background.
    sketch_l = torch.ones(1, 1, 64, 64)
    sketch_l[..., 16, 16:48] = sketch_l[..., 47, 16:48] = 0.0
    sketch_l[..., 16:48, 16] = sketch_l[..., 16:48, 47] = 0.0
    sketch_l[..., 30:32, 16] = 1.0
    lab_small = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3)) * 40 + 30
    rgb, mask = torch.zeros(1, 3, 64, 64), torch.zeros(1, 1, 64, 64)
    rgb[..., 32, 32], mask[..., 32, 32] = torch.tensor([1.0, 0.0, 0.0]).view(1, 3), 1
    rgb[..., 4, 4], mask[..., 4, 4] = torch.tensor([0.0, 0.0, 1.0]).view(1, 3), 1
    interior = torch.ones(1, 1, 64, 64)
    labels = region_labels(sketch_l, (rgb, mask))
    assert labels.dtype == np.int32 and labels.shape == (64, 64) and labels.max() >= 2
    fresh = region_colours(lab_small, sketch_l, interior, hints=(rgb, mask))
    # Given its labels, region_colours labels nothing itself and chooses the same colours.
    monkeypatch.setattr(compose, "label_closed_regions", lambda *a, **k: pytest.fail("labelled again"))
    given = region_colours(lab_small, sketch_l, interior, hints=(rgb, mask), labels=labels)
    assert torch.equal(given.labels, fresh.labels) and torch.equal(given.rgb, fresh.rgb)
    assert torch.equal(given.snap, fresh.snap)
    # And they are what decides the regions: one label everywhere paints one colour.
    one = region_colours(lab_small, sketch_l, interior, flat=True, labels=np.ones((64, 64), np.int32))
    out = render_u8(torch.zeros(1, 3, 64, 64), (64, 64), regions=one)
    assert len(np.unique(out.reshape(-1, 3), axis=0)) == 1


def test_region_labels_of_a_large_page_use_the_composition_threads(monkeypatch):
    """A page whose labelling grid is large finds its nearest regions in bands on the asked
    threads (default: compose_threads), and the labels are those of one thread."""
    import sketchcolor.conditioning as conditioning
    from sketchcolor.parallel import compose_threads

    sketch_l = torch.ones(1, 1, 1100, 900)
    for k in range(1, 9):  # boxes with a small gap in each outline
        sketch_l[..., 100 * k, 50:850] = 0.0
        sketch_l[..., 60:1050, 95 * k] = 0.0
        sketch_l[..., 100 * k, 60 * k : 60 * k + 3] = 1.0
    asked = []
    real = conditioning.nearest_feature
    monkeypatch.setattr(conditioning, "nearest_feature", lambda *a, **k: asked.append(a[1]) or real(*a, **k))
    one = region_labels(sketch_l, threads=1)
    assert np.array_equal(region_labels(sketch_l, threads=3), one)
    assert np.array_equal(region_labels(sketch_l), one)
    assert asked == [1, 3, compose_threads()]
    assert one.shape == (1024, 838) and one.max() > 8  # the grid is downscaled; gaps closed


def test_carry_to_full_size_multiplies_lines():
    small = torch.zeros(1, 3, 16, 16)
    small[:, 0] = 70.0
    sketch_u8 = torch.full((1, 3, 64, 64), 255, dtype=torch.uint8)
    sketch_u8[..., 32] = 51
    picture, flats = carry_to_full_size(
        small, torch.ones(1, 1, 16, 16), _two_regions(64), sketch_u8, flat=True, keep_flats=True
    )
    assert picture.shape == flats.shape == (64, 64, 3) and picture.dtype == np.uint8
    assert (picture[:, 32] <= 51).all()
    assert np.array_equal(picture[:, :30], flats[:, :30])  # white paper: the colour itself


def test_banded_upscaling_equals_bilinear():
    small = torch.rand(1, 3, 7, 5, generator=torch.Generator().manual_seed(1))
    ours = render_u8(small, (1100, 37))  # more rows than one band
    ref = torch.nn.functional.interpolate(small, size=(1100, 37), mode="bilinear", align_corners=False)
    ref = (ref[0].permute(1, 2, 0).clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
    assert np.abs(ours.astype(int) - ref.astype(int)).max() <= 1


def _legacy_render_u8(rgb_small, size, regions=None, sketch_u8=None):
    """The single-threaded torch renderer of sketchcolor 0.1 (the reference for the fast one)."""
    from sketchcolor.compose import _bilinear_rows

    h_out, w_out = size
    cols = torch.nn.functional.interpolate(
        rgb_small, size=(rgb_small.shape[-2], w_out), mode="bilinear", align_corners=False
    )[0]
    lo, hi, frac = _bilinear_rows(rgb_small.shape[-2], h_out)
    out = np.empty((h_out, w_out, 3), dtype=np.uint8)
    for top in range(0, h_out, 512):
        rows = slice(top, min(top + 512, h_out))
        f = frac[rows].view(1, -1, 1)
        band = cols[:, lo[rows]] * (1 - f) + cols[:, hi[rows]] * f
        if regions is not None:
            grid_h, grid_w = regions.labels.shape
            grid_rows = (torch.arange(h_out) * grid_h // h_out)[rows]
            grid_cols = torch.arange(w_out) * grid_w // w_out
            lab_band = regions.labels[grid_rows][:, grid_cols]
            chosen = regions.snap[lab_band]
            for c in range(3):
                torch.where(chosen, regions.rgb[c][lab_band], band[c], out=band[c])
            if regions.hint_rgb is not None:
                use = regions.hint_use[grid_rows][:, grid_cols]
                for c in range(3):
                    torch.where(use, regions.hint_rgb[c][grid_rows][:, grid_cols], band[c], out=band[c])
        band.clamp_(0.0, 1.0)
        band.mul_(255.0 if sketch_u8 is None else sketch_u8[0, :, rows].float())
        out[rows] = band.add_(0.5).to(torch.uint8).permute(1, 2, 0).numpy()
    return out


def _random_page(seed, size, small):
    """A sketch of random outlines, random model colours and a few square hints."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    (h, w), (hs, ws) = size, small
    img = Image.new("L", (w, h), 255)
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        box = (x0, y0, x0 + int(rng.integers(3, w // 2 + 4)), y0 + int(rng.integers(3, h // 2 + 4)))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(
            box, outline=int(rng.integers(0, 120)), width=2
        )
    sketch_l = torch.from_numpy(np.array(img)).float()[None, None] / 255
    gen = torch.Generator().manual_seed(seed)
    lab = torch.cat(
        [40 + 60 * torch.rand(1, 1, hs, ws, generator=gen), 30 * torch.randn(1, 2, hs, ws, generator=gen)], 1
    )
    rgb, mask = torch.zeros(1, 3, h, w), torch.zeros(1, 1, h, w)
    for _ in range(5):
        y, x, r = int(rng.integers(0, h)), int(rng.integers(0, w)), int(rng.integers(0, 5))
        rgb[0, :, y : y + r + 1, x : x + r + 1] = torch.tensor(rng.random(3), dtype=torch.float32).view(
            3, 1, 1
        )
        mask[0, :, y : y + r + 1, x : x + r + 1] = 1
    return lab, sketch_l, (rgb, mask)


@pytest.mark.parametrize(
    ("size", "small"),
    [((64, 48), (32, 24)), ((300, 1300), (15, 64)), ((33, 31), (64, 60)), ((8, 300), (2, 64))],
)
def test_threaded_composition_is_pixel_identical(size, small):
    lab, sketch_l, hints = _random_page(sum(size), size, small)
    small_l = torch.nn.functional.interpolate(sketch_l, size=small, mode="area")
    # A channels-last sketch (what the pipeline passes) and a contiguous one.
    sketch_u8 = (sketch_l * 255).round().to(torch.uint8).expand(1, 3, *size)
    channels_last = sketch_u8[0].permute(1, 2, 0).contiguous().permute(2, 0, 1)[None]
    for flat in (False, True):
        clean = remove_lines(lab, small_l)
        regions = region_colours(clean, sketch_l, _interior(small_l), flat=flat, hints=hints)
        rgb_small = lab_to_rgb(clean)
        reference = _legacy_render_u8(rgb_small, size, regions, sketch_u8.contiguous())
        for threads in (1, 3):
            for sketch in (sketch_u8.contiguous(), channels_last):
                ours = render_u8(rgb_small, size, regions=regions, sketch_u8=sketch, threads=threads)
                assert np.array_equal(ours, reference), (size, flat, threads)
            assert np.array_equal(
                render_u8(rgb_small, size, regions=regions, threads=threads),
                _legacy_render_u8(rgb_small, size, regions),
            )
        whole = carry_to_full_size(lab, small_l, sketch_l, sketch_u8, flat=flat, hints=hints, keep_flats=True)
        single = carry_to_full_size(
            lab, small_l, sketch_l, sketch_u8, flat=flat, hints=hints, keep_flats=True, threads=1
        )
        assert np.array_equal(whole[0], single[0]) and np.array_equal(whole[1], single[1])


def test_parallel_map_keeps_order_nests_and_raises():
    from sketchcolor.parallel import parallel_map

    assert parallel_map(lambda x: x * x, list(range(50)), threads=3) == [x * x for x in range(50)]
    nested = parallel_map(
        lambda x: sum(parallel_map(lambda y: y, list(range(x)), threads=2)), list(range(20)), 2
    )
    assert nested == [x * (x - 1) // 2 for x in range(20)]

    def boom(x):
        if x == 7:
            raise ValueError("seven")
        return x

    with pytest.raises(ValueError, match="seven"):
        parallel_map(boom, list(range(20)), threads=2)


@pytest.mark.parametrize(
    ("full", "size"),
    [((4096, 300), (1024, 75)), ((3508, 41), (1024, 12)), ((1027, 30), (64, 9)), ((500, 7), (64, 7))],
)
def test_banded_area_downscale_is_torch_area_interpolation(full, size):
    """Bands of output rows on threads give exactly F.interpolate's area values."""
    from sketchcolor.compose import area_downscale

    x = torch.rand(1, 1, *full, generator=torch.Generator().manual_seed(full[0]))
    want = torch.nn.functional.interpolate(x, size=size, mode="area")
    for threads in (1, 2, 3, 5):
        assert torch.equal(area_downscale(x, size, threads), want)
    # Several images and channels (a reference's RGB) too.
    x = torch.rand(2, 3, *full, generator=torch.Generator().manual_seed(full[1]))
    assert torch.equal(area_downscale(x, size, 2), torch.nn.functional.interpolate(x, size=size, mode="area"))


def test_area_downscale_keeps_torch_work_on_the_calling_thread(monkeypatch):
    """Torch work on composition threads made later parallel torch calls (the network's) run
    on about one core: the banded downscale must not use them."""
    import sketchcolor.compose as compose
    import sketchcolor.parallel as parallel

    def no_pool():
        raise AssertionError("area_downscale used the composition threads")

    monkeypatch.setattr(parallel, "_executor", no_pool)
    x = torch.rand(1, 1, 4096, 300, generator=torch.Generator().manual_seed(1))
    out = compose.area_downscale(x, (1024, 75), threads=2)
    assert torch.equal(out, torch.nn.functional.interpolate(x, size=(1024, 75), mode="area"))


def _lab(*rgb):
    return rgb_to_lab(torch.tensor(rgb, dtype=torch.float32).view(1, 3, 1, 1)).flatten()


def test_palette_of_swatches_and_flats_leaves_out_edges_and_gradients():
    red, blue, green = (0.9, 0.1, 0.1), (0.1, 0.3, 0.9), (0.2, 0.7, 0.3)
    picture = torch.ones(1, 3, 60, 300)
    picture[..., :, :100] = torch.tensor(red).view(3, 1, 1)
    picture[..., :, 140:300] = torch.tensor(blue).view(3, 1, 1)
    # A 40 px gradient from red to blue between them: no flat pixel, so no colour of its own.
    ramp = torch.linspace(0, 1, 40).view(1, 1, 1, 40)
    picture[..., :, 100:140] = (
        torch.tensor(red).view(1, 3, 1, 1) * (1 - ramp) + torch.tensor(blue).view(1, 3, 1, 1) * ramp
    )
    picture[..., 20:24, 200:204] = torch.tensor(green).view(3, 1, 1)  # 16 px: under the minimum share
    palette = reference_palette(picture)
    # Most used first: blue (160 columns), then red (100); green and the ramp left out.
    assert palette.shape == (2, 3)
    assert torch.allclose(palette[0], _lab(*blue), atol=0.05)
    assert torch.allclose(palette[1], _lab(*red), atol=0.05)


def test_palette_of_a_large_picture_is_found_on_a_downscaled_copy_and_noise_has_none():
    picture = torch.ones(1, 3, 1200, 900)
    picture[..., :700, :] = torch.tensor([0.8, 0.6, 0.2]).view(3, 1, 1)
    palette = reference_palette(picture)
    assert palette.shape == (2, 3)
    assert torch.allclose(palette[0], _lab(0.8, 0.6, 0.2), atol=0.05)
    assert torch.allclose(palette[1], _lab(1.0, 1.0, 1.0), atol=0.05)
    noise = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert reference_palette(noise).shape == (0, 3)


def test_snap_to_palette_replaces_only_colours_within_the_distance():
    palette = torch.tensor([[50.0, 40.0, 0.0], [70.0, 0.0, 50.0]])
    lab = torch.tensor([[52.0, 41.0, 0.0], [60.0, 0.0, 0.0], [71.0, 1.0, 49.0]]).T  # (3, K)
    snapped, near = snap_to_palette(lab, palette, 5.0)
    assert near.tolist() == [True, False, True]
    assert snapped[:, 0].tolist() == [50.0, 40.0, 0.0]
    assert snapped[:, 1].tolist() == [60.0, 0.0, 0.0]  # far from both: kept
    assert snapped[:, 2].tolist() == [70.0, 0.0, 50.0]
    assert torch.equal(snap_to_palette(lab, palette, 0.0)[0], lab)
    assert torch.equal(snap_to_palette(lab, torch.zeros(0, 3), 5.0)[0], lab)


def test_region_colours_take_palette_colours_near_them_but_hints_and_paper_win():
    # Five regions side by side (lines at columns 16, 32, 48, 64).
    sketch = torch.ones(1, 1, 32, 80)
    for c in (15, 31, 47, 63):
        sketch[..., :, c : c + 2] = 0.0
    lab = torch.zeros(1, 3, 32, 80)
    lab[:, :, :, :16] = torch.tensor([50.0, 42.0, 3.0]).view(1, 3, 1, 1)  # near palette colour 0
    lab[:, :, :, 16:32] = torch.tensor([52.0, -30.0, 30.0]).view(1, 3, 1, 1)  # near 1, but hinted
    lab[:, :, :, 32:48] = torch.tensor([98.0, 1.0, 1.0]).view(1, 3, 1, 1)  # near paper
    lab[:, 0, :, 48:] = 50.0
    lab[:, 1, :, 48:64] = torch.linspace(10, 70, 16)  # uneven, its mean (50, 40, 0) is colour 0
    lab[:, 2, :, 64:] = torch.linspace(-60, 60, 16)  # shaded, far from every palette colour
    palette = torch.tensor([[50.0, 40.0, 0.0], [50.0, -30.0, 30.0], [96.0, 2.0, 2.0]])
    rgb = torch.zeros(1, 3, 32, 80)
    mask = torch.zeros(1, 1, 32, 80)
    rgb[..., 10, 24] = torch.tensor([0.0, 0.0, 1.0]).view(1, 3)
    mask[..., 10, 24] = 1
    args = (lab, sketch, _interior(sketch))
    regions = region_colours(*args, hints=(rgb, mask), palette=palette, palette_distance=6.0)
    plain = region_colours(*args, hints=(rgb, mask))
    label = regions.labels[8]
    first, hinted, paper, uneven, shaded = (int(label[c]) for c in (8, 24, 40, 56, 72))
    expected = lab_to_rgb(palette[0].view(1, 3, 1, 1)).flatten()
    for k in (first, uneven):
        assert regions.snap[k] and torch.allclose(regions.rgb[:, k], expected, atol=1e-5)
    assert not torch.allclose(plain.rgb[:, first], expected, atol=1e-3) and not plain.snap[uneven]
    assert regions.rgb[:, hinted].tolist() == [0.0, 0.0, 1.0]
    assert torch.allclose(regions.rgb[:, paper], torch.ones(3), atol=1e-5)  # paper, not the near-white
    assert not regions.snap[shaded] and not plain.snap[shaded]


def test_uneven_page_background_keeps_its_colours_but_an_even_one_takes_the_palette():
    sketch = torch.ones(1, 1, 32, 32)  # one region: the whole page
    palette = torch.tensor([[50.0, 40.0, 0.0]])
    uneven = torch.zeros(1, 3, 32, 32)
    uneven[:, 0] = 50.0
    uneven[:, 1] = torch.linspace(10, 70, 32)  # mean (50, 40, 0), std above the snap threshold
    kept = region_colours(uneven, sketch, torch.ones(1, 1, 32, 32), palette=palette, palette_distance=6.0)
    assert not kept.snap[1:].any()
    even = torch.zeros(1, 3, 32, 32) + torch.tensor([52.0, 41.0, 2.0]).view(1, 3, 1, 1)
    taken = region_colours(even, sketch, torch.ones(1, 1, 32, 32), palette=palette, palette_distance=6.0)
    expected = lab_to_rgb(palette[0].view(1, 3, 1, 1)).flatten()
    assert taken.snap[1] and torch.allclose(taken.rgb[:, 1], expected, atol=1e-5)
