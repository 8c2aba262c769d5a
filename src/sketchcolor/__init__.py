"""sketchcolor: colourise line-art sketches with diffusion models, guided by colour hints.

Python use::

    import sketchcolor
    image = sketchcolor.colorize("sketch.png", hints="scribble.png", seed=1)
    image.save("out.png")

    colorizer = sketchcolor.Colorizer()               # load the model once, for loops and servers
    result = colorizer("page.png", points=["0.5,0.4,#d03030"], reference="hero.png", seed=3)
    result.image.save("page.colored.png")

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
    from .pipeline import Colorizer

__all__ = ["Colorizer", "__version__", "colorize"]


def __getattr__(name: str) -> Any:
    # ``sketchcolor.Colorizer`` without importing torch when ``sketchcolor`` itself is imported.
    if name == "Colorizer":
        from .pipeline import Colorizer

        return Colorizer
    raise AttributeError(f"module 'sketchcolor' has no attribute {name!r}")


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
    reference: str | Path | Image.Image | torch.Tensor | None = None,
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
        reference: Optional reference picture whose colours the model follows (models with
            reference conditioning, such as the bundled one from v2 on); hints win where given.
        **kwargs: Further :class:`sketchcolor.config.SampleConfig` fields (e.g.
            ``reference_scale``).

    The model is loaded once and cached (by file digest and device), so calling this in a loop
    costs one read of the model file; :class:`Colorizer` keeps a model explicitly.

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
    return _colorize(sketch, hints, bundle, sample_config, seed, reference=reference).image
