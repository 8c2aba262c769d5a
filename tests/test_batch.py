import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from sketchcolor.cli import main

from .conftest import draw_hints, draw_sketch


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def pages(tmp_path):
    root = tmp_path / "pages"
    (root / "ch1").mkdir(parents=True)
    for name, size in (("p1", (64, 48)), ("p2", (48, 64)), ("ch1/p3", (64, 64)), ("ch1/p4", (80, 40))):
        draw_sketch(size).save(root / f"{name}.png")
    draw_hints((64, 48)).save(root / "p1.hints.png")  # beside the sketch
    (tmp_path / "hints" / "ch1").mkdir(parents=True)
    draw_hints((64, 64)).save(tmp_path / "hints" / "ch1" / "p3.png")  # in --hints-dir, mirrored
    return root


def manifest(out, name="sketchcolor-manifest.json"):
    doc = json.loads((out / name).read_text())
    return {e["input"].split("pages/")[-1]: e for e in doc["entries"]}, doc["parameters"]


def test_batch_nested_hints_and_corrupt_file(capsys, tmp_path, pages, tiny_checkpoint):
    (pages / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "batch", pages, "-o", out, "-r", "--hints-dir", tmp_path / "hints",
                            "-m", tiny_checkpoint, "--steps", 2, "--format", "json")  # fmt: skip
    assert code == 1
    summary = json.loads(stdout)
    assert summary["done"] == 4 and summary["failed"] == 1
    assert "broken.png" in err and "failed" in err
    for name in ("p1", "p2", "ch1/p3", "ch1/p4"):
        src = Image.open(pages / f"{name}.png")
        assert Image.open(out / f"{name}.png").size == src.size
    entries, params = manifest(out)
    assert entries["broken.png"]["status"] == "failed" and "corrupt" in entries["broken.png"]["error"]
    assert entries["p1.png"]["hints"][0].endswith("p1.hints.png")
    assert entries["ch1/p3.png"]["hints"][0].endswith("hints/ch1/p3.png")
    assert entries["p2.png"]["hints"] == []
    assert params["steps"] == 2 and isinstance(entries["p2.png"]["seed"], int)
    assert not (out / "p1.hints.png").exists()  # hint files are not treated as sketches


def test_rerun_skips_done_and_overwrite_redoes(capsys, tmp_path, pages, tiny_checkpoint):
    out = tmp_path / "out"
    args = ["batch", pages, "-o", out, "-m", tiny_checkpoint, "--steps", 2, "-q"]
    assert run(capsys, *args)[0] == 0
    first = (out / "p1.png").stat().st_mtime_ns
    code, stdout, _ = run(capsys, *args[:-1], "--format", "json")
    assert code == 0 and json.loads(stdout)["skipped"] == 2
    assert (out / "p1.png").stat().st_mtime_ns == first
    code, stdout, _ = run(capsys, *args[:-1], "--format", "json", "--overwrite")
    assert json.loads(stdout)["done"] == 2


def test_shards_together_equal_the_whole(capsys, tmp_path, pages, tiny_checkpoint):
    common = ["-r", "-m", tiny_checkpoint, "--steps", 2, "--batch-size", "1", "-q"]
    assert run(capsys, "batch", pages, "-o", tmp_path / "whole", *common)[0] == 0
    assert run(capsys, "batch", pages, "-o", tmp_path / "parts", "--shard", "1/2", *common)[0] == 0
    assert run(capsys, "batch", pages, "-o", tmp_path / "parts", "--shard", "2/2", *common)[0] == 0
    whole = sorted(p.relative_to(tmp_path / "whole").as_posix() for p in (tmp_path / "whole").rglob("p*.png"))
    parts = sorted(p.relative_to(tmp_path / "parts").as_posix() for p in (tmp_path / "parts").rglob("p*.png"))
    assert whole == parts == ["ch1/p3.png", "ch1/p4.png", "p1.png", "p2.png"]
    for name in whole:
        a = np.asarray(Image.open(tmp_path / "whole" / name))
        b = np.asarray(Image.open(tmp_path / "parts" / name))
        assert np.array_equal(a, b), name
    s1, _ = manifest(tmp_path / "parts", "sketchcolor-manifest.shard-1-of-2.json")
    s2, _ = manifest(tmp_path / "parts", "sketchcolor-manifest.shard-2-of-2.json")
    assert not set(s1) & set(s2) and len(s1) + len(s2) == 4


def test_batched_forward_matches_single(capsys, tmp_path, pages, tiny_checkpoint):
    common = ["-r", "-m", tiny_checkpoint, "--steps", 2, "-q"]
    assert run(capsys, "batch", pages, "-o", tmp_path / "one", "--batch-size", "1", *common)[0] == 0
    assert run(capsys, "batch", pages, "-o", tmp_path / "four", "--batch-size", "4", *common)[0] == 0
    for name in ("p1.png", "ch1/p3.png"):
        a = np.asarray(Image.open(tmp_path / "one" / name)).astype(int)
        b = np.asarray(Image.open(tmp_path / "four" / name)).astype(int)
        assert np.abs(a - b).max() <= 2


def test_kill_mid_run_then_rerun_finishes(tmp_path, tiny_checkpoint):
    root = tmp_path / "many"
    root.mkdir()
    for i in range(12):
        draw_sketch((160, 120)).save(root / f"s{i:02d}.png")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "sketchcolor", "batch", str(root), "-o", str(out), "-m", str(tiny_checkpoint),
           "--steps", "20", "--batch-size", "1", "-q"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("s*.png"))) < 2:
        time.sleep(0.01)
    assert proc.poll() is None, "finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = sorted(out.glob("s*.png"))
    assert 2 <= len(done_before) < 12
    for p in done_before:  # every file that exists is complete
        Image.open(p).load()
    rerun = subprocess.run([*cmd, "--format", "json"], capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["skipped"] == len(done_before) and summary["done"] == 12 - len(done_before)
    assert len(list(out.glob("s*.png"))) == 12
    assert not list(out.rglob("*.tmp"))


def test_bad_inputs(capsys, tmp_path, tiny_checkpoint):
    code, _, err = run(capsys, "batch", tmp_path / "nope", "-o", tmp_path / "o", "-m", tiny_checkpoint)
    assert code == 1 and "nope: folder not found" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "batch", tmp_path / "empty", "-o", tmp_path / "o", "-m", tiny_checkpoint)
    assert code == 1 and "no sketches found" in err
    code, _, err = run(capsys, "batch", tmp_path / "empty", "-o", tmp_path / "o", "--shard", "3/2")
    assert code == 2 and "need 1 <= I <= N" in err
