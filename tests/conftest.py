"""Shared fixtures: tiny models and procedural line art, all made in the test (no data files)."""

from __future__ import annotations

import json
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


def shapes_picture(rng: np.random.Generator, size: int = 40) -> tuple[Image.Image, Image.Image]:
    """A flat-coloured picture of outlined shapes and its line art (black outlines on white)."""
    colour = Image.new("RGB", (size, size), "white")
    lines = Image.new("RGB", (size, size), "white")
    dc, dl = ImageDraw.Draw(colour), ImageDraw.Draw(lines)
    for _ in range(int(rng.integers(1, 4))):
        x0, y0 = rng.integers(0, size // 2, 2)
        x1, y1 = x0 + rng.integers(8, size // 2), y0 + rng.integers(8, size // 2)
        fill = tuple(int(v) for v in rng.integers(30, 230, 3))
        shape = dc.ellipse if rng.random() < 0.5 else dc.rectangle
        shape((x0, y0, x1, y1), fill=fill, outline="black", width=2)
        (dl.ellipse if shape == dc.ellipse else dl.rectangle)((x0, y0, x1, y1), outline="black", width=2)
    return colour, lines


def write_dataset(root: Path, n: int = 12, *, paired: bool = False, seed: int = 0, size: int = 40) -> Path:
    """Write ``n`` procedural pictures: root/*.png, or root/sketch + root/color when paired."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        colour, lines = shapes_picture(rng, size)
        if paired:
            (root / "color").mkdir(parents=True, exist_ok=True)
            (root / "sketch").mkdir(parents=True, exist_ok=True)
            colour.save(root / "color" / f"img{i:03d}.png")
            lines.save(root / "sketch" / f"img{i:03d}.png")
        else:
            sub = root / ("nested" if i % 3 == 0 else "")
            sub.mkdir(parents=True, exist_ok=True)
            colour.save(sub / f"img{i:03d}.png")
    return root


def tiny_train_config(data: Path, tmp: Path, **overrides):
    """A seconds-long training recipe: 8/16-channel U-Net at 16 px, batch 4, one thread."""
    from sketchcolor.config import TrainConfig, apply_overrides

    base = {
        "data.path": str(data),
        "data.cache_dir": str(tmp / "cache"),
        "data.val_count": 2,
        "model.resolution": 16,
        "model.model.base_channels": 8,
        "model.model.channel_mults": [1, 2],
        "model.model.num_res_blocks": 1,
        "model.model.attention_levels": [],
        "model.model.head_channels": 8,
        "optim.steps": 6,
        "optim.batch_size": 4,
        "optim.warmup_steps": 2,
        "optim.lr": 1e-3,
        "run.checkpoint_every": 2,
        "run.sample_every": 0,
        "run.log_every": 1,
        "run.threads": 1,
        "run.device": "cpu",
    }
    base.update(overrides)
    return apply_overrides(TrainConfig(), base)


def run_cli(capsys, *argv: object) -> tuple[int, str, str]:
    """Run ``sketchcolor ARGV`` in this process: (exit code, stdout, stderr)."""
    from sketchcolor.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def pixels(path: Path) -> np.ndarray:
    """A picture file's RGB pixels."""
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def png_record(path: Path) -> dict:
    """The ``sketchcolor`` record inside an output PNG."""
    with Image.open(path) as img:
        return json.loads(img.text["sketchcolor"])
