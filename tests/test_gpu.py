"""Device paths that need hardware: run on machines with CUDA or MPS, skipped (with the reason) here."""

import numpy as np
import pytest
import torch

from sketchcolor.checkpoint import load_checkpoint
from sketchcolor.config import SampleConfig
from sketchcolor.device import inference_dtype, pin_memory_ok, resolve_device
from sketchcolor.pipeline import colorize
from sketchcolor.training import train

from .conftest import draw_hints, draw_sketch, tiny_train_config, write_dataset

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
mps = pytest.mark.skipif(
    not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()), reason="needs Apple MPS"
)


def _compare_with_cpu(device: str, tiny_checkpoint) -> None:
    cpu = np.asarray(
        colorize(draw_sketch(), draw_hints(), load_checkpoint(tiny_checkpoint), SampleConfig(steps=4)).image
    )
    dev = load_checkpoint(tiny_checkpoint, device=device)
    assert dev.device.type == device
    out = np.asarray(colorize(draw_sketch(), draw_hints(), dev, SampleConfig(steps=4)).image)
    # Same seed, same noise (drawn on CPU generators); reduced precision may move a few levels.
    assert np.abs(out.astype(int) - cpu.astype(int)).mean() < 3


@pytest.mark.cuda
@cuda
def test_colorize_on_cuda_matches_cpu(tiny_checkpoint):
    assert inference_dtype("auto", torch.device("cuda")) in (torch.bfloat16, torch.float16)
    assert pin_memory_ok(torch.device("cuda"))
    _compare_with_cpu("cuda", tiny_checkpoint)


@pytest.mark.cuda
@cuda
def test_training_on_cuda_with_mixed_precision(tmp_path):
    data = write_dataset(tmp_path / "d", 12)
    infos = list(
        train(tiny_train_config(data, tmp_path, **{"run.device": "cuda", "optim.steps": 3}), tmp_path / "run")
    )
    assert all(np.isfinite(i.loss) for i in infos)
    assert load_checkpoint(tmp_path / "run" / "last.safetensors").metadata["step"] == "3"


@pytest.mark.mps
@mps
def test_colorize_on_mps_matches_cpu(tiny_checkpoint):
    assert resolve_device("auto").type in ("mps", "cuda")
    _compare_with_cpu("mps", tiny_checkpoint)
