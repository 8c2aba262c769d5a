"""Metrics: known answers, agreement with scikit-image, batch = per image, input validation.

The LPIPS adapter is tested only for how it finds, loads and applies weight files: the tests build
their own random AlexNet backbone, so the distances they see are not meaningful perceptual values.
"""

from __future__ import annotations

import math
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import color as skcolor
from skimage import metrics as skmetrics

from sketchcolor.color import rgb_to_lab
from sketchcolor.errors import SketchcolorError
from sketchcolor.metrics import (
    ALEXNET_URL,
    LpipsMetric,
    MetricUnavailableError,
    ciede2000,
    colourfulness,
    default_alexnet_path,
    hint_error,
    mean_ciede2000,
    psnr,
    score_images,
    ssim,
)

# Sharma, Wu and Dalal 2005, "The CIEDE2000 color-difference formula: implementation notes,
# supplementary test data, and mathematical observations", Color Res. Appl. 30(1):21-30, Table I
# (also http://www2.ece.rochester.edu/~gsharma/ciede2000/dataNprograms/ciede2000testdata.txt).
# Columns: L1, a1, b1, L2, a2, b2, published Delta E 2000 (4 decimals). The rows cover the
# implementation traps the paper lists: hue wrap-around near 0/360 and exactly 180 degrees apart
# (pairs 7-16), a neutral colour (pairs 7, 8), and dark colours with mean L far from 50 (33, 34).
SHARMA_PAIRS = [
    (1, 50.0000, 2.6772, -79.7751, 50.0000, 0.0000, -82.7485, 2.0425),
    (4, 50.0000, -1.3802, -84.2814, 50.0000, 0.0000, -82.7485, 1.0000),
    (7, 50.0000, 0.0000, 0.0000, 50.0000, -1.0000, 2.0000, 2.3669),
    (8, 50.0000, -1.0000, 2.0000, 50.0000, 0.0000, 0.0000, 2.3669),
    (9, 50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0009, 7.1792),
    (10, 50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0010, 7.1792),
    (11, 50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0011, 7.2195),
    (13, 50.0000, -0.0010, 2.4900, 50.0000, 0.0009, -2.4900, 4.8045),
    (15, 50.0000, -0.0010, 2.4900, 50.0000, 0.0011, -2.4900, 4.7461),
    (16, 50.0000, 2.5000, 0.0000, 50.0000, 0.0000, -2.5000, 4.3065),
    (17, 50.0000, 2.5000, 0.0000, 73.0000, 25.0000, -18.0000, 27.1492),
    (19, 50.0000, 2.5000, 0.0000, 56.0000, -27.0000, -3.0000, 31.9030),
    (25, 60.2574, -34.0099, 36.2677, 60.4626, -34.1751, 39.4387, 1.2644),
    (29, 22.7233, 20.0904, -46.6940, 23.0331, 14.9730, -42.5619, 2.0373),
    (31, 90.8027, -2.0831, 1.4410, 91.1528, -1.6435, 0.0447, 1.4441),
    (33, 6.7747, -0.2908, -2.4247, 5.8714, -0.0985, -2.2286, 0.6377),
    (34, 2.0776, 0.0795, -1.1350, 0.9033, -0.0636, -0.5514, 0.9082),
]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _rand_rgb(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, h, w, generator=_gen(seed), dtype=torch.float64)


def _structured_rgb(h: int = 48, w: int = 40) -> torch.Tensor:
    """Smooth gradients, a sharp-edged square and a checkerboard: strong local structure."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    square = ((yy > 0.3) & (yy < 0.7) & (xx > 0.2) & (xx < 0.6)).double()
    checker = ((torch.arange(h)[:, None] // 3 + torch.arange(w)[None, :] // 3) % 2).double()
    rgb = torch.stack([xx.double(), 0.5 * square + 0.5 * yy.double(), 0.2 + 0.6 * checker])
    return rgb.unsqueeze(0)


def _np_hwc(rgb: torch.Tensor) -> np.ndarray:
    return rgb.permute(1, 2, 0).double().numpy()


def _skimage_ssim(pred: torch.Tensor, target: torch.Tensor) -> float:
    return skmetrics.structural_similarity(
        _np_hwc(pred),
        _np_hwc(target),
        channel_axis=-1,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=1.0,
    )


def _lab_px(*lab: float) -> torch.Tensor:
    return torch.tensor(lab, dtype=torch.float64).view(3, 1, 1)


# --- PSNR -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("offset", "expected_db"), [(0.1, 20.0), (0.01, 40.0), (0.5, 20 * math.log10(2))])
def test_psnr_of_constant_offset_is_known(offset, expected_db):
    # MSE = offset**2 in either direction, so PSNR = -20 log10(offset), whatever the image.
    target = torch.cat([torch.full((1, 3, 8, 8), 0.25, dtype=torch.float64), 0.4 * _rand_rgb(1, 8, 8)])
    pred = target + offset
    expected = torch.full((2,), expected_db, dtype=torch.float64)
    assert torch.allclose(psnr(pred, target), expected, atol=1e-9)
    assert torch.allclose(psnr(target, pred), expected, atol=1e-9)


def test_psnr_identical_is_inf():
    rgb = _rand_rgb(2, 8, 8)
    assert torch.isposinf(psnr(rgb, rgb.clone())).all()


def test_psnr_agrees_with_skimage_and_batch_equals_per_image():
    pred, target = _rand_rgb(3, 16, 12, seed=1), _rand_rgb(3, 16, 12, seed=2)
    batch = psnr(pred, target)
    assert batch.shape == (3,)
    for i in range(3):
        ref = skmetrics.peak_signal_noise_ratio(_np_hwc(target[i]), _np_hwc(pred[i]), data_range=1.0)
        assert batch[i].item() == pytest.approx(ref, abs=1e-9)
        assert torch.equal(psnr(pred[i : i + 1], target[i : i + 1])[0], batch[i])


# --- SSIM -------------------------------------------------------------------------------------


def test_ssim_identical_is_one():
    rgb = _rand_rgb(2, 16, 16)
    assert torch.allclose(ssim(rgb, rgb.clone()), torch.ones(2, dtype=torch.float64), atol=1e-12)


def test_ssim_of_two_flat_images_is_the_luminance_term():
    # With zero variance the contrast-structure term is C2 / C2 = 1, leaving
    # (2 a b + C1) / (a^2 + b^2 + C1) with C1 = 0.01**2 (Wang et al. 2004, eq. 13).
    a, b = 0.2, 0.6
    pred, target = torch.full((1, 3, 16, 16), a), torch.full((1, 3, 16, 16), b)
    c1 = 0.01**2
    assert ssim(pred, target).item() == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), abs=1e-6)


@pytest.mark.parametrize("size", [(11, 11), (23, 37), (64, 48)])
def test_ssim_agrees_with_skimage_on_random_images(size):
    target = _rand_rgb(1, *size, seed=3)
    noise = torch.randn(target.shape, generator=_gen(4), dtype=torch.float64)
    pred = (target + 0.2 * noise).clamp(0, 1)
    assert abs(ssim(pred, target).item() - _skimage_ssim(pred[0], target[0])) < 1e-3


def test_ssim_agrees_with_skimage_on_structured_images():
    target = _structured_rgb()
    noise = torch.randn(target.shape, generator=_gen(5), dtype=torch.float64)
    distortions = {
        "noise": (target + 0.05 * noise).clamp(0, 1),
        "contrast": 0.5 + 0.6 * (target - 0.5),
        "shift": torch.roll(target, shifts=(2, 1), dims=(2, 3)),
        "float32": target.float() * 0.9,
    }
    for name, pred in distortions.items():
        ours = ssim(pred, target.to(pred.dtype)).item()
        ref = _skimage_ssim(pred[0], target[0])
        assert abs(ours - ref) < 1e-3, name


def test_ssim_batch_equals_per_image_and_is_symmetric():
    pred, target = _rand_rgb(3, 20, 24, seed=6), _rand_rgb(3, 20, 24, seed=7)
    batch = ssim(pred, target)
    per_image = torch.cat([ssim(pred[i : i + 1], target[i : i + 1]) for i in range(3)])
    assert torch.allclose(batch, per_image, atol=1e-12)
    assert torch.allclose(ssim(target, pred), batch, atol=1e-12)


def test_ssim_rejects_images_smaller_than_the_window():
    rgb = torch.rand(1, 3, 10, 32, generator=_gen())
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(rgb, rgb)


# --- CIEDE2000 --------------------------------------------------------------------------------


def test_ciede2000_matches_sharma_test_data_both_ways():
    rows = torch.tensor([row[1:] for row in SHARMA_PAIRS], dtype=torch.float64)
    lab1 = rows[:, 0:3].T.reshape(3, 1, -1)
    lab2 = rows[:, 3:6].T.reshape(3, 1, -1)
    expected = rows[:, 6]
    # The published values are rounded to 4 decimals.
    assert torch.allclose(ciede2000(lab1, lab2).flatten(), expected, atol=1e-4)
    assert torch.allclose(ciede2000(lab2, lab1).flatten(), expected, atol=1e-4)


def test_ciede2000_agrees_with_skimage_on_random_pairs():
    gen = _gen(8)
    n = 4000
    lab1 = torch.stack(
        [
            torch.rand(n, generator=gen) * 100,
            torch.randn(n, generator=gen) * 50,
            torch.randn(n, generator=gen) * 50,
        ]
    ).double()
    lab2 = lab1 + torch.randn(3, n, generator=gen, dtype=torch.float64) * 10
    # Hue edge cases: greys (a = b = 0) on either side, pure a or pure b axes, identical colours.
    lab1[1:, :200] = 0
    lab2[1:, 100:300] = 0
    lab1[2, 300:400] = 0
    lab2[1, 400:500] = 0
    lab2[:, 500:600] = lab1[:, 500:600]
    ours = ciede2000(lab1.view(3, 1, n), lab2.view(3, 1, n)).flatten().numpy()
    ref = skcolor.deltaE_ciede2000(lab1.T.numpy(), lab2.T.numpy())
    assert np.abs(ours - ref).max() < 1e-4


def test_ciede2000_identical_and_grey_colours_are_finite():
    lab = torch.tensor(
        [[50.0, 0.0, 0.0], [0.0, 0.0, 0.0], [100.0, 0.0, 0.0], [50.0, -0.0, -0.0], [40.0, 20.0, -30.0]]
    )
    lab = lab.T.reshape(3, 1, -1).double()
    same = ciede2000(lab, lab.clone())
    assert torch.isfinite(same).all() and (same == 0).all()
    # Two greys differ only in lightness: Delta E = |Delta L| / S_L (Sharma et al. eq. 18, 22).
    grey1, grey2 = _lab_px(50.0, 0.0, 0.0), _lab_px(60.0, 0.0, 0.0)
    s_l = 1 + 0.015 * 25 / math.sqrt(20 + 25)
    assert ciede2000(grey1, grey2).item() == pytest.approx(10 / s_l, abs=1e-12)
    # Grey against a colour (one chroma zero) and signed zeros stay finite and symmetric.
    colour = _lab_px(50.0, -0.0, 30.0)
    forward, backward = (
        ciede2000(_lab_px(50.0, -0.0, -0.0), colour),
        ciede2000(colour, _lab_px(50.0, 0.0, 0.0)),
    )
    assert torch.isfinite(forward).all() and forward.item() == pytest.approx(backward.item(), abs=1e-12)


def test_ciede2000_any_batch_shape_and_float32():
    gen = _gen(9)
    lab1 = torch.randn(2, 4, 3, 5, 6, generator=gen) * torch.tensor([20.0, 40.0, 40.0]).view(
        3, 1, 1
    ) + torch.tensor([50.0, 0.0, 0.0]).view(3, 1, 1)
    lab2 = lab1 + torch.randn(lab1.shape, generator=gen) * 5
    out = ciede2000(lab1, lab2)
    assert out.shape == (2, 4, 5, 6)
    flat = ciede2000(lab1.movedim(-3, 0).reshape(3, 1, -1), lab2.movedim(-3, 0).reshape(3, 1, -1))
    assert torch.allclose(out.flatten(), flat.flatten(), atol=1e-9)
    assert torch.allclose(out, ciede2000(lab1.double(), lab2.double()), atol=1e-6)


def test_ciede2000_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"same shape.*\(3, 2, 2\).*\(3, 2, 3\)"):
        ciede2000(torch.zeros(3, 2, 2), torch.zeros(3, 2, 3))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3, H, W\)"):
        ciede2000(torch.zeros(4, 2, 2), torch.zeros(4, 2, 2))


# --- mean CIEDE2000 and hint error ------------------------------------------------------------


def test_mean_ciede2000_identical_is_zero_and_matches_skimage_per_image():
    pred, target = _rand_rgb(2, 9, 7, seed=10), _rand_rgb(2, 9, 7, seed=11)
    assert (mean_ciede2000(target, target.clone()) == 0).all()
    batch = mean_ciede2000(pred, target)
    assert batch.shape == (2,)
    for i in range(2):
        ref = skcolor.deltaE_ciede2000(skcolor.rgb2lab(_np_hwc(pred[i])), skcolor.rgb2lab(_np_hwc(target[i])))
        # Our rgb_to_lab agrees with skimage's to ~1e-4 in LAB, hence the looser tolerance.
        assert batch[i].item() == pytest.approx(ref.mean(), abs=1e-3)
        assert torch.allclose(
            mean_ciede2000(pred[i : i + 1], target[i : i + 1]), batch[i : i + 1], atol=1e-12
        )


def test_hint_error_averages_over_hinted_pixels_only():
    pred = _rand_rgb(2, 6, 5, seed=12)
    hint_rgb = pred.clone()
    mask = torch.zeros(2, 1, 6, 5)
    # Image 0: two hinted pixels, one matching the prediction (Delta E 0) and one red hint.
    mask[0, 0, 1, 1] = mask[0, 0, 4, 2] = 1
    hint_rgb[0, :, 4, 2] = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    # Image 1: hinted everywhere with its own colours.
    mask[1] = 1
    # Unhinted pixels must not matter, whatever the hint image holds there.
    hint_rgb[0, :, 0, 0] = 0.0
    expected0 = ciede2000(rgb_to_lab(pred[0, :, 4:5, 2:3]), rgb_to_lab(hint_rgb[0, :, 4:5, 2:3])).item() / 2
    out = hint_error(pred, hint_rgb, mask)
    assert out[0].item() == pytest.approx(expected0, abs=1e-9)
    assert out[1].item() == 0.0
    per_image = torch.cat(
        [hint_error(pred[i : i + 1], hint_rgb[i : i + 1], mask[i : i + 1]) for i in range(2)]
    )
    assert torch.allclose(out, per_image, atol=1e-12)


def test_hint_error_is_nan_without_hints():
    pred = _rand_rgb(2, 4, 4)
    mask = torch.zeros(2, 1, 4, 4)
    mask[1, 0, 0, 0] = 1
    out = hint_error(pred, pred.clone(), mask)
    assert math.isnan(out[0].item()) and out[1].item() == 0.0


def test_hint_error_validates_mask():
    pred = _rand_rgb(1, 4, 4)
    with pytest.raises(ValueError, match=r"hint_mask must have shape \(1, 1, 4, 4\)"):
        hint_error(pred, pred, torch.ones(1, 3, 4, 4))
    with pytest.raises(ValueError, match="only 0 and 1"):
        hint_error(pred, pred, torch.full((1, 1, 4, 4), 0.5))


# --- colourfulness (Hasler & Süsstrunk 2003) --------------------------------------------------


def _colourfulness_numpy(rgb_255: np.ndarray) -> float:
    """The paper's formula written out on an (H, W, 3) array on the 8-bit scale, population statistics."""
    r, g, b = (rgb_255[..., c].astype(np.float64) for c in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    return math.sqrt(rg.std() ** 2 + yb.std() ** 2) + 0.3 * math.sqrt(rg.mean() ** 2 + yb.mean() ** 2)


@pytest.mark.parametrize("level", [0.0, 0.25, 0.5, 1.0])
def test_colourfulness_of_grey_is_zero(level):
    grey = torch.full((1, 3, 8, 8), level, dtype=torch.float64)
    ramp = torch.linspace(0, 1, 64, dtype=torch.float64).view(1, 1, 8, 8).expand(1, 3, 8, 8)
    assert colourfulness(grey).tolist() == [0.0]
    assert colourfulness(ramp).item() == pytest.approx(0.0, abs=1e-12)  # grey at many levels


@pytest.mark.parametrize(
    ("rgb", "rg", "yb"),
    [
        ((1, 0, 0), 255.0, 127.5),
        ((0, 1, 0), -255.0, 127.5),
        ((0, 0, 1), 0.0, -255.0),
        ((1, 1, 0), 0.0, 255.0),
    ],
)
def test_colourfulness_of_a_flat_colour_is_the_mean_term(rgb, rg, yb):
    # No spread: M = 0.3 * sqrt(mu_rg^2 + mu_yb^2) on the 8-bit scale.
    flat = torch.tensor(rgb, dtype=torch.float64).view(1, 3, 1, 1).expand(1, 3, 5, 7)
    assert colourfulness(flat).item() == pytest.approx(0.3 * math.hypot(rg, yb), rel=1e-12)
    if rgb == (1, 0, 0):
        # 0.3 * sqrt(255^2 + 127.5^2) = 0.3 * 127.5 * sqrt(5) = 85.5296
        assert colourfulness(flat).item() == pytest.approx(85.5296, abs=1e-4)


def test_colourfulness_of_half_red_half_blue_by_hand():
    # Red (255, 0, 0): rg = 255, yb = 127.5; blue (0, 0, 255): rg = 0, yb = -255. Half each:
    # mu_rg = 127.5, mu_yb = -63.75; sigma_rg = 127.5, sigma_yb = (127.5 + 255) / 2 = 191.25.
    # M = sqrt(127.5^2 + 191.25^2) + 0.3 * sqrt(127.5^2 + 63.75^2)
    #   = 63.75 * sqrt(13) + 0.3 * 63.75 * sqrt(5) = 229.8539 + 42.7648 = 272.6187.
    image = torch.zeros(1, 3, 4, 6, dtype=torch.float64)
    image[0, 0, :, :3] = 1.0
    image[0, 2, :, 3:] = 1.0
    assert colourfulness(image).item() == pytest.approx(272.6187, abs=1e-4)


def test_colourfulness_matches_the_formula_and_batch_equals_per_image():
    batch = _rand_rgb(3, 9, 11, seed=31)
    values = colourfulness(batch)
    assert values.shape == (3,) and values.dtype == torch.float64
    for i in range(3):
        rgb_255 = batch[i].permute(1, 2, 0).numpy() * 255.0
        assert values[i].item() == pytest.approx(_colourfulness_numpy(rgb_255), rel=1e-10)
        assert colourfulness(batch[i : i + 1]).item() == pytest.approx(values[i].item(), rel=1e-12)
    # float32 input gives the same value (the work is in float64), and more saturation scores higher.
    assert colourfulness(batch.float())[0].item() == pytest.approx(values[0].item(), rel=1e-5)
    pale = batch * 0.5 + 0.5 * batch.mean(dim=1, keepdim=True)
    assert (colourfulness(pale) < values).all()


def test_colourfulness_validates_its_input():
    with pytest.raises(ValueError, match=r"rgb must have shape \(N, 3, H, W\)"):
        colourfulness(torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match=r"rgb must hold RGB values in \[0, 1\]"):
        colourfulness(torch.full((1, 3, 4, 4), 255.0))


# --- input validation shared by the RGB metrics -----------------------------------------------


@pytest.mark.parametrize("metric", [psnr, ssim, mean_ciede2000])
def test_rgb_metrics_validate_inputs(metric):
    good = torch.rand(1, 3, 12, 12, generator=_gen())
    with pytest.raises(ValueError, match=r"same shape, got \(1, 3, 12, 12\) and \(1, 3, 12, 13\)"):
        metric(good, torch.rand(1, 3, 12, 13, generator=_gen()))
    with pytest.raises(ValueError, match=r"target_rgb must have shape \(N, 3, H, W\), got \(3, 12, 12\)"):
        metric(good, good[0])
    with pytest.raises(ValueError, match=r"pred_rgb must have shape \(N, 3, H, W\), got \(1, 4, 12, 12\)"):
        metric(torch.zeros(1, 4, 12, 12), good)
    # One range at the boundary: [-1, 1] images (the lpips convention) are refused, as is NaN.
    with pytest.raises(ValueError, match=r"pred_rgb must hold RGB values in \[0, 1\]"):
        metric(good * 2 - 1, good)
    with pytest.raises(ValueError, match=r"target_rgb must hold RGB values in \[0, 1\]"):
        metric(good, torch.full_like(good, math.nan))
    with pytest.raises(ValueError, match="floating-point"):
        metric((good * 255).to(torch.uint8), good)


# --- score_images -----------------------------------------------------------------------------


def test_score_images_collects_every_metric_per_image():
    pred, target = _rand_rgb(2, 16, 16, seed=13), _rand_rgb(2, 16, 16, seed=14)
    mask = torch.zeros(2, 1, 16, 16)
    mask[0, :, 3:5, 3:5] = 1
    scores = score_images(pred, target, hint_rgb=target, hint_mask=mask)
    assert set(scores) == {
        "psnr", "ssim", "ciede2000", "hint_ciede2000", "colourfulness", "colourfulness_truth"
    }  # fmt: skip
    assert all(len(values) == 2 and all(isinstance(v, float) for v in values) for values in scores.values())
    assert scores["psnr"] == psnr(pred, target).tolist()
    assert scores["ssim"] == ssim(pred, target).tolist()
    assert scores["ciede2000"] == mean_ciede2000(pred, target).tolist()
    assert scores["hint_ciede2000"][0] == hint_error(pred, target, mask)[0].item()
    assert math.isnan(scores["hint_ciede2000"][1])
    assert scores["colourfulness"] == colourfulness(pred).tolist()
    assert scores["colourfulness_truth"] == colourfulness(target).tolist()
    assert set(score_images(pred, target)) == {
        "psnr",
        "ssim",
        "ciede2000",
        "colourfulness",
        "colourfulness_truth",
    }


def test_score_images_wants_hint_rgb_and_mask_together():
    rgb = _rand_rgb(1, 12, 12)
    with pytest.raises(ValueError, match="together"):
        score_images(rgb, rgb, hint_rgb=rgb)


# --- LPIPS adapter: how weights are found and loaded (random backbones, not real scores) -------

# torchvision alexnet().features: (index, out_channels, in_channels, kernel) of each convolution.
_ALEXNET_CONVS = [(0, 64, 3, 11), (3, 192, 64, 5), (6, 384, 192, 3), (8, 256, 384, 3), (10, 256, 256, 3)]


def _write_backbone(path: Path, seed: int, *, with_classifier: bool = True) -> Path:
    """A torchvision-style AlexNet state dict with He-initialised random convolutions."""
    gen = _gen(seed)
    state = {}
    for index, out_ch, in_ch, k in _ALEXNET_CONVS:
        fan_in = in_ch * k * k
        state[f"features.{index}.weight"] = torch.randn(out_ch, in_ch, k, k, generator=gen) * math.sqrt(
            2 / fan_in
        )
        state[f"features.{index}.bias"] = torch.randn(out_ch, generator=gen) * 0.01
    if with_classifier:
        # The real file also holds the classifier; the adapter must ignore it (tiny stand-in here).
        state["classifier.1.weight"] = torch.zeros(2, 2)
    torch.save(state, path)
    return path


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Fail any test that tries to download weights or open a connection."""

    def refuse(*args, **kwargs):
        raise AssertionError("metrics tried to use the network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture(scope="module")
def backbone_file(tmp_path_factory) -> Path:
    return _write_backbone(tmp_path_factory.mktemp("alexnet") / "alexnet.pth", seed=0)


@pytest.fixture(scope="module")
def adapter(backbone_file) -> LpipsMetric:
    return LpipsMetric(backbone_file)


def test_lpips_adapter_loads_the_given_backbone_file(adapter, backbone_file):
    assert adapter.backbone_path == backbone_file
    saved = torch.load(backbone_file, weights_only=True)
    loaded = adapter._net.net.state_dict()
    assert torch.equal(loaded["slice1.0.weight"], saved["features.0.weight"])
    assert torch.equal(loaded["slice5.10.bias"], saved["features.10.bias"])
    # The linear layers come from the file shipped inside the lpips package.
    import lpips

    lins = torch.load(
        Path(lpips.__file__).parent / "weights/v0.1/alex.pth", map_location="cpu", weights_only=True
    )
    assert torch.equal(adapter._net.lin0.model[-1].weight, lins["lin0.model.1.weight"])


def test_lpips_adapter_distances_zero_for_identical_and_positive_otherwise(adapter):
    pred, target = _rand_rgb(2, 32, 40, seed=15).float(), _rand_rgb(2, 32, 40, seed=16).float()
    same = adapter(target, target.clone())
    assert same.shape == (2,) and torch.allclose(same, torch.zeros(2), atol=1e-7)
    different = adapter(pred, target)
    assert (different > 0).all()
    assert torch.allclose(adapter(target, pred), different, rtol=1e-5)
    per_image = torch.cat([adapter(pred[i : i + 1], target[i : i + 1]) for i in range(2)])
    assert torch.allclose(per_image, different, rtol=1e-5)


def test_lpips_adapter_rescales_zero_one_input_once(adapter):
    pred, target = _rand_rgb(1, 32, 32, seed=17).float(), _rand_rgb(1, 32, 32, seed=18).float()
    with torch.no_grad():
        direct = adapter._net(pred * 2 - 1, target * 2 - 1).flatten()
    assert torch.allclose(adapter(pred, target), direct)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        adapter(pred * 2 - 1, target * 2 - 1)
    with pytest.raises(ValueError, match="at least 31x31"):
        adapter(pred[..., :30], target[..., :30])


def test_lpips_adapter_distance_changes_with_the_backbone(adapter, tmp_path):
    other = LpipsMetric(_write_backbone(tmp_path / "other.pth", seed=1, with_classifier=False))
    pred, target = _rand_rgb(1, 32, 32, seed=19).float(), _rand_rgb(1, 32, 32, seed=20).float()
    assert not torch.allclose(other(pred, target), adapter(pred, target))


def test_lpips_adapter_missing_file_names_path_and_url(tmp_path):
    missing = tmp_path / "nowhere" / "alexnet.pth"
    with pytest.raises(MetricUnavailableError) as info:
        LpipsMetric(missing)
    message = str(info.value)
    assert str(missing) in message and ALEXNET_URL in message and "\n" not in message
    assert isinstance(info.value, SketchcolorError)


def test_lpips_adapter_looks_in_the_torch_hub_cache_by_default(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    expected = tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    assert default_alexnet_path() == expected
    with pytest.raises(MetricUnavailableError, match=str(expected)):
        LpipsMetric()
    expected.parent.mkdir(parents=True)
    _write_backbone(expected, seed=2)
    assert LpipsMetric().backbone_path == expected


def test_lpips_adapter_rejects_files_that_are_not_alexnet_weights(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a weight file" * 10)
    with pytest.raises(MetricUnavailableError, match="not a readable PyTorch weight file"):
        LpipsMetric(garbage)
    wrong_shape = _write_backbone(tmp_path / "wrong.pth", seed=3)
    state = torch.load(wrong_shape, weights_only=True)
    state["features.3.weight"] = state["features.3.weight"][:, :32]
    torch.save(state, wrong_shape)
    with pytest.raises(
        MetricUnavailableError, match=r"does not hold torchvision AlexNet weights.*size mismatch"
    ):
        LpipsMetric(wrong_shape)
    del state["features.3.weight"]
    torch.save(state, wrong_shape)
    with pytest.raises(MetricUnavailableError, match=r"lacks features\.3\.weight"):
        LpipsMetric(wrong_shape)


def test_score_images_includes_the_lpips_adapter(adapter):
    pred, target = _rand_rgb(2, 32, 32, seed=21), _rand_rgb(2, 32, 32, seed=22)
    scores = score_images(pred, target, lpips_metric=adapter)
    assert scores["lpips"] == pytest.approx(adapter(pred, target).tolist(), rel=1e-6)
