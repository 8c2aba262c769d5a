"""Shared fixtures: tiny models and procedural line art, all made in the test (no data files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from sketchcolor.checkpoint import save_checkpoint
from sketchcolor.config import ColorizerConfig, ConditioningConfig, ModelConfig
from sketchcolor.models import UNet

TINY_MODEL = ModelConfig(
    base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_levels=(1,), head_channels=8
)


def tiny_config(**kwargs) -> ColorizerConfig:
    """A 2-level, 8/16-channel U-Net working at 32 px (a few thousand parameters)."""
    kwargs.setdefault("model", TINY_MODEL)
    kwargs.setdefault("resolution", 32)
    return ColorizerConfig.for_layout(kwargs.pop("conditioning", ConditioningConfig()), **kwargs)


def random_model(config: ColorizerConfig, seed: int = 0) -> UNet:
    """A network with random (non-zero) weights so that its output depends on every input."""
    model = UNet(config.model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return model.eval()


@pytest.fixture
def tiny_checkpoint(tmp_path: Path) -> Path:
    config = tiny_config()
    return save_checkpoint(tmp_path / "tiny.safetensors", random_model(config), config)


def draw_sketch(size: tuple[int, int] = (96, 64)) -> Image.Image:
    """Black outlines of a circle and a rectangle on white (W, H = size)."""
    w, h = size
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    d.ellipse((w * 0.1, h * 0.1, w * 0.5, h * 0.8), outline="black", width=max(1, w // 48))
    d.rectangle((w * 0.6, h * 0.2, w * 0.9, h * 0.9), outline="black", width=max(1, w // 48))
    return img


def draw_hints(size: tuple[int, int] = (96, 64)) -> Image.Image:
    """A red stroke inside the circle and a blue dot inside the rectangle, on transparency."""
    w, h = size
    img = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    d.line((w * 0.2, h * 0.45, w * 0.35, h * 0.45), fill=(220, 30, 30, 255), width=max(1, w // 32))
    d.point((int(w * 0.75), int(h * 0.55)), fill=(30, 60, 220, 255))
    return img


@pytest.fixture
def sketch_files(tmp_path: Path) -> tuple[Path, Path]:
    sketch = tmp_path / "sketch.png"
    hints = tmp_path / "hints.png"
    draw_sketch().save(sketch)
    draw_hints().save(hints)
    return sketch, hints


def rgb_grid(steps: int = 33) -> torch.Tensor:
    """A dense grid over the RGB cube as one (1, 3, steps, steps**2) image."""
    v = torch.linspace(0, 1, steps, dtype=torch.float64)
    r, g, b = torch.meshgrid(v, v, v, indexing="ij")
    return torch.stack([r, g, b]).reshape(1, 3, steps, steps * steps)


def as_np(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()
