import numpy as np
import torch

from sketchcolor.color import lab_to_rgb, lightness
from sketchcolor.compose import (
    carry_to_full_size,
    compose_u8,
    interior_weight,
    remove_lines,
    sketch_lightness,
    sketch_lightness_u8,
    snap_to_regions,
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
    rgb_full = torch.full((1, 3, 64, 64), 0.5)
    out = snap_to_regions(rgb_full, sketch_full, lab_small, _interior(small_l))
    left = lab_to_rgb(torch.tensor([60.0, 0.0, 0.0]).view(1, 3, 1, 1)).flatten()
    right = lab_to_rgb(torch.tensor([30.0, 0.0, 0.0]).view(1, 3, 1, 1)).flatten()
    assert torch.allclose(out[0, :, 10, :30], left.view(3, 1).expand(3, 30), atol=1e-5)
    assert torch.allclose(out[0, :, 10, 34:], right.view(3, 1).expand(3, 30), atol=1e-5)
    assert torch.allclose(out[0, :, 10, 32], torch.full((3,), 0.5))  # line pixels keep their colour


def test_non_uniform_region_kept_smooth_unless_flat():
    sketch_full = torch.ones(1, 1, 32, 32)  # one region, a strong gradient inside it
    lab_small = torch.zeros(1, 3, 8, 8)
    lab_small[:, 0] = 50.0
    lab_small[:, 1] = torch.linspace(-60, 60, 8).view(1, 1, 8)
    rgb_full = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    kept = snap_to_regions(rgb_full.clone(), sketch_full, lab_small, torch.ones(1, 1, 8, 8))
    assert torch.equal(kept, rgb_full)
    flat = snap_to_regions(rgb_full.clone(), sketch_full, lab_small, torch.ones(1, 1, 8, 8), flat=True)
    assert len(torch.unique(flat[0, 0])) == 1


def test_closed_hinted_region_takes_hint_colour_border_region_does_not():
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
    rgb[..., 2, 2] = torch.tensor([0.0, 0.0, 1.0]).view(1, 3)  # blue hint in the open background
    mask[..., 2, 2] = 1
    out = snap_to_regions(
        torch.zeros(1, 3, 32, 32), sketch_l, lab_small, _interior(sketch_l), hints=(rgb, mask)
    )
    assert torch.allclose(out[0, :, 12, 12], torch.tensor([1.0, 0.0, 0.0]), atol=1e-3)
    grey = lab_to_rgb(torch.tensor([50.0, 0.0, 0.0]).view(1, 3, 1, 1)).flatten()
    assert torch.allclose(out[0, :, 2, 30], grey, atol=1e-5)  # background keeps the model's colour


def test_carry_to_full_size_and_compose_u8():
    small = torch.zeros(1, 3, 16, 16)
    small[:, 0] = 70.0
    rgb = carry_to_full_size(small, torch.ones(1, 1, 16, 16), _two_regions(64), flat=True)
    assert rgb.shape == (1, 3, 64, 64)
    sketch_u8 = torch.full((1, 3, 64, 64), 255, dtype=torch.uint8)
    sketch_u8[..., 32] = 51
    out = compose_u8(rgb, sketch_u8)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert (out[:, 32] <= 51).all()
    assert np.array_equal(
        compose_u8(rgb, None), (rgb[0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    )
