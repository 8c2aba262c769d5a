import torch

from sketchcolor.color import lightness
from sketchcolor.compose import (
    carry_to_full_size,
    interior_weight,
    multiply_lines,
    remove_lines,
    sketch_lightness,
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


def test_remove_lines_keeps_paper_and_replaces_line_colour():
    sketch_l = _two_regions(16)
    lab = torch.zeros(1, 3, 16, 16)
    lab[:, 0] = 80.0
    lab[..., 8] = torch.tensor([5.0, 0.0, 0.0]).view(1, 3, 1)  # the model drew a dark line
    out = remove_lines(lab, sketch_l)
    assert torch.allclose(out[..., 2], lab[..., 2])  # paper untouched
    assert torch.allclose(out[:, 0, :, 8], torch.full((1, 16), 80.0), atol=1e-3)  # line -> paper colour


def test_snap_gives_uniform_regions_their_interior_mean():
    sketch_l = _two_regions(32)
    lab = torch.zeros(1, 3, 32, 32)
    lab[:, 0, :, :16] = 60.0
    lab[:, 0, :, 17:] = 30.0
    lab[:, 0, :, 15] = 45.0  # colour bled across the line near the boundary
    lab[:, 0, :, 17] = 45.0
    interior = -torch.nn.functional.max_pool2d(-interior_weight(sketch_l), 3, stride=1, padding=1)
    out = snap_to_regions(lab.clone(), sketch_l, interior)
    assert torch.allclose(out[:, 0, :, :16], torch.full((1, 32, 16), 60.0))
    assert torch.allclose(out[:, 0, :, 17:], torch.full((1, 32, 15), 30.0))


def test_non_uniform_region_kept_smooth_unless_flat():
    sketch_l = torch.ones(1, 1, 32, 32)  # one region, a strong gradient inside it
    lab = torch.zeros(1, 3, 32, 32)
    lab[:, 1] = torch.linspace(-60, 60, 32).view(1, 1, 32)
    interior = torch.ones(1, 1, 32, 32)
    kept = snap_to_regions(lab.clone(), sketch_l, interior)
    assert torch.allclose(kept, lab)
    flat = snap_to_regions(lab.clone(), sketch_l, interior, flat=True)
    assert torch.allclose(flat[:, 1], torch.zeros(1, 32, 32), atol=1e-4)


def test_carry_to_full_size_shapes_and_multiply():
    small = torch.zeros(1, 3, 16, 16)
    small[:, 0] = 70.0
    rgb = carry_to_full_size(small, torch.ones(1, 1, 16, 16), _two_regions(64), flat=True)
    assert rgb.shape == (1, 3, 64, 64)
    sketch_rgb = torch.ones(1, 3, 64, 64)
    sketch_rgb[..., 32] = 0.2
    out = multiply_lines(rgb, sketch_rgb)
    assert (out[..., 32] <= 0.2 + 1e-6).all()


def test_closed_hinted_region_takes_hint_colour_border_region_does_not():
    # A closed square (rows/cols 8..23 outlined) inside an open background touching the border.
    sketch_l = torch.ones(1, 1, 32, 32)
    sketch_l[..., 8, 8:24] = sketch_l[..., 23, 8:24] = 0.0
    sketch_l[..., 8:24, 8] = sketch_l[..., 8:24, 23] = 0.0
    lab = torch.zeros(1, 3, 32, 32)
    lab[:, 0] = 50.0  # the model's (grey) colours everywhere
    rgb = torch.zeros(1, 3, 32, 32)
    mask = torch.zeros(1, 1, 32, 32)
    rgb[..., 15, 15] = torch.tensor([1.0, 0.0, 0.0]).view(1, 3)  # red hint inside the square
    mask[..., 15, 15] = 1
    rgb[..., 2, 2] = torch.tensor([0.0, 0.0, 1.0]).view(1, 3)  # blue hint in the open background
    mask[..., 2, 2] = 1
    interior = torch.ones(1, 1, 32, 32)
    out = snap_to_regions(lab.clone(), sketch_l, interior, hints=(rgb, mask))
    red_lab = torch.tensor([53.24, 80.09, 67.20])
    assert torch.allclose(out[0, :, 12, 12], red_lab, atol=0.05)
    assert torch.allclose(out[0, :, 2, 30], torch.tensor([50.0, 0.0, 0.0]))  # background keeps the model's
