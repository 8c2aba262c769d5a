"""Training on procedural pictures: checkpoints, exact resumption, bad input, torchrun."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sketchcolor.checkpoint import load_checkpoint
from sketchcolor.cli import main
from sketchcolor.config import SampleConfig, dumps_toml, to_dict
from sketchcolor.errors import CheckpointError, ConfigError, DataError
from sketchcolor.pipeline import colorize
from sketchcolor.training import TrainingDiverged, checkpoints_in, load_run_config, train

from .conftest import draw_hints, draw_sketch, tiny_train_config, write_dataset


def losses(run: Path) -> dict[int, float]:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in lines if "loss" in r}


@pytest.fixture
def data(tmp_path):
    return write_dataset(tmp_path / "pictures", 12)


def test_short_run_writes_loadable_model(tmp_path, data):
    config = tiny_train_config(data, tmp_path, **{"run.sample_every": 6})
    infos = list(train(config, tmp_path / "run"))
    assert [i.step for i in infos] == list(range(1, 7))
    assert all(np.isfinite(i.loss) for i in infos)
    run = tmp_path / "run"
    assert [p.name for p in checkpoints_in(run)] == ["step-000004", "step-000006"]  # keep_last = 2
    assert (run / "samples" / "step-000006.png").exists()
    assert (run / "config.toml").exists() and (run / "best.safetensors").exists()
    bundle = load_checkpoint(run / "last.safetensors")
    assert bundle.metadata["step"] == "6" and bundle.metadata["data_digest"]
    out = colorize(draw_sketch(), draw_hints(), bundle, SampleConfig(steps=2))
    assert out.image.size == (96, 64)
    val = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if "val_loss" in x]
    assert [v["step"] for v in val] == [2, 4, 6]


def test_run_threads_apply_to_the_run_only(tmp_path, data):
    """run.threads sets torch's thread count while training; the caller's comes back after."""
    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    seen: list[int] = []
    config = tiny_train_config(data, tmp_path, **{"run.threads": wanted, "optim.steps": 2})
    for _ in train(config, tmp_path / "run"):
        seen.append(torch.get_num_threads())
    assert seen == [wanted, wanted] and torch.get_num_threads() == before
    # Also when the caller stops early (closes the generator).
    steps = train(tiny_train_config(data, tmp_path, **{"run.threads": wanted}), tmp_path / "run2")
    next(steps)
    assert torch.get_num_threads() == wanted
    steps.close()
    assert torch.get_num_threads() == before


def test_loss_decreases_on_learnable_data(tmp_path, data):
    config = tiny_train_config(
        data, tmp_path, **{"optim.steps": 40, "run.checkpoint_every": 40, "optim.lr": 3e-3}
    )
    infos = list(train(config, tmp_path / "run"))
    first = np.mean([i.loss for i in infos[:5]])
    last = np.mean([i.loss for i in infos[-5:]])
    assert last < 0.8 * first


def test_photo_mode_trains(tmp_path, data):
    config = tiny_train_config(data, tmp_path, **{"model.conditioning.mode": "photo", "optim.steps": 2})
    list(train(config, tmp_path / "run"))
    bundle = load_checkpoint(tmp_path / "run" / "last.safetensors")
    assert bundle.config.conditioning.mode == "photo" and bundle.config.model.in_channels == 2


def _cli_args(data, tmp_path, run, steps, extra=()):
    cfg = tiny_train_config(data, tmp_path, **{"optim.steps": steps, "run.checkpoint_every": 4})
    cfg_path = tmp_path / "recipe.toml"
    cfg_path.write_text(dumps_toml(to_dict(cfg)))
    return ["train", "--config", str(cfg_path), "--out", str(run), *extra]


def test_kill_and_resume_repeats_uninterrupted_losses(tmp_path, data):
    steps = 60
    reference = tmp_path / "reference"
    assert main(_cli_args(data, tmp_path, reference, steps, ["-q"])) == 0
    ref = losses(reference)
    assert sorted(ref) == list(range(1, steps + 1))

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sketchcolor", *_cli_args(data, tmp_path, killed, steps, ["-q"])],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not (killed / "checkpoints" / "step-000008").exists():
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = losses(killed)
    assert max(partial) < steps
    assert main(["train", "--resume", str(killed), "-q"]) == 0
    resumed = losses(killed)
    assert sorted(resumed) == list(range(1, steps + 1))
    assert resumed == ref  # bit-identical, including the steps after the last checkpoint


def test_resume_errors(tmp_path, data, capsys):
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(DataError, match="not a training run folder"):
        load_run_config(run)
    with pytest.raises(CheckpointError, match="no checkpoint to resume from"):
        list(train(tiny_train_config(data, tmp_path), run, resume=True))
    # A finished run cannot be started again in the same folder.
    list(train(tiny_train_config(data, tmp_path, **{"optim.steps": 2}), run))
    with pytest.raises(DataError, match="already holds checkpoints"):
        list(train(tiny_train_config(data, tmp_path, **{"optim.steps": 2}), run))
    # A checkpoint of another architecture.
    other = tiny_train_config(data, tmp_path, **{"optim.steps": 4, "model.model.base_channels": 16})
    with pytest.raises(CheckpointError, match="checkpoint of another architecture"):
        list(train(other, run, resume=True))
    code = main(["train", "--resume", str(tmp_path / "empty")])
    assert code == 1 and "not a training run folder" in capsys.readouterr().err


def test_too_few_pictures_and_empty_folder(tmp_path):
    few = write_dataset(tmp_path / "few", 3)
    with pytest.raises(DataError, match="only 3 training pictures for a batch of 4"):
        list(train(tiny_train_config(few, tmp_path, **{"data.val_count": 0}), tmp_path / "r1"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no training pictures found"):
        list(train(tiny_train_config(tmp_path / "empty", tmp_path), tmp_path / "r2"))


def test_nan_loss_stops_and_keeps_last_checkpoint(tmp_path, data, monkeypatch):
    from sketchcolor import denoiser

    original = denoiser.Denoiser.loss
    calls = {"n": 0}

    def flaky(self, *args, **kwargs):
        calls["n"] += 1
        value = original(self, *args, **kwargs)
        return value * float("nan") if calls["n"] == 3 else value

    monkeypatch.setattr(denoiser.Denoiser, "loss", flaky)
    run = tmp_path / "run"
    config = tiny_train_config(data, tmp_path, **{"data.val_count": 0})
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 3; .*step-000002"):
        list(train(config, run))
    assert [p.name for p in checkpoints_in(run)] == ["step-000002"]
    assert load_checkpoint(run / "last.safetensors").metadata["step"] == "2"


def test_hint_weight_weights_the_training_loss_at_hinted_pixels_only(tmp_path, data, monkeypatch):
    from sketchcolor import denoiser

    original = denoiser.Denoiser.loss
    calls = []

    def spy(self, x0, t, noise, cond, weight=None):
        calls.append((cond.channels.detach().clone(), weight))
        return original(self, x0, t, noise, cond, weight)

    monkeypatch.setattr(denoiser.Denoiser, "loss", spy)
    config = tiny_train_config(
        data, tmp_path, **{"optim.steps": 1, "optim.hint_weight": 4.0, "hints.p_none": 0.0, "hints.drop": 0.0}
    )
    list(train(config, tmp_path / "run"))
    (channels, weight), *validation = calls
    mask = channels[:, config.model.conditioning.channels.index("hint_mask")].unsqueeze(1)
    assert 0 < float(mask.mean()) < 1  # some pixels hinted, most not
    assert weight is not None and torch.equal(weight, 1.0 + 4.0 * mask)
    assert validation and all(w is None for _, w in validation)  # the validation loss stays plain MSE


def test_hint_weight_zero_is_plain_mse_and_negative_is_refused(tmp_path, data):
    from sketchcolor.training import hint_loss_weight

    config = tiny_train_config(data, tmp_path)
    assert config.optim.hint_weight == 0 and hint_loss_weight(torch.ones(1, 9, 4, 4), config) is None
    with pytest.raises(ConfigError, match="optim.hint_weight must be a finite number >= 0"):
        tiny_train_config(data, tmp_path, **{"optim.hint_weight": -1.0})


def test_init_from_fine_tunes(tmp_path, data):
    list(train(tiny_train_config(data, tmp_path, **{"optim.steps": 4}), tmp_path / "base"))
    base = load_checkpoint(tmp_path / "base" / "last.safetensors")
    config = tiny_train_config(
        data, tmp_path, **{"optim.steps": 1, "optim.lr": 1e-9, "optim.min_lr": 0.0, "optim.ema_decay": 0.0}
    )
    list(train(config, tmp_path / "tuned", init_from=tmp_path / "base" / "last.safetensors"))
    tuned = load_checkpoint(tmp_path / "tuned" / "last.safetensors")
    for (name, a), b in zip(base.model.state_dict().items(), tuned.model.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-5), name


def test_cli_train_overrides_and_bad_set(tmp_path, data, capsys):
    cfg = tiny_train_config(data, tmp_path)
    cfg_path = tmp_path / "r.toml"
    cfg_path.write_text(dumps_toml(to_dict(cfg)))
    code = main(
        [
            "train",
            "--config",
            str(cfg_path),
            "--out",
            str(tmp_path / "run"),
            "--steps",
            "2",
            "--set",
            "optim.lr=5e-4",
            "--format",
            "json",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and json.loads(out)["steps"] == 2
    saved = (tmp_path / "run" / "config.toml").read_text()
    assert "lr = 0.0005" in saved and "steps = 2" in saved
    code = main(["train", "--config", str(cfg_path), "--out", str(tmp_path / "run2"), "--set", "optim.lrr=1"])
    err = capsys.readouterr().err
    assert code == 1 and "unknown config key 'optim.lrr'" in err
    bad = tmp_path / "bad.toml"
    bad.write_text("[optim]\nwarmup = 3\n")
    code = main(["train", "--config", str(bad), "--out", str(tmp_path / "run3"), "--data", str(data)])
    assert code == 1 and "unknown config key 'optim.warmup'" in capsys.readouterr().err


def test_torchrun_two_processes_gloo(tmp_path, data):
    cfg = tiny_train_config(data, tmp_path, **{"optim.steps": 4, "data.val_count": 0})
    cfg_path = tmp_path / "r.toml"
    cfg_path.write_text(dumps_toml(to_dict(cfg)))
    run = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517",
         "-m", "sketchcolor", "train", "--config", str(cfg_path), "--out", str(run), "-q", "--format", "json"],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count('"steps": 4') == 1  # only rank 0 reports
    assert sorted(losses(run)) == [1, 2, 3, 4]
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 4  # one writer
    assert [p.name for p in checkpoints_in(run)] == ["step-000002", "step-000004"]
    assert load_checkpoint(run / "last.safetensors").metadata["step"] == "4"
    shutil.rmtree(run)
