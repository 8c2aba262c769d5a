import numpy as np
import torch

from sketchcolor.color import lab_to_rgb, lightness
from sketchcolor.compose import (
    carry_to_full_size,
    interior_weight,
    region_colours,
    remove_lines,
    render_u8,
    sketch_lightness,
    sketch_lightness_u8,
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
