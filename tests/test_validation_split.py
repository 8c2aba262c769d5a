"""scripts/validation_split.py links exactly the pictures a training run holds out."""

import subprocess
import sys
from pathlib import Path

from PIL import Image

from sketchcolor.data import split_indices

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "validation_split.py"


def test_links_the_run_s_validation_pictures(tmp_path):
    data = tmp_path / "train"
    names = [f"{group}/item-{k:02d}" for group in ("a", "b") for k in range(9)]
    for name in names:
        for sub in ("sketch", "color"):
            path = data / sub / f"{name}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (len(name), 0, 0)).save(path)
    out = tmp_path / "val"
    cmd = [sys.executable, str(SCRIPT), "--data", str(data), "--val-count", "6", "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True)
    _, val = split_indices(len(names), 6)
    want = sorted(names[i].replace("/", "_") + ".png" for i in val)
    for sub in ("sketch", "color"):
        got = sorted(p.name for p in (out / sub).iterdir())
        assert got == want
        for p in (out / sub).iterdir():
            assert p.is_symlink() and p.resolve() == (data / sub / p.name.replace("_", "/", 1)).resolve()
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode != 0 and "exists already" in again.stderr
