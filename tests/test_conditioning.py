import numpy as np
import pytest
import torch

from sketchcolor.color import rgb_to_lab
from sketchcolor.conditioning import (
    Conditioning,
    from_points,
    hints_from_rgba,
    label_closed_regions,
    make_conditioning,
    nearest_feature,
    region_fill,
    resize_hints,
    within_distance,
)
from sketchcolor.config import ColorConfig, ConditioningConfig
from sketchcolor.errors import HintError


def test_white_and_transparent_mean_no_hint():
    rgba = torch.ones(1, 4, 2, 3)  # opaque white
    rgba[0, :3, 0, 0] = torch.tensor([1.0, 0.0, 0.0])  # red
    rgba[0, :, 0, 1] = torch.tensor([0.0, 0.0, 1.0, 0.0])  # transparent blue
    rgba[0, :3, 1, 2] = 0.5  # opaque grey: a real hint (grey is a colour)
    rgb, mask = hints_from_rgba(rgba)
    assert mask[0, 0].tolist() == [[1, 0, 0], [0, 0, 1]]
    assert rgb[0, :, 0, 1].tolist() == [0, 0, 0]


@pytest.mark.parametrize("target", [(7, 5), (3, 3), (1, 1), (13, 11)])
def test_downscale_never_loses_a_dot(target):
    rgb = torch.zeros(1, 3, 101, 77)
    mask = torch.zeros(1, 1, 101, 77)
    rgb[0, :, 50, 33] = torch.tensor([0.2, 0.4, 0.9])
    mask[0, 0, 50, 33] = 1
    out_rgb, out_mask = resize_hints(rgb, mask, target)
    assert out_mask.sum() >= 1
    idx = out_mask[0, 0].nonzero()[0]
    assert torch.allclose(out_rgb[0, :, idx[0], idx[1]], torch.tensor([0.2, 0.4, 0.9]), atol=1e-6)


def test_upscale_is_nearest():
    rgb = torch.tensor([[1.0, 0.0], [0.0, 0.0]]).expand(1, 3, 2, 2).clone()
    mask = torch.tensor([[1.0, 0.0], [0.0, 0.0]]).view(1, 1, 2, 2)
    out_rgb, out_mask = resize_hints(rgb, mask, (4, 4))
    assert out_mask[0, 0].sum() == 4 and out_mask[0, 0, :2, :2].all()
    assert set(out_rgb.unique().tolist()) == {0.0, 1.0}


def test_from_points_paints_discs_and_rejects_outside():
    rgb, mask = from_points([(2, 3, (1.0, 0.0, 0.0))], (8, 8), radius=1)
    assert mask[0, 0, 3, 2] == 1 and mask[0, 0, 3, 3] == 1 and mask[0, 0, 5, 5] == 0
    assert mask.sum() == 5
    with pytest.raises(HintError, match=r"\(9, 1\) is outside the 8x8 image"):
        from_points([(9, 1, (1.0, 0.0, 0.0))], (8, 8))


def test_region_fill_spreads_hint_inside_its_region_only():
    sketch = torch.ones(1, 1, 8, 8)
    sketch[..., :, 4] = 0.0  # a vertical line splits the image into two regions
    lab = torch.zeros(1, 3, 8, 8)
    mask = torch.zeros(1, 1, 8, 8)
    lab[0, :, 2, 1] = torch.tensor([50.0, 60.0, 20.0])
    mask[0, 0, 2, 1] = 1
    fill_lab, fill_mask = region_fill(sketch, lab, mask)
    assert fill_mask[0, 0, :, :4].all() and not fill_mask[0, 0, :, 4:].any()
    assert torch.allclose(fill_lab[0, :, 7, 0], torch.tensor([50.0, 60.0, 20.0]))
    assert torch.all(fill_lab[0, :, :, 4:] == 0)


def test_region_fill_averages_hints_in_a_region():
    sketch = torch.ones(1, 1, 4, 4)
    lab = torch.zeros(1, 3, 4, 4)
    mask = torch.zeros(1, 1, 4, 4)
    lab[0, :, 0, 0] = torch.tensor([40.0, 10.0, 0.0])
    lab[0, :, 3, 3] = torch.tensor([60.0, 30.0, 0.0])
    mask[0, 0, 0, 0] = mask[0, 0, 3, 3] = 1
    fill_lab, _ = region_fill(sketch, lab, mask)
    assert torch.allclose(fill_lab[0, :, 1, 2], torch.tensor([50.0, 20.0, 0.0]))


def test_channel_layout_and_hint_mask_distinguishes_grey():
    sketch = torch.ones(1, 1, 4, 4)
    grey = torch.full((1, 3, 4, 4), 0.5)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., 0, 0] = 1
    cfg = ConditioningConfig(region_fill=True)
    cond = make_conditioning(sketch, grey * mask, mask, cfg)
    ch = cond.as_channels(cfg, ColorConfig())
    assert ch.shape == (1, len(cfg.channels), 4, 4)
    assert ch[0, cfg.channels.index("sketch")].eq(1.0).all()
    hint_mask = ch[0, cfg.channels.index("hint_mask")]
    assert hint_mask[0, 0] == 1 and hint_mask.sum() == 1
    # A grey hint has a = b = 0, like "no hint"; only the mask tells them apart.
    assert abs(ch[0, cfg.channels.index("hint_a"), 0, 0]) < 1e-3
    expected_l = (rgb_to_lab(torch.full((1, 3, 1, 1), 0.5))[0, 0, 0, 0] - 50) / 50
    assert torch.allclose(ch[0, cfg.channels.index("hint_L"), 0, 0], expected_l, atol=1e-5)
    assert ch[0, cfg.channels.index("fill_mask")].eq(1).all()  # no lines: one region, filled


def test_without_hints_and_keep():
    cond = make_conditioning(
        torch.ones(2, 1, 4, 4), torch.rand(2, 3, 4, 4), torch.ones(2, 1, 4, 4), ConditioningConfig()
    )
    assert cond.without_hints().hint_mask.sum() == 0
    kept = cond.keep_hints(torch.tensor([True, False]))
    assert kept.hint_mask[0].sum() == 16 and kept.hint_mask[1].sum() == 0
    assert kept.hint_lab[1].abs().sum() == 0


def test_model_without_fill_refuses_missing_fill():
    cond = Conditioning(torch.ones(1, 1, 2, 2), torch.zeros(1, 3, 2, 2), torch.zeros(1, 1, 2, 2))
    with pytest.raises(ValueError, match="region fill"):
        cond.as_channels(ConditioningConfig(region_fill=True), ColorConfig())


def test_shape_validation():
    with pytest.raises(ValueError, match="hint_mask must be"):
        Conditioning(torch.ones(1, 1, 2, 2), torch.zeros(1, 3, 2, 2), torch.zeros(1, 1, 3, 2))


@pytest.mark.parametrize(
    ("shape", "density", "radius"),
    [
        ((64, 64), 0.01, 2.0),
        ((97, 131), 0.002, 3.5),  # odd sizes, a radius between integers
        ((1024, 1024), 0.0005, 16.0),  # the composition's grid and gap at its largest
        ((300, 200), 0.0002, 64.0),  # the widest gap step of the hint closing
        ((5, 400), 0.05, 7.3),  # a strip thinner than the disc
        ((128, 128), 0.6, 4.0),  # dense: counts far above 1
        ((1, 50), 0.1, 0.0),
    ],
)
def test_within_distance_is_scipys_thresholded_distance_transform(shape, density, radius):
    from scipy import ndimage

    rng = np.random.default_rng(int(radius * 10) + shape[0])
    points = rng.random(shape) < density
    points[shape[0] // 2, shape[1] // 2] = True
    expected = ndimage.distance_transform_edt(~points) <= radius
    assert np.array_equal(within_distance(points, radius), expected)


def test_within_distance_of_nothing_is_empty_and_of_everything_is_everything():
    assert not within_distance(np.zeros((40, 30), bool), 5.0).any()
    assert within_distance(np.ones((40, 30), bool), 5.0).all()


def _grid(kind: str, seed: int) -> np.ndarray:
    """A background grid (True) with False feature pixels: random at some density, or a lattice
    (where equidistant features, so ties, are everywhere), with a line through it."""
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(260, 420)), int(rng.integers(40, 300))
    if kind == "lattice":
        bg = np.ones((h, w), bool)
        sy, sx = (int(v) for v in rng.integers(2, 9, 2))
        bg[int(rng.integers(0, sy)) :: sy, int(rng.integers(0, sx)) :: sx] = False
        bg[int(rng.integers(0, h)), :] = False
        return bg
    return rng.random((h, w)) > {"dense": 0.4, "sparse": 0.03}[kind]


def _whole(bg):
    from scipy import ndimage

    return ndimage.distance_transform_edt(bg, return_distances=False, return_indices=True)


@pytest.mark.parametrize("kind", ["dense", "sparse", "lattice"])
@pytest.mark.parametrize("threads", [2, 3, 4])
def test_nearest_feature_in_bands_is_the_whole_grids_ties_included(monkeypatch, kind, threads):
    from scipy import ndimage

    import sketchcolor.conditioning as conditioning

    monkeypatch.setattr(conditioning, "NEAREST_BAND_PIXELS", 0)  # bands on these small grids too
    shapes = []
    real = ndimage.distance_transform_edt
    monkeypatch.setattr(
        ndimage, "distance_transform_edt", lambda x, **k: shapes.append(x.shape) or real(x, **k)
    )
    for seed in range(4):
        bg = _grid(kind, seed * 10 + threads)
        want = _whole(bg)
        shapes.clear()
        got = nearest_feature(bg, threads, reach=24)
        assert got.dtype == want.dtype and np.array_equal(got, want)
        # It was done in bands, each a part of the rows.
        assert len(shapes) == threads and all(s[0] < bg.shape[0] for s in shapes)


def test_nearest_feature_is_exact_where_it_cares_and_falls_back_where_a_band_is_too_short(monkeypatch):
    import sketchcolor.conditioning as conditioning

    monkeypatch.setattr(conditioning, "NEAREST_BAND_PIXELS", 0)
    bg = np.ones((400, 120), bool)
    bg[10, 5] = bg[390, 100] = False  # two features far apart: the middle rows are far from both
    want = _whole(bg)
    assert np.array_equal(nearest_feature(bg, 2, reach=20), want)  # the far middle: the whole grid
    near = within_distance(~bg, 30.0)  # only pixels near a feature matter
    got = nearest_feature(bg, 2, reach=32, care=near)
    assert np.array_equal(got[:, near], want[:, near])
    assert not np.array_equal(got, want)  # the banded answer was kept: elsewhere it is not exact


def _broken_outlines(seed: int, size: int = 520) -> np.ndarray:
    """A sketch of overlapping outlined boxes and discs whose outlines have small gaps."""
    rng = np.random.default_rng(seed)
    sk = np.ones((size, size), np.float32)
    yy, xx = np.mgrid[:size, :size]
    for _ in range(14):
        cy, cx = (int(v) for v in rng.integers(20, size - 20, 2))
        r = int(rng.integers(8, 90))
        ring = np.abs(np.hypot(yy - cy, xx - cx) - r) < rng.uniform(0.8, 3.0)
        gap = np.abs(np.arctan2(yy - cy, xx - cx) - rng.uniform(-3, 3)) < rng.uniform(0.0, 0.15)
        sk[ring & ~gap] = 0.1
    return sk


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_label_closed_regions_are_the_same_on_any_number_of_threads(monkeypatch, seed):
    import sketchcolor.conditioning as conditioning

    monkeypatch.setattr(conditioning, "NEAREST_BAND_PIXELS", 0)
    sketch = _broken_outlines(seed)
    one = label_closed_regions(sketch, gap=8.0)
    assert one.max() > 5  # regions were found and gaps closed
    for threads in (2, 3):
        assert np.array_equal(label_closed_regions(sketch, gap=8.0, threads=threads), one)
