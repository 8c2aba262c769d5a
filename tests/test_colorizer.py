"""The Python API: the model cache and the Colorizer object."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

import sketchcolor
from sketchcolor import pipeline
from sketchcolor.checkpoint import save_checkpoint
from sketchcolor.config import SampleConfig
from sketchcolor.errors import ConfigError

from .conftest import draw_hints, draw_sketch, random_model, tiny_config


@pytest.fixture(autouse=True)
def _fresh_cache():
    pipeline.clear_model_cache()
    yield
    pipeline.clear_model_cache()


def _count_loads(monkeypatch):
    calls = []
    real = pipeline.load_checkpoint

    def counting(path, **kwargs):
        calls.append(str(path))
        return real(path, **kwargs)

    monkeypatch.setattr(pipeline, "load_checkpoint", counting)
    return calls


def test_model_is_read_once_for_many_calls(tiny_checkpoint, monkeypatch):
    calls = _count_loads(monkeypatch)
    sketch = draw_sketch()
    first = sketchcolor.colorize(sketch, model=tiny_checkpoint, steps=1, seed=3)
    for _ in range(3):
        again = sketchcolor.colorize(sketch, model=tiny_checkpoint, steps=1, seed=3)
    assert len(calls) == 1
    assert first.tobytes() == again.tobytes()


def test_changed_file_is_read_again(tmp_path, monkeypatch):
    calls = _count_loads(monkeypatch)
    config = tiny_config()
    path = save_checkpoint(tmp_path / "m.safetensors", random_model(config, seed=1), config)
    a = pipeline.load_model(path)
    save_checkpoint(path, random_model(config, seed=2), config, overwrite=True)
    os.utime(path, ns=(1, 1))  # a different modification time, whatever the clock resolution
    b = pipeline.load_model(path)
    assert len(calls) == 2 and a.digest != b.digest


def test_same_weights_under_two_names_share_one_model(tmp_path, monkeypatch):
    config = tiny_config()
    model = random_model(config)
    one = save_checkpoint(tmp_path / "one.safetensors", model, config)
    two = tmp_path / "two.safetensors"
    two.write_bytes(one.read_bytes())
    calls = _count_loads(monkeypatch)
    assert pipeline.load_model(one) is pipeline.load_model(two)
    assert len(calls) == 1


def test_cache_is_bounded(tmp_path):
    config = tiny_config()
    paths = [
        save_checkpoint(tmp_path / f"m{i}.safetensors", random_model(config, seed=i), config)
        for i in range(pipeline.MODEL_CACHE_SIZE + 2)
    ]
    for p in paths:
        pipeline.load_model(p)
    assert len(pipeline._bundles) == pipeline.MODEL_CACHE_SIZE


def test_colorizer_matches_the_function_and_the_pipeline(tiny_checkpoint):
    sketch, hints = draw_sketch(), draw_hints()
    colorizer = sketchcolor.Colorizer(tiny_checkpoint, steps=2)
    result = colorizer(sketch, hints=hints, seed=5)
    direct = pipeline.colorize(sketch, hints, pipeline.load_model(tiny_checkpoint), SampleConfig(steps=2), 5)
    assert result.image.tobytes() == direct.image.tobytes()
    assert result.record["steps"] == 2 and result.record["seed"] == 5
    assert (
        sketchcolor.colorize(sketch, hints, tiny_checkpoint, steps=2, seed=5).tobytes()
        == direct.image.tobytes()
    )


def test_colorizer_points_json_and_layer_agree(tiny_checkpoint, tmp_path):
    sketch = draw_sketch()  # 96 x 64
    spec = {"points": [{"x": 30, "y": 30, "color": "#d03030", "radius": 3}]}
    (tmp_path / "h.json").write_text(json.dumps(spec))
    colorizer = sketchcolor.Colorizer(tiny_checkpoint, steps=1)
    from_json = colorizer(sketch, hints=str(tmp_path / "h.json"), seed=1)
    from_text = colorizer(sketch, points=["30,30,#d03030"], point_radius=3, seed=1)
    from_tuple = colorizer(
        sketch, points=[(30, 30, (0xD0 / 255, 0x30 / 255, 0x30 / 255))], point_radius=3, seed=1
    )
    assert from_json.image.tobytes() == from_text.image.tobytes() == from_tuple.image.tobytes()
    assert from_json.hints.mask.sum() > 0
    plain = colorizer(sketch, seed=1)
    assert plain.hints.is_empty and plain.image.tobytes() != from_json.image.tobytes()


def test_colorizer_overrides_are_per_call(tiny_checkpoint):
    colorizer = sketchcolor.Colorizer(tiny_checkpoint, steps=3)
    assert colorizer(draw_sketch(), steps=1).record["steps"] == 1
    assert colorizer(draw_sketch()).record["steps"] == 3
    with pytest.raises(ConfigError, match="unknown config key"):
        colorizer(draw_sketch(), stepz=2)
    with pytest.raises(ConfigError, match="guidance must be finite"):
        sketchcolor.Colorizer(tiny_checkpoint, guidance=float("inf"))


def test_colorizer_variations_flats_and_batch(tiny_checkpoint):
    colorizer = sketchcolor.Colorizer(tiny_checkpoint, steps=1)
    many = colorizer(draw_sketch(), num_samples=3, keep_flats=True, seed=10)
    assert len(many.images) == 3 and len(many.flats) == 3
    assert [r["seed"] for r in many.records] == [10, 11, 12]
    batch = colorizer.colorize_batch(
        [draw_sketch(), draw_sketch((64, 64))], [draw_hints(), None], seeds=[10, 4]
    )
    alone = colorizer(draw_sketch(), hints=draw_hints(), seed=10)
    diff = np.abs(np.asarray(batch[0].image, dtype=int) - np.asarray(alone.image, dtype=int))
    assert diff.max() <= 1 and batch[1].image.size == (64, 64)


def test_colorizer_hints_in_sketch(tiny_checkpoint):
    sketch = draw_sketch()
    scribbled = sketch.copy()
    scribbled.paste(Image.new("RGB", (6, 6), (20, 160, 40)), (20, 25))
    result = sketchcolor.Colorizer(tiny_checkpoint, steps=1)(scribbled, hints_in_sketch=True)
    assert result.hints.mask.sum() == 36
    assert not result.hints.is_empty


def test_top_level_name_is_lazy():
    import subprocess
    import sys

    code = "import sys, sketchcolor; assert 'torch' not in sys.modules; sketchcolor.Colorizer; assert 'torch' in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
