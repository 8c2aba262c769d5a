import pytest
import torch

from sketchcolor.config import ModelConfig
from sketchcolor.models import UNet

from .conftest import TINY_MODEL, random_model, tiny_config


@pytest.mark.parametrize("size", [(8, 8), (16, 32), (40, 24), (64, 64)])
def test_output_shape_matches_input(size):
    model = UNet(TINY_MODEL).eval()
    x = torch.randn(2, 3, *size)
    cond = torch.randn(2, TINY_MODEL.cond_channels, *size)
    out = model(x, torch.tensor([0, 999]), cond)
    assert out.shape == x.shape


def test_three_levels_with_attention():
    cfg = ModelConfig(
        base_channels=8, channel_mults=(1, 2, 2), num_res_blocks=1, attention_levels=(1, 2), head_channels=8
    )
    model = UNet(cfg).eval()
    out = model(torch.randn(1, 3, 16, 24), torch.tensor([3]), torch.randn(1, cfg.cond_channels, 16, 24))
    assert out.shape == (1, 3, 16, 24)


def test_invalid_size_clear_error():
    model = UNet(TINY_MODEL)
    with pytest.raises(ValueError, match="not a multiple of 2"):
        model(torch.randn(1, 3, 15, 16), torch.tensor([0]), torch.randn(1, TINY_MODEL.cond_channels, 15, 16))
    with pytest.raises(ValueError, match="cond must be"):
        model(torch.randn(1, 3, 16, 16), torch.tensor([0]), torch.randn(1, 2, 16, 16))


def test_eval_deterministic_and_depends_on_every_input():
    config = tiny_config()
    model = random_model(config)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 16, 16, generator=gen)
    cond = torch.randn(1, config.model.cond_channels, 16, 16, generator=gen)
    t = torch.tensor([10])
    a = model(x, t, cond)
    assert torch.equal(a, model(x, t, cond))
    assert not torch.allclose(a, model(x, torch.tensor([900]), cond))
    assert not torch.allclose(a, model(x + 0.1, t, cond))
    assert not torch.allclose(a, model(x, t, cond + 0.1))


def test_zero_initialised_output():
    # A fresh network outputs exactly zero (zero-initialised last layer): training starts stable.
    model = UNet(TINY_MODEL)
    out = model(torch.randn(1, 3, 8, 8), torch.tensor([5]), torch.randn(1, TINY_MODEL.cond_channels, 8, 8))
    assert torch.count_nonzero(out) == 0


def test_parameter_budget_of_tiny_model():
    params = sum(p.numel() for p in UNet(TINY_MODEL).parameters())
    assert params < 60_000


def test_item_independent_of_batch():
    config = tiny_config()
    model = random_model(config)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(3, 3, 16, 16, generator=gen)
    cond = torch.randn(3, config.model.cond_channels, 16, 16, generator=gen)
    t = torch.tensor([1, 500, 999])
    batch = model(x, t, cond)
    single = model(x[1:2], t[1:2], cond[1:2])
    assert torch.allclose(batch[1:2], single, atol=1e-5)
