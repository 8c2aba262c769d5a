"""Colour conversions between sRGB, CIE XYZ (D65) and CIE LAB, and LAB <-> model space.

Owns: pure, batched torch functions; no IO, no numpy or scikit-image round trips, no flags that
switch input ranges. Imports only :mod:`sketchcolor.config`.

Ranges (documented once, here and in docs/conventions.md):

* sRGB: float in [0, 1], gamma-encoded (IEC 61966-2-1).
* linear RGB: float in [0, 1].
* XYZ: D65, 2-degree observer, Y of white = 1.
* LAB: L in [0, 100]; a, b in natural units, about [-128, 127] (D65 reference white).
* model space: each LAB channel shifted and scaled by :class:`~sketchcolor.config.ColorConfig`.

Channel axis: every function takes ``(..., 3, H, W)`` tensors (any number of leading batch
dimensions) on any device, in float16, bfloat16, float32 or float64. Half-precision inputs are
computed in float32 and returned in their own dtype.

Gamut policy: :func:`lab_to_rgb` clips its sRGB result to [0, 1], as scikit-image's ``lab2rgb`` and
MathWorks' ``lab2rgb`` do. Nothing else clips.

Gradients: each piecewise function evaluates its power branch on an input clamped into that
branch's own domain, so the branch not selected by ``torch.where`` never produces inf/NaN that
would leak into the gradient (0 * inf = NaN). Gradients are finite at 0 and at the branch points.

Constants follow scikit-image (sRGB primaries matrix of IEC 61966-2-1 and the D65 white
(0.95047, 1.0, 1.08883)), so results agree with ``skimage.color.rgb2lab``/``lab2rgb`` to ~1e-4.
"""

from __future__ import annotations

import torch

from .config import ColorConfig

# sRGB (linear) -> XYZ, D65 (IEC 61966-2-1 primaries, as in scikit-image).
_XYZ_FROM_RGB = (
    (0.412453, 0.357580, 0.180423),
    (0.212671, 0.715160, 0.072169),
    (0.019334, 0.119193, 0.950227),
)
_RGB_FROM_XYZ = tuple(
    tuple(row) for row in torch.linalg.inv(torch.tensor(_XYZ_FROM_RGB, dtype=torch.float64)).tolist()
)
#: Reference white of D65 with the 2-degree observer.
D65_WHITE = (0.95047, 1.0, 1.08883)

# CIE LAB companding constants. The original CIE values are 216/24389 and 24389/27; scikit-image
# uses the rounded 0.008856 and 7.787, which we keep so the two agree to ~1e-4.
_LAB_EPS = 0.008856
_LAB_KAPPA_OVER_116 = 7.787  # = kappa / 116
_LAB_F_EPS = 0.2068966  # f(_LAB_EPS) = cbrt(0.008856), the inverse's branch point
_SRGB_ENC_THRESHOLD = 0.0031308
_SRGB_DEC_THRESHOLD = 0.04045


def _work_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _check_channels(x: torch.Tensor, name: str) -> None:
    if x.dim() < 3 or x.shape[-3] != 3:
        raise ValueError(f"{name} must have shape (..., 3, H, W), got {tuple(x.shape)}")


def _matmul_channels(matrix: tuple[tuple[float, ...], ...], x: torch.Tensor) -> torch.Tensor:
    # Elementwise weighted sums rather than a BLAS call: bit-identical for any batch size.
    c0, c1, c2 = x.unbind(-3)
    return torch.stack([m0 * c0 + m1 * c1 + m2 * c2 for (m0, m1, m2) in matrix], dim=-3)


def srgb_to_linear(rgb: torch.Tensor) -> torch.Tensor:
    """Decode the sRGB transfer curve: gamma-encoded [0, 1] -> linear [0, 1]."""
    low = rgb / 12.92
    high = ((rgb.clamp(min=_SRGB_DEC_THRESHOLD) + 0.055) / 1.055) ** 2.4
    return torch.where(rgb > _SRGB_DEC_THRESHOLD, high, low)


def linear_to_srgb(linear: torch.Tensor) -> torch.Tensor:
    """Encode with the sRGB transfer curve: linear [0, 1] -> gamma-encoded [0, 1] (no clipping)."""
    low = linear * 12.92
    high = 1.055 * linear.clamp(min=_SRGB_ENC_THRESHOLD) ** (1.0 / 2.4) - 0.055
    return torch.where(linear > _SRGB_ENC_THRESHOLD, high, low)


def rgb_to_xyz(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] (..., 3, H, W) -> CIE XYZ (D65, Y of white = 1)."""
    _check_channels(rgb, "rgb")
    return _matmul_channels(_XYZ_FROM_RGB, srgb_to_linear(rgb))


def xyz_to_rgb(xyz: torch.Tensor) -> torch.Tensor:
    """CIE XYZ (D65) -> sRGB, not clipped (values outside [0, 1] are out of gamut)."""
    _check_channels(xyz, "xyz")
    return linear_to_srgb(_matmul_channels(_RGB_FROM_XYZ, xyz))


def xyz_to_lab(xyz: torch.Tensor) -> torch.Tensor:
    """CIE XYZ (D65) -> CIE LAB: L in [0, 100], a and b in natural units."""
    _check_channels(xyz, "xyz")
    white = torch.tensor(D65_WHITE, dtype=xyz.dtype, device=xyz.device).view(3, 1, 1)
    t = xyz / white
    # f(t): cube root above the CIE threshold, a linear segment below it.
    f = torch.where(
        t > _LAB_EPS, t.clamp(min=_LAB_EPS) ** (1.0 / 3.0), _LAB_KAPPA_OVER_116 * t + 16.0 / 116.0
    )
    fx, fy, fz = f.unbind(-3)
    lightness = 116.0 * fy - 16.0
    return torch.stack((lightness, 500.0 * (fx - fy), 200.0 * (fy - fz)), dim=-3)


def lab_to_xyz(lab: torch.Tensor) -> torch.Tensor:
    """CIE LAB -> CIE XYZ (D65); inverse of :func:`xyz_to_lab`."""
    _check_channels(lab, "lab")
    lightness, a, b = lab.unbind(-3)
    fy = (lightness + 16.0) / 116.0
    f = torch.stack((fy + a / 500.0, fy, fy - b / 200.0), dim=-3)
    # Inverse of f: cube above the branch point, the linear segment below it.
    t = torch.where(f > _LAB_F_EPS, f**3, (f - 16.0 / 116.0) / _LAB_KAPPA_OVER_116)
    white = torch.tensor(D65_WHITE, dtype=lab.dtype, device=lab.device).view(3, 1, 1)
    return t * white


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB -> CIE LAB (D65, 2-degree observer).

    Args:
        rgb: (..., 3, H, W) gamma-encoded sRGB in [0, 1].

    Returns:
        (..., 3, H, W) LAB with L in [0, 100] and a, b in natural units (about [-128, 127]),
        in ``rgb``'s dtype and device.

    Raises:
        ValueError: The channel axis (-3) does not have 3 entries.
    """
    _check_channels(rgb, "rgb")
    work = rgb.to(_work_dtype(rgb))
    return xyz_to_lab(rgb_to_xyz(work)).to(rgb.dtype)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """CIE LAB (D65, 2-degree observer) -> sRGB, clipped to the gamut [0, 1].

    Args:
        lab: (..., 3, H, W) LAB with L in [0, 100], a and b in natural units.

    Returns:
        (..., 3, H, W) gamma-encoded sRGB in [0, 1], in ``lab``'s dtype and device. Colours
        outside the sRGB gamut are clipped per channel (scikit-image's and MathWorks' policy).

    Raises:
        ValueError: The channel axis (-3) does not have 3 entries.
    """
    _check_channels(lab, "lab")
    work = lab.to(_work_dtype(lab))
    return xyz_to_rgb(lab_to_xyz(work)).clamp(0.0, 1.0).to(lab.dtype)


def lab_to_model(lab: torch.Tensor, config: ColorConfig) -> torch.Tensor:
    """LAB (..., 3, H, W) in natural units -> model space (white paper is +1 with the defaults)."""
    _check_channels(lab, "lab")
    lightness, ab = lab[..., :1, :, :], lab[..., 1:, :, :]
    return torch.cat(((lightness - config.l_center) / config.l_scale, ab / config.ab_scale), dim=-3)


def model_to_lab(x: torch.Tensor, config: ColorConfig) -> torch.Tensor:
    """Model space (..., 3, H, W) -> LAB in natural units; inverse of :func:`lab_to_model`."""
    _check_channels(x, "x")
    lightness, ab = x[..., :1, :, :], x[..., 1:, :, :]
    return torch.cat((lightness * config.l_scale + config.l_center, ab * config.ab_scale), dim=-3)


def lightness(rgb: torch.Tensor) -> torch.Tensor:
    """Perceptual lightness of sRGB as L/100: (..., 3, H, W) -> (..., 1, H, W) in [0, 1].

    The sketch channel of the conditioning is this (white paper 1, black ink 0).
    """
    return rgb_to_lab(rgb)[..., :1, :, :] / 100.0
