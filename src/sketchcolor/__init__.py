"""sketchcolor: colourise line-art sketches with diffusion models, guided by colour hints.

Python use::

    import sketchcolor
    image = sketchcolor.colorize("sketch.png", hints="scribble.png", seed=1)
    image.save("out.png")

Submodules (imported on demand; importing ``sketchcolor`` itself is cheap):
``io``, ``color``, ``conditioning``, ``schedules``, ``models``, ``denoiser``, ``samplers``,
``checkpoint``, ``pipeline`` and ``cli``; see docs/architecture.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from .checkpoint import ModelBundle

__all__ = ["__version__", "colorize"]


def colorize(
    sketch: str | Path | Image.Image | torch.Tensor,
    hints: str | Path | Image.Image | torch.Tensor | None = None,
    model: str | Path | ModelBundle | None = None,
    *,
    steps: int | None = None,
    sampler: str = "ddim",
    eta: float = 0.0,
    guidance: float = 1.0,
    seed: int = 0,
    device: str = "auto",
    **kwargs: Any,
) -> Image.Image:
    """Colourise a line-art sketch and return the picture at the sketch's own size.

    Args:
        sketch: Path, PIL image or (1, 3, H, W) RGB tensor in [0, 1].
        hints: Optional colour hints: an image (path or PIL) where transparent or white pixels mean
            "no hint", or an RGBA tensor (1, 4, H, W).
        model: Path to a ``.safetensors`` model, a loaded ``ModelBundle``, or None for the model
            bundled with the package.
        steps: Sampling steps, 1 to the model's noise levels (1000 for the bundled model; default:
            :class:`sketchcolor.config.SampleConfig`'s).
        sampler: ``"ddim"``, ``"ddpm"`` or ``"dpmpp2m"`` (DPM-Solver++(2M), deterministic, for
            few steps).
        eta: DDIM stochasticity in [0, 1].
        guidance: Classifier-free guidance scale on the hints, finite and >= 0 (1 = off).
        seed: Random seed, 0 to 2**64 - 1; the same seed gives the same picture.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``.
        **kwargs: Further :class:`sketchcolor.config.SampleConfig` fields.

    Returns:
        An RGB ``PIL.Image``.

    Raises:
        sketchcolor.errors.SketchcolorError: Bad input, setting, model or device (one-line message
            naming it); no other exception for bad input.
    """
    from .config import SampleConfig, from_dict
    from .pipeline import colorize as _colorize
    from .pipeline import load_model

    fields = {"sampler": sampler, "eta": eta, "guidance": guidance, **kwargs}
    if steps is not None:
        fields["steps"] = steps
    sample_config = from_dict(SampleConfig, fields)
    bundle = load_model(model, device)
    return _colorize(sketch, hints, bundle, sample_config, seed).image
