import numpy as np
import pytest
import torch
from skimage import color as skcolor

from sketchcolor.color import lab_to_model, lab_to_rgb, lightness, model_to_lab, rgb_to_lab
from sketchcolor.config import ColorConfig

from .conftest import rgb_grid


def _px(*values: float, dtype=torch.float64) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype).view(1, 3, 1, 1)


@pytest.mark.parametrize(
    ("rgb", "lab"),
    [
        ((1.0, 1.0, 1.0), (100.0, 0.0, 0.0)),
        ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0)),
        # Primaries (D65): standard published values, e.g. brucelindbloom.com / MathWorks rgb2lab.
        ((1.0, 0.0, 0.0), (53.2408, 80.0925, 67.2032)),
        ((0.0, 1.0, 0.0), (87.7347, -86.1827, 83.1793)),
        ((0.0, 0.0, 1.0), (32.2970, 79.1875, -107.8602)),
    ],
)
def test_rgb_to_lab_known_answers(rgb, lab):
    # 1e-2: scikit-image's rounded sRGB matrix maps white to b = 0.0047 rather than exactly 0.
    out = rgb_to_lab(_px(*rgb)).flatten()
    assert torch.allclose(out, torch.tensor(lab, dtype=torch.float64), atol=1e-2)


def test_lab_to_rgb_known_answer_mathworks():
    # MathWorks lab2rgb documentation: LAB (70, 5, 10) -> sRGB (0.7359, 0.6566, 0.6010).
    out = lab_to_rgb(_px(70.0, 5.0, 10.0)).flatten()
    assert torch.allclose(out, torch.tensor([0.7359, 0.6566, 0.6010], dtype=torch.float64), atol=1e-4)


def test_agrees_with_scikit_image_on_dense_grid():
    rgb = rgb_grid(33)
    lab = rgb_to_lab(rgb)
    ref = skcolor.rgb2lab(rgb[0].permute(1, 2, 0).numpy())
    assert np.abs(lab[0].permute(1, 2, 0).numpy() - ref).max() < 1e-3
    back = lab_to_rgb(lab)
    ref_back = skcolor.lab2rgb(ref)
    assert np.abs(back[0].permute(1, 2, 0).numpy() - ref_back).max() < 1e-3


def test_float32_agrees_with_scikit_image():
    rgb = rgb_grid(17).float()
    lab = rgb_to_lab(rgb)
    assert lab.dtype == torch.float32
    ref = skcolor.rgb2lab(rgb[0].permute(1, 2, 0).double().numpy())
    assert np.abs(lab[0].permute(1, 2, 0).double().numpy() - ref).max() < 1e-3


def test_round_trip_grid_and_random():
    gen = torch.Generator().manual_seed(0)
    rgb = torch.cat([rgb_grid(17), torch.rand(1, 3, 17, 289, generator=gen, dtype=torch.float64)], dim=2)
    assert (lab_to_rgb(rgb_to_lab(rgb)) - rgb).abs().max() < 1e-4


def test_batch_equals_per_image_and_any_batch_shape():
    gen = torch.Generator().manual_seed(1)
    rgb = torch.rand(4, 3, 5, 7, generator=gen)
    batched = rgb_to_lab(rgb)
    single = torch.cat([rgb_to_lab(rgb[i : i + 1]) for i in range(4)])
    # Vectorised pow kernels may round the last bit differently for different tensor lengths.
    assert torch.allclose(batched, single, rtol=1e-6, atol=1e-4)
    nested = rgb_to_lab(rgb.view(2, 2, 3, 5, 7))
    assert torch.allclose(nested.view(4, 3, 5, 7), batched, rtol=1e-6, atol=1e-4)


def test_half_precision_keeps_dtype():
    rgb = torch.rand(1, 3, 4, 4).half()
    lab = rgb_to_lab(rgb)
    assert lab.dtype == torch.float16
    assert (lab.float() - rgb_to_lab(rgb.float())).abs().max() < 0.1


@pytest.mark.parametrize("value", [0.0, 0.04045, 0.0031308, 1e-7, 1.0])
def test_gradients_finite_at_zero_and_branch_points(value):
    rgb = torch.full((1, 3, 2, 2), value, dtype=torch.float64, requires_grad=True)
    rgb_to_lab(rgb).sum().backward()
    assert torch.isfinite(rgb.grad).all()
    lab = torch.tensor([[value * 100, 0.0, 0.0]], dtype=torch.float64).view(1, 3, 1, 1).requires_grad_(True)
    lab_to_rgb(lab).sum().backward()
    assert torch.isfinite(lab.grad).all()


def test_gradient_through_lab_branch_point():
    # XYZ/white exactly at the CIE epsilon (0.008856) and zero: cube-root branch must not leak inf.
    from sketchcolor.color import xyz_to_lab

    xyz = torch.tensor([0.0, 0.008856, 0.02], dtype=torch.float64).view(1, 3, 1, 1).requires_grad_(True)
    xyz_to_lab(xyz).sum().backward()
    assert torch.isfinite(xyz.grad).all()


def test_lab_to_rgb_clips_out_of_gamut():
    out = lab_to_rgb(_px(50.0, 120.0, -120.0))
    assert out.min() >= 0 and out.max() <= 1


def test_model_space_round_trip_and_white():
    cfg = ColorConfig()
    lab = rgb_to_lab(torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(2)))
    assert torch.allclose(model_to_lab(lab_to_model(lab, cfg), cfg), lab, atol=1e-5)
    white = lab_to_model(_px(100.0, 0.0, 0.0, dtype=torch.float32), cfg)
    assert torch.allclose(white.flatten(), torch.tensor([1.0, 0.0, 0.0]))


def test_lightness_range():
    rgb = torch.stack([torch.zeros(3, 2, 2), torch.ones(3, 2, 2)])
    light = lightness(rgb)
    assert light.shape == (2, 1, 2, 2)
    assert torch.allclose(light[0], torch.zeros(1, 2, 2), atol=1e-6) and torch.allclose(
        light[1], torch.ones(1, 2, 2), atol=1e-5
    )


def test_wrong_channel_count_raises():
    with pytest.raises(ValueError, match=r"\(\.\.\., 3, H, W\)"):
        rgb_to_lab(torch.rand(1, 4, 2, 2))
