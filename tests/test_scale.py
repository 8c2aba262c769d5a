"""Scale-out of ``batch``: shards from the scheduler's environment, shared output folders, the
pipelined chunk loop, and a real two-process torchrun (docs/scale.md)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import sketchcolor.cli.batch as batch
import sketchcolor.sharding as sharding
from sketchcolor.cli import main
from sketchcolor.errors import SketchcolorError
from sketchcolor.sharding import shard_from_environment

from .conftest import draw_hints, draw_sketch

# Every scheduler variable the tests set or must not inherit from the machine running them.
SCHEDULER_VARS = (
    "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN",
    "SLURM_ARRAY_TASK_MAX", "SLURM_ARRAY_TASK_STEP", "SLURM_ARRAY_TASK_COUNT", "JOB_COMPLETION_INDEX",
    sharding.SHARD_COUNT_ENV,
)  # fmt: skip


@pytest.fixture
def clean_env(monkeypatch):
    for name in SCHEDULER_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def pages(tmp_path):
    root = tmp_path / "pages"
    (root / "sub").mkdir(parents=True)
    sizes = [(64, 48), (48, 64), (64, 64), (80, 40), (56, 56), (40, 72), (64, 48)]
    names = ["a", "b", "sub/c", "sub/d", "e", "f", "g"]
    for name, size in zip(names, sizes, strict=True):
        draw_sketch(size).save(root / f"{name}.png")
    draw_hints((64, 48)).save(root / "a.hints.png")
    return root


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def pictures(folder: Path) -> dict[str, np.ndarray]:
    return {
        p.relative_to(folder).as_posix(): np.asarray(Image.open(p))
        for p in sorted(folder.rglob("*.png"))
        if not p.name.startswith("sketchcolor-manifest")
    }


def assert_same_pictures(a: Path, b: Path) -> None:
    left, right = pictures(a), pictures(b)
    assert sorted(left) == sorted(right) and left
    for name in left:
        assert np.array_equal(left[name], right[name]), name


def entries(folder: Path, name: str = "sketchcolor-manifest.json") -> list[dict]:
    return json.loads((folder / name).read_text())["entries"]


def same_run(entry: dict, out: Path) -> tuple:
    """What two runs into different folders must agree on for one entry."""
    return (
        entry["input"],
        Path(entry["output"]).relative_to(out),
        entry["seed"],
        entry["status"],
        entry["hints"],
    )


# --- reading the environment ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "count", "expected"),
    [
        ({}, None, (1, 1)),
        ({"RANK": "1", "WORLD_SIZE": "3", "LOCAL_RANK": "1"}, None, (2, 3)),
        ({"RANK": "0", "WORLD_SIZE": "1"}, None, (1, 1)),
        ({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "4", "SLURM_ARRAY_TASK_MAX": "7"}, None, (2, 4)),
        ({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "9",
          "SLURM_ARRAY_TASK_COUNT": "10"}, None, (1, 10)),
        ({"SLURM_ARRAY_TASK_ID": "6", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "9",
          "SLURM_ARRAY_TASK_STEP": "3", "SLURM_ARRAY_TASK_COUNT": "4"}, None, (3, 4)),
        ({"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "3"}, None, (3, 3)),
        ({"JOB_COMPLETION_INDEX": "0"}, 4, (1, 4)),
        ({"JOB_COMPLETION_INDEX": "3", sharding.SHARD_COUNT_ENV: "4"}, None, (4, 4)),
        # An array of torchrun groups: array task-major, then rank.
        ({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "2",
          "RANK": "1", "WORLD_SIZE": "2"}, None, (4, 6)),
    ],
)  # fmt: skip
def test_shard_from_environment(env, count, expected):
    i, n, source = shard_from_environment(env, count)
    assert (i, n) == expected and source


@pytest.mark.parametrize(
    ("env", "count", "message"),
    [
        ({"JOB_COMPLETION_INDEX": "2"}, None, "no number of shards"),
        ({"JOB_COMPLETION_INDEX": "4"}, 4, "not below the count 4"),
        ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "7",
          "SLURM_ARRAY_TASK_COUNT": "3"}, None, "not an evenly spaced range"),
        ({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2", "JOB_COMPLETION_INDEX": "0"}, 2, "both"),
        ({"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "2"}, None, "not an integer"),
        ({"WORLD_SIZE": "2"}, None, "RANK"),
    ],
)  # fmt: skip
def test_shard_from_a_broken_environment_is_refused(env, count, message):
    with pytest.raises(SketchcolorError, match=message):
        shard_from_environment(env, count)


# --- shards together equal one run, pixel for pixel ---------------------------------------------


def _environments(n: int, engine: str) -> list[dict[str, str]]:
    if engine == "torchrun":
        return [{"RANK": str(r), "WORLD_SIZE": str(n), "LOCAL_RANK": str(r)} for r in range(n)]
    if engine == "slurm":
        return [
            {"SLURM_ARRAY_TASK_ID": str(10 + t), "SLURM_ARRAY_TASK_MIN": "10", "SLURM_ARRAY_TASK_MAX": str(9 + n),
             "SLURM_ARRAY_TASK_COUNT": str(n)}
            for t in range(n)
        ]  # fmt: skip
    return [{"JOB_COMPLETION_INDEX": str(k), sharding.SHARD_COUNT_ENV: str(n)} for k in range(n)]


@pytest.mark.parametrize("engine", ["torchrun", "slurm", "kubernetes"])
def test_auto_shards_together_equal_one_run(capsys, clean_env, tmp_path, pages, tiny_checkpoint, engine):
    # fp32: a shard's chunks hold other companions than the unsharded run's, and bfloat16 sums
    # can depend on a page's companions (docs/scale.md); fp32 ones do not.
    common = ["-r", "-m", tiny_checkpoint, "--steps", 2, "-b", 2, "-q", "--precision", "fp32"]
    assert run(capsys, "batch", pages, "-o", tmp_path / "whole", *common)[0] == 0
    shared = tmp_path / "shared"
    for k, env in enumerate(_environments(3, engine)):
        for name in SCHEDULER_VARS:
            clean_env.delenv(name, raising=False)
        for name, value in env.items():
            clean_env.setenv(name, value)
        code, _, err = run(capsys, "batch", pages, "-o", shared, "--shard", "auto", *common)
        assert code == 0, err
        assert f"--shard auto: shard {k + 1}/3 from" in err
        assert (shared / f"sketchcolor-manifest.shard-{k + 1}-of-3.json").is_file()
        # The last shard to finish writes the whole run's manifest.
        assert (shared / "sketchcolor-manifest.json").exists() == (k == 2)
    assert_same_pictures(tmp_path / "whole", shared)
    whole, merged = entries(tmp_path / "whole"), entries(shared)
    assert [same_run(e, shared) for e in merged] == [same_run(e, tmp_path / "whole") for e in whole]
    assert not list(shared.rglob("*.tmp"))


def test_auto_without_a_scheduler_is_one_shard_and_says_so(
    capsys, clean_env, tmp_path, pages, tiny_checkpoint
):
    code, _, err = run(capsys, "batch", pages, "-o", tmp_path / "o", "--shard", "auto", "-m", tiny_checkpoint,
                       "--steps", 1, "-q")  # fmt: skip
    assert code == 0 and "shard 1/1 from no scheduler in the environment" in err
    assert (tmp_path / "o" / "sketchcolor-manifest.json").is_file()


def test_merge_manifests(capsys, clean_env, tmp_path, pages, tiny_checkpoint):
    out = tmp_path / "out"
    common = ["-r", "-m", tiny_checkpoint, "--steps", 1, "-q"]
    assert run(capsys, "batch", pages, "-o", out, "--shard", "2/2", *common)[0] == 0
    code, _, err = run(capsys, "batch", "--merge-manifests", out)
    assert code == 1 and "shard(s) 1 of 2 have no manifest yet" in err
    assert run(capsys, "batch", pages, "-o", out, "--shard", "1/2", *common)[0] == 0
    (out / "sketchcolor-manifest.json").unlink()  # made by the last shard; --merge-manifests remakes it
    code, stdout, err = run(capsys, "batch", "--merge-manifests", out, "--format", "json")
    assert code == 0, err
    assert json.loads(stdout)["done"] == 7 and json.loads(stdout)["shards"] == 2
    doc = json.loads((out / "sketchcolor-manifest.json").read_text())
    assert doc["parameters"]["shard"] == "1/1" and doc["parameters"]["shards"] == 2
    assert [Path(e["input"]).name for e in doc["entries"]] == [
        "a.png",
        "b.png",
        "e.png",
        "f.png",
        "g.png",
        "c.png",
        "d.png",
    ]
    # Shards made with other settings are not merged.
    manifest = out / "sketchcolor-manifest.shard-2-of-2.json"
    other = json.loads(manifest.read_text())
    other["parameters"]["steps"] = 7
    manifest.write_text(json.dumps(other))
    code, _, err = run(capsys, "batch", "--merge-manifests", out)
    assert code == 1 and "made with other settings than shard 1 (steps)" in err
    code, _, err = run(capsys, "batch", pages, "--merge-manifests", out)
    assert code == 2 and "takes the output folder alone" in err


# --- the pipelined loop gives the sequential loop's files -------------------------------------------


def test_pipelined_batch_equals_the_sequential_loop(capsys, clean_env, tmp_path, pages, tiny_checkpoint):
    common = ["-r", "-m", tiny_checkpoint, "--steps", 2, "-b", 2, "-q", "--save-flats", "--num-samples", 2]
    assert run(capsys, "batch", pages, "-o", tmp_path / "pipelined", *common)[0] == 0
    clean_env.setattr(batch, "PIPELINE_DEPTH", 0)
    assert run(capsys, "batch", pages, "-o", tmp_path / "sequential", *common)[0] == 0
    assert_same_pictures(tmp_path / "pipelined", tmp_path / "sequential")
    for a, b in zip(entries(tmp_path / "pipelined"), entries(tmp_path / "sequential"), strict=True):
        assert same_run(a, tmp_path / "pipelined") == same_run(b, tmp_path / "sequential")
        assert [Path(o).name for o in a["outputs"]] == [Path(o).name for o in b["outputs"]]


def test_colorize_batch_equals_one_picture_at_a_time(tiny_checkpoint):
    from sketchcolor import pipeline
    from sketchcolor.config import SampleConfig

    bundle = pipeline.load_model(tiny_checkpoint, "cpu")
    sizes = [(64, 48), (48, 64), (64, 48), (30, 90), (64, 48)]
    sketches = [draw_sketch(s) for s in sizes]
    hints = [draw_hints(s) if k % 2 == 0 else None for k, s in enumerate(sizes)]
    config = SampleConfig(steps=2)
    together = pipeline.colorize_batch(sketches, hints, bundle, config, [7, 8, 9, 10, 11], keep_flats=True)
    sampled = pipeline.sample_batch(sketches, hints, bundle, config, [7, 8, 9, 10, 11], keep_flats=True)
    for k, result in enumerate(together):
        again = sampled.finish(k, threads=1)
        assert np.array_equal(np.asarray(result.image), np.asarray(again.image))
        assert np.array_equal(np.asarray(result.flats[0]), np.asarray(again.flats[0]))
        assert result.record == again.record


# --- a real torchrun ------------------------------------------------------------------------------------


def test_torchrun_two_processes_give_the_files_of_one_run(
    capsys, clean_env, tmp_path, pages, tiny_checkpoint
):
    common = ["-r", "-m", str(tiny_checkpoint), "--steps", "2", "-b", "2", "-q", "--precision", "fp32"]
    assert run(capsys, "batch", pages, "-o", tmp_path / "whole", *common)[0] == 0
    env = {k: v for k, v in os.environ.items() if k not in SCHEDULER_VARS}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29523",
         "-m", "sketchcolor", "batch", str(pages), "-o", str(tmp_path / "ddp"), "--shard", "auto", *common],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (
        "shard 1/2 from torchrun rank 0 of 2" in proc.stderr
        and "shard 2/2 from torchrun rank 1 of 2" in proc.stderr
    )
    assert_same_pictures(tmp_path / "whole", tmp_path / "ddp")
    assert [e["input"] for e in entries(tmp_path / "ddp")] == [
        e["input"] for e in entries(tmp_path / "whole")
    ]
