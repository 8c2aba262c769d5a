"""The network's arithmetic while sampling: ``--precision`` / ``SampleConfig.precision``.

``auto`` is bfloat16 on a CPU with native bfloat16 and fp32 on other CPUs; the picture's record
keeps what was used and ``--from-png`` replays it, whatever ``auto`` means on the replaying machine.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin

from sketchcolor import device as device_mod
from sketchcolor.config import SampleConfig
from sketchcolor.errors import ConfigError, DeviceError
from sketchcolor.models import unet
from sketchcolor.pipeline import colorize, load_model

from .conftest import draw_hints, draw_sketch, pixels
from .conftest import png_record as record
from .conftest import run_cli as run

CPU = torch.device("cpu")


@pytest.mark.parametrize("native", [True, False])
def test_auto_is_bf16_exactly_where_the_cpu_has_native_bfloat16(monkeypatch, native):
    monkeypatch.setattr(device_mod, "cpu_bf16_native", lambda: native)
    assert device_mod.inference_dtype("auto", CPU) == (torch.bfloat16 if native else None)
    assert device_mod.inference_dtype("auto", torch.device("mps")) is None
    assert device_mod.inference_dtype("fp32", CPU) is None
    assert device_mod.inference_dtype("bf16", CPU) is torch.bfloat16  # asked for: even if emulated
    assert device_mod.inference_dtype("fp16", torch.device("mps")) is torch.float16
    with pytest.raises(DeviceError, match="fp16 is for GPUs"):
        device_mod.inference_dtype("fp16", CPU)
    with pytest.raises(DeviceError, match="unknown precision 'fp64'"):
        device_mod.inference_dtype("fp64", CPU)
    assert [device_mod.precision_name(d) for d in (None, torch.bfloat16, torch.float16)] == [
        "fp32",
        "bf16",
        "fp16",
    ]


def test_sample_config_refuses_an_unknown_precision():
    assert SampleConfig().precision == "auto"
    with pytest.raises(ConfigError, match="precision must be one of auto, fp32, bf16, fp16"):
        SampleConfig(precision="half")


@pytest.mark.parametrize(("precision", "expected"), [("fp32", None), ("bf16", torch.bfloat16)])
def test_the_network_runs_in_the_precision_asked_for(monkeypatch, tiny_checkpoint, precision, expected):
    seen = []
    original = unet.UNet.forward

    def spy(self, *args, **kwargs):
        seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(unet.UNet, "forward", spy)
    bundle = load_model(tiny_checkpoint, "cpu")
    result = colorize(draw_sketch(), draw_hints(), bundle, SampleConfig(steps=2, precision=precision), seed=3)
    assert seen == [expected, expected]
    assert result.record["precision"] == precision


def test_bf16_and_fp32_give_different_pictures_and_each_is_deterministic(tiny_checkpoint):
    bundle = load_model(tiny_checkpoint, "cpu")

    def image(precision: str) -> np.ndarray:
        config = SampleConfig(steps=2, precision=precision)
        return np.asarray(colorize(draw_sketch(), draw_hints(), bundle, config, seed=3).image)

    assert np.array_equal(image("bf16"), image("bf16"))
    assert not np.array_equal(image("bf16"), image("fp32"))


def test_from_png_replays_the_recorded_precision_not_this_machines_auto(
    capsys, monkeypatch, tiny_checkpoint, tmp_path
):
    draw_sketch().save(tmp_path / "page.png")
    draw_hints().save(tmp_path / "hints.png")
    monkeypatch.setattr(device_mod, "cpu_bf16_native", lambda: True)  # auto = bf16 where it was made
    code, _, err = run(capsys, "colorize", tmp_path / "page.png", "--hints", tmp_path / "hints.png", "-m", tiny_checkpoint,
                       "-o", tmp_path / "made.png", "--steps", 2, "-q")  # fmt: skip
    assert code == 0, err
    assert record(tmp_path / "made.png")["precision"] == "bf16"
    monkeypatch.setattr(device_mod, "cpu_bf16_native", lambda: False)  # auto = fp32 where it is replayed
    code, _, err = run(
        capsys, "colorize", "--from-png", tmp_path / "made.png", "-o", tmp_path / "again.png", "-q"
    )
    assert code == 0, err
    assert np.array_equal(pixels(tmp_path / "made.png"), pixels(tmp_path / "again.png"))
    assert record(tmp_path / "again.png")["precision"] == "bf16"
    code, _, err = run(
        capsys,
        "colorize",
        "--from-png",
        tmp_path / "made.png",
        "--precision",
        "fp32",
        "-o",
        tmp_path / "x.png",
    )
    assert code == 2 and "drop --precision" in err


def test_a_record_without_precision_replays_in_fp32(capsys, tiny_checkpoint, tmp_path):
    # Records written before the precision was recorded ran fp32 on the CPU.
    draw_sketch().save(tmp_path / "page.png")
    common = ["--hints", tmp_path / "hints.png", "-m", tiny_checkpoint, "--steps", 2, "-q"]
    draw_hints().save(tmp_path / "hints.png")
    for precision in ("fp32", "bf16"):
        code, _, err = run(capsys, "colorize", tmp_path / "page.png", *common, "--precision", precision,
                           "-o", tmp_path / f"{precision}.png")  # fmt: skip
        assert code == 0, err
    with Image.open(tmp_path / "bf16.png") as img:
        rec = json.loads(img.text["sketchcolor"])
        del rec["precision"]
        info = PngImagePlugin.PngInfo()
        info.add_text("sketchcolor", json.dumps(rec))
        img.save(tmp_path / "old.png", pnginfo=info)
    code, _, err = run(capsys, "colorize", "--from-png", tmp_path / "old.png", "-o", tmp_path / "r.png", "-q")
    assert code == 0, err
    assert np.array_equal(pixels(tmp_path / "r.png"), pixels(tmp_path / "fp32.png"))


@pytest.mark.parametrize("command", ["colorize", "batch", "eval"])
def test_fp16_on_the_cpu_is_one_line_before_any_work(capsys, tiny_checkpoint, tmp_path, command):
    draw_sketch().save(tmp_path / "page.png")
    args = {
        "colorize": ["colorize", tmp_path / "page.png", "-o", tmp_path / "o.png"],
        "batch": ["batch", tmp_path, "-o", tmp_path / "out"],
        "eval": ["eval", "--pred", tmp_path, "--truth", tmp_path, "--no-lpips"],
    }[command]
    model = [] if command == "eval" else ["-m", tiny_checkpoint]
    code, _, err = run(capsys, *args, *model, "--precision", "fp16", "--device", "cpu")
    assert code != 0
    assert "fp16 is for GPUs" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) <= 2  # the message and its hint at most
    assert not (tmp_path / "o.png").exists() and not (tmp_path / "out").exists()


def test_narrowest_feature_map_follows_the_downsampling_convolutions():
    from sketchcolor.config import ModelConfig
    from sketchcolor.models.unet import narrowest_feature_map

    three_levels = ModelConfig(channel_mults=(1, 2, 3))
    assert narrowest_feature_map(three_levels, (128, 96)) == 24
    assert narrowest_feature_map(three_levels, (32, 5)) == 2  # 5 -> 3 -> 2
    assert narrowest_feature_map(three_levels, (32, 4)) == 1  # 4 -> 2 -> 1
    assert narrowest_feature_map(ModelConfig(channel_mults=(1,), attention_levels=()), (7, 3)) == 3


@pytest.mark.parametrize("size", [(8, 100000), (100000, 8)])
def test_a_page_too_thin_for_bf16_runs_in_fp32(tiny_checkpoint, size):
    # oneDNN's bf16 stride-2 convolution is wrong (even NaN) when its output is one pixel wide:
    # a 8 x 100000 page gave "the model produced non-finite values" before the guard.
    bundle = load_model(tiny_checkpoint, "cpu")
    page = Image.new("L", size, 255)
    forced = colorize(page, None, bundle, SampleConfig(steps=1, precision="bf16"))
    plain = colorize(page, None, bundle, SampleConfig(steps=1, precision="fp32"))
    assert forced.record["precision"] == "fp32"
    assert np.array_equal(np.asarray(forced.image), np.asarray(plain.image))
    # A page of ordinary shape does run in bf16.
    assert (
        colorize(draw_sketch(), None, bundle, SampleConfig(steps=1, precision="bf16")).record["precision"]
        == "bf16"
    )
