import json
import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file

from sketchcolor.checkpoint import (
    FORMAT_VERSION,
    format_version_for,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
    unwrap_model,
)
from sketchcolor.config import to_dict
from sketchcolor.errors import CheckpointError, OutputExistsError

from .conftest import random_model, tiny_config


def _inputs(config, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 3, 16, 16, generator=gen)
    cond = torch.randn(1, config.model.cond_channels, 16, 16, generator=gen)
    return x, torch.tensor([123]), cond


def test_round_trip_same_outputs_and_metadata(tmp_path):
    config = tiny_config()
    model = random_model(config)
    path = save_checkpoint(
        tmp_path / "m.safetensors", model, config, step=42, data_digest="abc", recipe="test"
    )
    bundle = load_checkpoint(path, channels_last=False)
    assert bundle.config == config
    assert bundle.metadata["step"] == "42" and bundle.metadata["data_digest"] == "abc"
    assert int(bundle.metadata["format_version"]) == format_version_for(config) == 1  # no reference: v1
    assert len(bundle.digest) == 16
    x, t, cond = _inputs(config)
    assert torch.equal(bundle.model(x, t, cond), model(x, t, cond))
    assert not bundle.model.training
    # The default channels-last layout computes the same function (to float rounding).
    fast = load_checkpoint(path)
    assert torch.allclose(fast.model(x, t, cond), model(x, t, cond), atol=1e-5)


def test_fp16_weights(tmp_path):
    config = tiny_config()
    model = random_model(config)
    path = save_checkpoint(tmp_path / "h.safetensors", model, config, dtype=torch.float16)
    assert all(v.dtype == torch.float16 for v in load_file(str(path)).values())
    bundle = load_checkpoint(path)
    x, t, cond = _inputs(config)
    assert torch.allclose(bundle.model(x, t, cond), model(x, t, cond), atol=1e-2)


def test_refuses_overwrite(tmp_path):
    config = tiny_config()
    path = save_checkpoint(tmp_path / "m.safetensors", random_model(config), config)
    with pytest.raises(OutputExistsError):
        save_checkpoint(path, random_model(config), config)


def test_unwraps_compiled_and_ddp_names(tmp_path):
    config = tiny_config()

    class Wrapper(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.module = inner

    model = random_model(config)
    assert unwrap_model(Wrapper(model)) is model
    path = save_checkpoint(tmp_path / "w.safetensors", Wrapper(model), config)
    assert not any(k.startswith("module.") for k in load_file(str(path)))


def _rewrite(path, metadata=None, drop=None, extra=None):
    state = load_file(str(path))
    meta = read_metadata(path)
    meta.update(metadata or {})
    for k in drop or []:
        state.pop(k)
    state.update(extra or {})
    save_file(state, str(path), metadata=meta)


@pytest.fixture
def ckpt(tmp_path):
    config = tiny_config()
    return save_checkpoint(tmp_path / "c.safetensors", random_model(config), config)


def test_newer_format_version(ckpt):
    _rewrite(ckpt, {"format_version": str(FORMAT_VERSION + 1)})
    with pytest.raises(CheckpointError, match="newer than this sketchcolor supports"):
        load_checkpoint(ckpt)


def test_unknown_config_key(ckpt):
    cfg = json.loads(read_metadata(ckpt)["config"])
    cfg["model"]["wings"] = 2
    _rewrite(ckpt, {"config": json.dumps(cfg)})
    with pytest.raises(CheckpointError, match="unknown config key 'model.wings'"):
        load_checkpoint(ckpt)


def test_unknown_metadata_key(ckpt):
    _rewrite(ckpt, {"mystery": "1"})
    with pytest.raises(CheckpointError, match="unknown metadata key"):
        load_checkpoint(ckpt)


def test_missing_and_unexpected_weights(ckpt):
    name = next(iter(load_file(str(ckpt))))
    _rewrite(ckpt, drop=[name])
    with pytest.raises(CheckpointError, match=f"missing weights {name}"):
        load_checkpoint(ckpt)
    _rewrite(ckpt, extra={name: torch.zeros(1), "bogus.weight": torch.zeros(2)})
    with pytest.raises(CheckpointError, match="unexpected weights bogus.weight"):
        load_checkpoint(ckpt)


def test_shape_mismatch_other_architecture(tmp_path, ckpt):
    other = tiny_config(resolution=32)
    other_cfg = to_dict(other)
    other_cfg["model"]["base_channels"] = 16
    _rewrite(ckpt, {"config": json.dumps(other_cfg)})
    with pytest.raises(CheckpointError, match="has shape"):
        load_checkpoint(ckpt)


def test_not_a_sketchcolor_file(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="not a sketchcolor checkpoint"):
        load_checkpoint(path)


def test_pickles_refused(tmp_path):
    pt = tmp_path / "m.pt"
    torch.save({"w": torch.zeros(2)}, pt)
    with pytest.raises(CheckpointError, match="PyTorch zip/pickle checkpoint, which is never loaded"):
        load_checkpoint(pt)
    pkl = tmp_path / "m.safetensors"
    pkl.write_bytes(pickle.dumps({"w": 1}))
    with pytest.raises(CheckpointError, match="pickle file, which is never loaded"):
        load_checkpoint(pkl)


@pytest.mark.parametrize(
    "content", [b"", b"hello world, not weights", b'\x10\x00\x00\x00\x00\x00\x00\x00{"a":']
)
def test_garbage_and_truncated(tmp_path, content):
    path = tmp_path / "g.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=str(path)):
        load_checkpoint(path)


def test_truncated_real_file(ckpt):
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match="corrupt safetensors file"):
        load_checkpoint(ckpt)


def test_nan_weights_refused(ckpt):
    state = load_file(str(ckpt))
    name = next(iter(state))
    state[name] = torch.full_like(state[name], float("nan"))
    save_file(state, str(ckpt), metadata=read_metadata(ckpt))
    with pytest.raises(CheckpointError, match="NaN"):
        load_checkpoint(ckpt)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.safetensors")
