"""Evaluation metrics: PSNR and SSIM on RGB, CIEDE2000 on LAB, colourfulness, and an LPIPS adapter.

Owns: per-image image-quality metrics and :func:`score_images`, which gathers them into one
mapping for the ``eval`` command. Every metric returns one value per image, shape (N,).

Imports only :mod:`sketchcolor.errors` and :mod:`sketchcolor.color` from the package (plus torch;
the ``lpips`` package is imported lazily by :class:`LpipsMetric`). Must not import models,
samplers, checkpoints or the pipeline: metrics judge pictures, not how they were made.

Conventions (see docs/conventions.md):

* RGB images are (N, 3, H, W) gamma-encoded sRGB in [0, 1]; values outside [0, 1], NaN or inf
  raise ``ValueError``. This is the only input range any function here accepts, including the
  LPIPS adapter (which rescales to lpips' [-1, 1] internally).
* LAB tensors are (..., 3, H, W) with L in [0, 100] and a, b in natural units.
* Results are float64 (float32 on Apple MPS, which has no float64), on the input's device.
  The LPIPS adapter computes in float32, as its network does.
"""

from __future__ import annotations

import math
import os
import pickle
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from .color import rgb_to_lab
from .errors import SketchcolorError

if TYPE_CHECKING:
    import lpips

__all__ = [
    "ALEXNET_URL",
    "LpipsMetric",
    "MetricUnavailableError",
    "ciede2000",
    "colourfulness",
    "default_alexnet_path",
    "hint_error",
    "mean_ciede2000",
    "psnr",
    "score_images",
    "ssim",
]

# SSIM constants of Wang et al. 2004, Sec. III-C: an 11x11 circular-symmetric Gaussian window
# with sigma 1.5, K1 = 0.01, K2 = 0.03, and data range L = 1 for RGB in [0, 1].
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03

#: torchvision's ImageNet AlexNet weights, the backbone LPIPS v0.1 ("alex") was calibrated on.
ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
ALEXNET_FILENAME = "alexnet-owt-7be5be79.pth"
# AlexNet's five feature stages need at least 31 px per side: conv1 (k11, s4, p2) must give >= 7
# columns so that both stride-2 max-pools still leave one.
_LPIPS_MIN_SIZE = 31
# torchvision AlexNet `features` indices that hold parameters (the five convolutions).
_ALEXNET_CONV_INDICES = (0, 3, 6, 8, 10)


class MetricUnavailableError(SketchcolorError):
    """An optional metric cannot be computed because a file or package it needs is missing."""


def _work_dtype(device: torch.device) -> torch.dtype:
    # float64 keeps SSIM's E[x^2] - mu^2 and PSNR's log of tiny MSEs exact enough; MPS lacks it.
    return torch.float32 if device.type == "mps" else torch.float64


def _check_rgb(rgb: torch.Tensor, name: str) -> None:
    if rgb.dim() != 4 or rgb.shape[1] != 3:
        raise ValueError(f"{name} must have shape (N, 3, H, W), got {tuple(rgb.shape)}")
    if not rgb.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor with RGB in [0, 1], got {rgb.dtype}")
    if rgb.numel() == 0:
        raise ValueError(f"{name} is empty: shape {tuple(rgb.shape)}")
    low, high = rgb.amin().item(), rgb.amax().item()
    # NaN fails both comparisons, so test for the good case and reject everything else.
    if not (low >= 0.0 and high <= 1.0):
        raise ValueError(f"{name} must hold RGB values in [0, 1], got values in [{low:.4g}, {high:.4g}]")


def _check_rgb_pair(pred_rgb: torch.Tensor, target_rgb: torch.Tensor, names: tuple[str, str]) -> None:
    _check_rgb(pred_rgb, names[0])
    _check_rgb(target_rgb, names[1])
    if pred_rgb.shape != target_rgb.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same shape, "
            f"got {tuple(pred_rgb.shape)} and {tuple(target_rgb.shape)}"
        )


def psnr(pred_rgb: torch.Tensor, target_rgb: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, 10 * log10(1 / MSE), with peak value 1.

    The mean squared error is taken over all channels and pixels of each image.

    Args:
        pred_rgb: (N, 3, H, W) sRGB in [0, 1].
        target_rgb: (N, 3, H, W) sRGB in [0, 1], same shape.

    Returns:
        (N,) PSNR in dB. Identical images have MSE 0 and give ``+inf`` (no epsilon is added, so a
        perfect result is never mistaken for a merely good one); average with care.

    Raises:
        ValueError: Wrong shapes, mismatched shapes, or values outside [0, 1].
    """
    _check_rgb_pair(pred_rgb, target_rgb, ("pred_rgb", "target_rgb"))
    dtype = _work_dtype(pred_rgb.device)
    mse = (pred_rgb.to(dtype) - target_rgb.to(dtype)).square().mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(1.0 / mse)


def _gaussian_window_1d(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    radius = SSIM_WINDOW // 2
    x = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    window = torch.exp(-(x**2) / (2 * SSIM_SIGMA**2))
    return window / window.sum()


def ssim(pred_rgb: torch.Tensor, target_rgb: torch.Tensor) -> torch.Tensor:
    """Structural similarity per image, the mean of the per-channel SSIM of R, G and B.

    Wang, Bovik, Sheikh and Simoncelli 2004, "Image quality assessment: from error visibility to
    structural similarity", eq. 13 with the Gaussian-weighted local statistics of Sec. III-C:
    11x11 window, sigma 1.5, K1 = 0.01, K2 = 0.03, data range 1, population (not sample)
    covariances. The SSIM map is averaged over the "valid" region only (pixels whose window lies
    inside the image, i.e. a 5-pixel border is left out), which is exactly what
    ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1.0, channel_axis=-1)`` reports.

    Args:
        pred_rgb: (N, 3, H, W) sRGB in [0, 1], with H and W at least 11.
        target_rgb: (N, 3, H, W) sRGB in [0, 1], same shape.

    Returns:
        (N,) SSIM in [-1, 1]; 1 for identical images.

    Raises:
        ValueError: Wrong or mismatched shapes, images smaller than 11x11, or values outside [0, 1].
    """
    _check_rgb_pair(pred_rgb, target_rgb, ("pred_rgb", "target_rgb"))
    n, c, h, w = pred_rgb.shape
    if min(h, w) < SSIM_WINDOW:
        raise ValueError(f"ssim needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got {h}x{w}")
    dtype = _work_dtype(pred_rgb.device)
    x, y = pred_rgb.to(dtype), target_rgb.to(dtype)

    # Local (Gaussian-weighted) first and second moments, all five maps in one separable blur.
    moments = torch.stack((x, y, x * x, y * y, x * y), dim=2).reshape(n * c * 5, 1, h, w)
    window = _gaussian_window_1d(dtype, pred_rgb.device)
    moments = F.conv2d(moments, window.view(1, 1, -1, 1))
    moments = F.conv2d(moments, window.view(1, 1, 1, -1))
    mu_x, mu_y, e_xx, e_yy, e_xy = moments.reshape(n, c, 5, *moments.shape[-2:]).unbind(2)
    var_x, var_y = e_xx - mu_x * mu_x, e_yy - mu_y * mu_y
    cov_xy = e_xy - mu_x * mu_y

    # Eq. 13: luminance * contrast-structure with the stabilising constants C1, C2 (eq. 7, 10).
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / (
        (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    )
    return ssim_map.mean(dim=(1, 2, 3))


def _check_lab_pair(lab1: torch.Tensor, lab2: torch.Tensor) -> None:
    for name, lab in (("lab1", lab1), ("lab2", lab2)):
        if lab.dim() < 3 or lab.shape[-3] != 3:
            raise ValueError(f"{name} must have shape (..., 3, H, W), got {tuple(lab.shape)}")
    if lab1.shape != lab2.shape:
        raise ValueError(
            f"lab1 and lab2 must have the same shape, got {tuple(lab1.shape)} and {tuple(lab2.shape)}"
        )


def _hue_angle(a_prime: torch.Tensor, b: torch.Tensor, chroma: torch.Tensor) -> torch.Tensor:
    # Sharma et al. eq. 4: h' = atan2(b, a') in [0, 2 pi), and h' = 0 for a neutral colour. The
    # explicit zero also covers signed zeros, where atan2(0, -0.0) would give pi.
    hue = torch.atan2(b, a_prime)
    hue = torch.where(hue < 0, hue + 2 * math.pi, hue)
    return torch.where(chroma == 0, torch.zeros_like(hue), hue)


def ciede2000(lab1: torch.Tensor, lab2: torch.Tensor) -> torch.Tensor:
    """CIEDE2000 colour difference per pixel, with the reference weights kL = kC = kH = 1.

    Follows the step-by-step equations of Sharma, Wu and Dalal 2005, "The CIEDE2000
    color-difference formula: implementation notes, supplementary test data, and mathematical
    observations", Color Res. Appl. 30(1):21-30 (eqs. 1-22), including their conventions for
    neutral colours: the hue of a colour with C' = 0 is 0, and when either chroma is 0 the hue
    difference is 0 and the mean hue is h'1 + h'2. The result is finite for identical colours
    and for greys. The formula is symmetric in its arguments; it has small discontinuities
    where the two hues lie exactly 180 degrees apart (Sharma et al., Sec. "Discontinuities").

    Args:
        lab1: (..., 3, H, W) LAB, L in [0, 100], a and b in natural units.
        lab2: (..., 3, H, W) LAB, same shape.

    Returns:
        (..., H, W) Delta E 2000 (>= 0), float64 (float32 on MPS).

    Raises:
        ValueError: The channel axis (-3) does not have 3 entries or the shapes differ.
    """
    _check_lab_pair(lab1, lab2)
    dtype = _work_dtype(lab1.device)
    l1, a1, b1 = lab1.to(dtype).unbind(-3)
    l2, a2, b2 = lab2.to(dtype).unbind(-3)
    pi = math.pi

    # Step 1 (eqs. 2-7): stretch a* by 1 + G, which grows as the mean chroma falls, then take
    # the chroma C' and hue h' of (a', b).
    chroma_mean7 = ((torch.hypot(a1, b1) + torch.hypot(a2, b2)) / 2) ** 7
    g = 0.5 * (1 - torch.sqrt(chroma_mean7 / (chroma_mean7 + 25.0**7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = torch.hypot(a1p, b1), torch.hypot(a2p, b2)
    h1p, h2p = _hue_angle(a1p, b1, c1p), _hue_angle(a2p, b2, c2p)

    # Step 2 (eqs. 8-11): differences in lightness, chroma and hue.
    delta_l = l2 - l1
    delta_c = c2p - c1p
    chroma_product = c1p * c2p
    both_chromatic = chroma_product != 0
    dh = h2p - h1p
    dh = torch.where(dh > pi, dh - 2 * pi, torch.where(dh < -pi, dh + 2 * pi, dh))
    dh = torch.where(both_chromatic, dh, torch.zeros_like(dh))
    delta_h = 2 * torch.sqrt(chroma_product) * torch.sin(dh / 2)

    # Step 3 (eqs. 12-22): means, weighting functions and the rotation term.
    l_mean = (l1 + l2) / 2
    c_mean = (c1p + c2p) / 2
    h_sum = h1p + h2p
    # Eq. 14: the mean hue goes the short way round the circle.
    h_mean = torch.where(
        (h1p - h2p).abs() <= pi,
        h_sum / 2,
        torch.where(h_sum < 2 * pi, (h_sum + 2 * pi) / 2, (h_sum - 2 * pi) / 2),
    )
    h_mean = torch.where(both_chromatic, h_mean, h_sum)
    t = (
        1
        - 0.17 * torch.cos(h_mean - math.radians(30))
        + 0.24 * torch.cos(2 * h_mean)
        + 0.32 * torch.cos(3 * h_mean + math.radians(6))
        - 0.20 * torch.cos(4 * h_mean - math.radians(63))
    )
    delta_theta = math.radians(30) * torch.exp(-(((torch.rad2deg(h_mean) - 275) / 25) ** 2))
    c_mean7 = c_mean**7
    r_c = 2 * torch.sqrt(c_mean7 / (c_mean7 + 25.0**7))
    l_offset2 = (l_mean - 50) ** 2
    s_l = 1 + 0.015 * l_offset2 / torch.sqrt(20 + l_offset2)
    s_c = 1 + 0.045 * c_mean
    s_h = 1 + 0.015 * c_mean * t
    r_t = -torch.sin(2 * delta_theta) * r_c

    term_l, term_c, term_h = delta_l / s_l, delta_c / s_c, delta_h / s_h
    delta_e2 = term_l**2 + term_c**2 + term_h**2 + r_t * term_c * term_h
    # |R_T| <= 2 keeps delta_e2 >= 0 in exact arithmetic; clamp away rounding below zero.
    return torch.sqrt(delta_e2.clamp(min=0))


def _rgb_to_lab_work(rgb: torch.Tensor) -> torch.Tensor:
    return rgb_to_lab(rgb.to(_work_dtype(rgb.device)))


def mean_ciede2000(pred_rgb: torch.Tensor, target_rgb: torch.Tensor) -> torch.Tensor:
    """Mean CIEDE2000 colour difference per image, over all pixels.

    Both images are converted with :func:`sketchcolor.color.rgb_to_lab` (D65, 2-degree observer).

    Args:
        pred_rgb: (N, 3, H, W) sRGB in [0, 1].
        target_rgb: (N, 3, H, W) sRGB in [0, 1], same shape.

    Returns:
        (N,) mean Delta E 2000, >= 0 and 0 for identical images.

    Raises:
        ValueError: Wrong shapes, mismatched shapes, or values outside [0, 1].
    """
    _check_rgb_pair(pred_rgb, target_rgb, ("pred_rgb", "target_rgb"))
    delta_e = ciede2000(_rgb_to_lab_work(pred_rgb), _rgb_to_lab_work(target_rgb))
    return delta_e.mean(dim=(1, 2))


def hint_error(pred_rgb: torch.Tensor, hint_rgb: torch.Tensor, hint_mask: torch.Tensor) -> torch.Tensor:
    """Mean CIEDE2000 between the prediction and the hint colour, over hinted pixels only.

    Measures how faithfully a colourisation honours the user's colour hints. Pixels where
    ``hint_mask`` is 0 are ignored, whatever ``hint_rgb`` holds there.

    Args:
        pred_rgb: (N, 3, H, W) predicted sRGB in [0, 1].
        hint_rgb: (N, 3, H, W) hint colours as sRGB in [0, 1].
        hint_mask: (N, 1, H, W) with values in {0, 1}; 1 marks a hinted pixel.

    Returns:
        (N,) mean Delta E 2000 over each image's hinted pixels. An image without any hinted
        pixel gets NaN ("not applicable", never 0, which would read as a perfect score); use
        ``torch.nanmean`` to average over a data set.

    Raises:
        ValueError: Wrong or mismatched shapes, RGB values outside [0, 1], or a mask value other
            than 0 or 1.
    """
    _check_rgb_pair(pred_rgb, hint_rgb, ("pred_rgb", "hint_rgb"))
    n, _, h, w = pred_rgb.shape
    if hint_mask.shape != (n, 1, h, w):
        raise ValueError(
            f"hint_mask must have shape {(n, 1, h, w)} to match pred_rgb, got {tuple(hint_mask.shape)}"
        )
    if not ((hint_mask == 0) | (hint_mask == 1)).all():
        raise ValueError("hint_mask must contain only 0 and 1")
    delta_e = ciede2000(_rgb_to_lab_work(pred_rgb), _rgb_to_lab_work(hint_rgb))
    mask = hint_mask[:, 0].to(delta_e.dtype)
    # Zero the unhinted pixels with where, not a product, so no value there can leak in.
    total = torch.where(mask > 0, delta_e, torch.zeros_like(delta_e)).sum(dim=(1, 2))
    count = mask.sum(dim=(1, 2))
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, math.nan))


#: Weight of the mean term in Hasler & Süsstrunk's colourfulness (fitted to their observers' ratings).
COLOURFULNESS_MEAN_WEIGHT = 0.3


def colourfulness(rgb: torch.Tensor) -> torch.Tensor:
    """Colourfulness of each image, the metric M of Hasler & Süsstrunk 2003.

    D. Hasler and S. Süsstrunk, "Measuring colourfulness in natural images", Proc. SPIE 5007,
    Human Vision and Electronic Imaging VIII (2003), the metric the paper recommends (its M^(3),
    computed in RGB without any colour-space conversion): with the opponent components
    ``rg = R - G`` and ``yb = (R + G) / 2 - B`` of the gamma-encoded sRGB values on the 8-bit
    scale (0 to 255),

        M = sqrt(sigma_rg^2 + sigma_yb^2) + 0.3 * sqrt(mu_rg^2 + mu_yb^2),

    where mu and sigma are the mean and the (population) standard deviation over the image's
    pixels. M is 0 for any grey image (R = G = B everywhere). The paper relates it to observers'
    ratings: about 15 is "slightly", 33 "moderately", 45 "averagely", 59 "quite", 82 "highly" and
    109 "extremely colourful". A flat pure-red picture has 0.3 * sqrt(255^2 + 127.5^2) = 85.5.

    No reference image is needed; ``sketchcolor eval`` reports it for the output and for the
    ground truth and the ratio of their means (a pale, timid colourisation scores well below 1).

    Args:
        rgb: (N, 3, H, W) sRGB in [0, 1] (scaled by 255 inside, the scale the formula's 0.3 and the
            paper's categories refer to).

    Returns:
        (N,) colourfulness, >= 0.

    Raises:
        ValueError: Wrong shape or values outside [0, 1].
    """
    _check_rgb(rgb, "rgb")
    r, g, b = (rgb.to(_work_dtype(rgb.device)) * 255.0).unbind(1)
    rg = (r - g).flatten(1)
    yb = (0.5 * (r + g) - b).flatten(1)
    # Population statistics over the pixels of each image (correction=0), as in the paper.
    sigma = torch.sqrt(rg.var(dim=1, correction=0) + yb.var(dim=1, correction=0))
    mu = torch.hypot(rg.mean(dim=1), yb.mean(dim=1))
    return sigma + COLOURFULNESS_MEAN_WEIGHT * mu


def default_alexnet_path() -> Path:
    """Where :class:`LpipsMetric` looks for the AlexNet backbone weights by default.

    This is the file torchvision itself would download to: ``<torch hub dir>/checkpoints/
    alexnet-owt-7be5be79.pth``, with the hub directory from ``torch.hub.get_dir()`` (by default
    ``~/.cache/torch/hub``, moved by ``$TORCH_HOME``).

    Returns:
        The path, which need not exist.
    """
    return Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILENAME


def _missing_backbone_error(path: Path) -> MetricUnavailableError:
    return MetricUnavailableError(
        f"LPIPS needs the AlexNet backbone weights at {path}, which does not exist; "
        f"download {ALEXNET_URL} and save it at exactly that path",
        hint=f"curl -L --create-dirs -o {path} {ALEXNET_URL}",
    )


def _load_weight_file(path: Path, what: str) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        raise MetricUnavailableError(
            f"{path} is not a readable PyTorch weight file ({type(exc).__name__}); replace it with {what}"
        ) from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MetricUnavailableError(f"{path} does not hold a state dict of tensors; replace it with {what}")
    return state


class LpipsMetric:
    """LPIPS v0.1 with the AlexNet backbone (Zhang et al. 2018), loaded without any download.

    ``lpips.LPIPS(pretrained=True)`` would fetch the AlexNet backbone from the internet through
    torchvision on first use. This adapter instead builds the network with random weights and
    fills it from two local files, both read with ``torch.load(..., weights_only=True)`` and
    loaded strictly (a missing or misshapen tensor is an error, never silently random):

    * the AlexNet backbone: ``backbone_path`` if given, else :func:`default_alexnet_path`. Only
      the ``features.*`` tensors of torchvision's ``alexnet`` state dict are used;
      ``classifier.*`` tensors are ignored, so the full torchvision file works as it is;
    * the calibrated linear layers, which ship inside the ``lpips`` package
      (``lpips/weights/v0.1/alex.pth``).

    Call it with RGB in [0, 1]; the [-1, 1] scaling lpips expects happens inside, so there is no
    range flag to get wrong (see lpips issue #83).

    Args:
        backbone_path: A torchvision ``alexnet-owt-7be5be79.pth`` (or any file with the same
            ``features.*`` tensors). None looks in the torch hub cache.
        device: Device to run the network on; inputs are moved there and results moved back.

    Raises:
        MetricUnavailableError: The backbone file is missing or unreadable, the ``lpips`` package
            or its linear-layer weights are missing, or a file does not hold the expected tensors.
            The message names the path and how to get the file.

    Attributes:
        backbone_path: The backbone file that was loaded (for provenance records).
        device: The device the network runs on.
    """

    def __init__(
        self, backbone_path: str | os.PathLike[str] | None = None, *, device: str | torch.device = "cpu"
    ) -> None:
        path = Path(backbone_path) if backbone_path is not None else default_alexnet_path()
        # Check before importing or building anything: the common failure should be fast.
        if not path.is_file():
            raise _missing_backbone_error(path)
        try:
            import lpips
        except ImportError as exc:
            raise MetricUnavailableError(
                "the lpips package is not installed; install it with `pip install lpips`"
            ) from exc
        lin_path = Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"
        if not lin_path.is_file():
            raise MetricUnavailableError(
                f"the lpips package has no linear-layer weights at {lin_path}; reinstall it with "
                "`pip install --force-reinstall lpips`"
            )
        features = _alexnet_features(_load_weight_file(path, f"the file from {ALEXNET_URL}"), path)
        lin_state = _load_weight_file(lin_path, "the one from a fresh `pip install --force-reinstall lpips`")

        with warnings.catch_warnings():
            # lpips passes torchvision's deprecated `pretrained=` argument; with False it only warns.
            warnings.filterwarnings("ignore", message=r".*(pretrained|weight enum).*", category=UserWarning)
            # pretrained=False and pnet_rand=True: random linear layers and backbone, no download
            # and no implicit load; both are filled strictly below.
            net = lpips.LPIPS(net="alex", version="0.1", pretrained=False, pnet_rand=True, verbose=False)
        _load_backbone(net, features, path)
        _load_linear_layers(net, lin_state, lin_path)
        net.eval().requires_grad_(False)

        self.backbone_path = path
        self.device = torch.device(device)
        self._net = net.to(self.device)

    def __call__(self, pred_rgb: torch.Tensor, target_rgb: torch.Tensor) -> torch.Tensor:
        """Perceptual distance per image.

        Args:
            pred_rgb: (N, 3, H, W) sRGB in [0, 1], with H and W at least 31 (AlexNet's minimum).
            target_rgb: (N, 3, H, W) sRGB in [0, 1], same shape.

        Returns:
            (N,) float32 distances on ``pred_rgb``'s device; 0 for identical images, larger for
            more different ones (typically below 1).

        Raises:
            ValueError: Wrong or mismatched shapes, images smaller than 31x31, or values outside
                [0, 1].
        """
        _check_rgb_pair(pred_rgb, target_rgb, ("pred_rgb", "target_rgb"))
        h, w = pred_rgb.shape[-2:]
        if min(h, w) < _LPIPS_MIN_SIZE:
            raise ValueError(
                f"LPIPS needs images of at least {_LPIPS_MIN_SIZE}x{_LPIPS_MIN_SIZE} pixels, got {h}x{w}"
            )
        # The one range conversion: [0, 1] at our boundary -> [-1, 1] as lpips expects.
        x = pred_rgb.to(self.device, torch.float32) * 2 - 1
        y = target_rgb.to(self.device, torch.float32) * 2 - 1
        with torch.no_grad():
            distance = self._net(x, y)
        return distance.reshape(-1).to(pred_rgb.device)


_ALEXNET_WHAT = f"torchvision AlexNet weights; replace it with the file from {ALEXNET_URL}"


def _alexnet_features(state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    # Keep the convolutions of torchvision's `alexnet().features` as "<index>.<param>"; checked
    # before the network is built so that a wrong file fails fast.
    features: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for key, tensor in state.items():
        match = re.fullmatch(r"features\.(\d+)\.(weight|bias)", key)
        if match and int(match.group(1)) in _ALEXNET_CONV_INDICES:
            features[f"{match.group(1)}.{match.group(2)}"] = tensor
        elif not key.startswith("classifier."):
            unexpected.append(key)
    if unexpected:
        raise MetricUnavailableError(
            f"{path} has unexpected tensors ({', '.join(unexpected[:3])}) for {_ALEXNET_WHAT}"
        )
    missing = [
        f"features.{i}.{p}"
        for i in _ALEXNET_CONV_INDICES
        for p in ("weight", "bias")
        if f"{i}.{p}" not in features
    ]
    if missing:
        raise MetricUnavailableError(
            f"{path} lacks {', '.join(missing[:3])}, so it does not hold {_ALEXNET_WHAT}"
        )
    return features


def _load_backbone(net: lpips.LPIPS, features: dict[str, torch.Tensor], path: Path) -> None:
    # lpips splits torchvision's `alexnet().features` into slice1..slice5, keeping each layer's
    # index as its name; map "<index>.<param>" to "slice<k>.<index>.<param>" from that layout.
    slice_of = {
        index: slice_name
        for slice_name, block in net.net.named_children()
        for index, _ in block.named_children()
    }
    remapped = {f"{slice_of[key.split('.')[0]]}.{key}": tensor for key, tensor in features.items()}
    _load_strict(net.net, remapped, path, _ALEXNET_WHAT)


def _load_linear_layers(net: lpips.LPIPS, state: dict[str, torch.Tensor], path: Path) -> None:
    # The file names the layers "lin<k>.model.1.weight"; net.lins is the ModuleList of the same
    # modules, so load "<k>.model.1.weight" into it strictly.
    remapped = {}
    for key, tensor in state.items():
        match = re.fullmatch(r"lin(\d+)\.(.+)", key)
        remapped[f"{match.group(1)}.{match.group(2)}" if match else key] = tensor
    _load_strict(net.lins, remapped, path, "the LPIPS v0.1 linear layers for AlexNet")


def _load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], path: Path, what: str) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first_problem = next((line.strip() for line in str(exc).splitlines()[1:] if line.strip()), str(exc))
        raise MetricUnavailableError(f"{path} does not hold {what}: {first_problem}") from exc


def score_images(
    pred_rgb: torch.Tensor,
    target_rgb: torch.Tensor,
    hint_rgb: torch.Tensor | None = None,
    hint_mask: torch.Tensor | None = None,
    lpips_metric: LpipsMetric | None = None,
) -> dict[str, list[float]]:
    """All metrics for a batch of predictions against their targets, one value per image.

    Args:
        pred_rgb: (N, 3, H, W) predicted sRGB in [0, 1].
        target_rgb: (N, 3, H, W) ground-truth sRGB in [0, 1], same shape.
        hint_rgb: Optional (N, 3, H, W) hint colours as sRGB in [0, 1]; give with ``hint_mask``.
        hint_mask: Optional (N, 1, H, W) in {0, 1}; give with ``hint_rgb``.
        lpips_metric: Optional loaded :class:`LpipsMetric`; without it there is no ``"lpips"`` key.

    Returns:
        A mapping from metric name to a list of N floats, in image order:

        * ``"psnr"``: dB, higher is better, ``inf`` for identical images (:func:`psnr`);
        * ``"ssim"``: in [-1, 1], higher is better (:func:`ssim`);
        * ``"ciede2000"``: mean Delta E 2000 against the target, lower is better
          (:func:`mean_ciede2000`);
        * ``"hint_ciede2000"``: only with hints; mean Delta E 2000 against the hint colours on
          hinted pixels, NaN for an image without hints (:func:`hint_error`);
        * ``"lpips"``: only with ``lpips_metric``; lower is better;
        * ``"colourfulness"`` and ``"colourfulness_truth"``: Hasler & Süsstrunk's colourfulness
          of the prediction and of the target (:func:`colourfulness`); neither is better by
          itself, a prediction should be about as colourful as its target.

        ``inf`` and NaN are not valid JSON; writers should map them (for example to null).

    Raises:
        ValueError: Bad shapes or ranges, or only one of ``hint_rgb`` and ``hint_mask`` given.
    """
    if (hint_rgb is None) != (hint_mask is None):
        raise ValueError("hint_rgb and hint_mask must be given together")
    scores = {
        "psnr": psnr(pred_rgb, target_rgb),
        "ssim": ssim(pred_rgb, target_rgb),
        "ciede2000": mean_ciede2000(pred_rgb, target_rgb),
    }
    if hint_rgb is not None and hint_mask is not None:
        scores["hint_ciede2000"] = hint_error(pred_rgb, hint_rgb, hint_mask)
    if lpips_metric is not None:
        scores["lpips"] = lpips_metric(pred_rgb, target_rgb)
    scores["colourfulness"] = colourfulness(pred_rgb)
    scores["colourfulness_truth"] = colourfulness(target_rgb)
    return {name: [float(v) for v in values.tolist()] for name, values in scores.items()}
