"""The model shipped inside the package: present, small, documented, and working offline."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from sketchcolor.checkpoint import default_model_path, file_digest, read_metadata
from sketchcolor.config import ColorizerConfig, TrainConfig, from_dict, load_config_file

ROOT = Path(__file__).resolve().parents[1]


def test_bundled_model_is_small_fp16_and_records_its_recipe():
    # In CI the package is installed from a wheel, so this also proves the wheel carries the file.
    path = default_model_path()
    assert path.stat().st_size < 20_000_000
    meta = read_metadata(path)
    assert meta["weights_dtype"] == "float16"
    assert meta["data_digest"] and meta["recipe"].startswith("sketchcolor train")
    recipe = load_config_file(TrainConfig, ROOT / "configs" / "default.toml")
    assert from_dict(ColorizerConfig, json.loads(meta["config"])) == recipe.model
    assert int(meta["step"]) == recipe.optim.steps
    card = (ROOT / "docs" / "model-card.md").read_text()
    assert file_digest(path) in card  # the card describes exactly this file


def test_colorize_without_model_flag_offline(tmp_path):
    out = tmp_path / "fox.png"
    proc = subprocess.run(
        [sys.executable, "-m", "sketchcolor", "colorize", str(ROOT / "examples" / "fox.png"),
         "--hints", str(ROOT / "examples" / "fox.hints.png"), "-o", str(out), "-q"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    pic = np.asarray(Image.open(out).convert("RGB")).astype(int)
    sketch = np.asarray(Image.open(ROOT / "examples" / "fox.png").convert("RGB")).astype(int)
    assert pic.shape == sketch.shape
    chroma = pic.max(axis=2) - pic.min(axis=2)
    assert (chroma > 40).mean() > 0.05  # coloured, not grey
    lines = sketch.max(axis=2) < 100
    assert (pic[lines] <= sketch[lines] + 2).all()
