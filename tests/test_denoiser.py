import pytest
import torch
from torch import nn

from sketchcolor.config import ScheduleConfig
from sketchcolor.denoiser import Denoiser, GuidedDenoiser, prediction_target
from sketchcolor.schedules import NoiseSchedule


class Oracle(nn.Module):
    """Returns the exact training target for known (x0, noise): tests the parameterisations."""

    def __init__(self, x0, noise, schedule, prediction):
        super().__init__()
        self.x0, self.noise, self.schedule, self.prediction = x0, noise, schedule, prediction

    def forward(self, x_t, t, cond):
        ab = self.schedule.alpha_bar_at(t, like=x_t).view(-1, 1, 1, 1)
        return prediction_target(self.prediction, self.x0, self.noise, ab.sqrt(), (1 - ab).sqrt())


# eps-prediction with zero terminal SNR is excluded: eps is undefined there (the config refuses it).
@pytest.mark.parametrize(
    ("prediction", "ztsnr"), [("eps", False), ("v", False), ("x0", False), ("v", True), ("x0", True)]
)
def test_parameterisations_recover_x0_and_eps(prediction, ztsnr):
    schedule = NoiseSchedule(ScheduleConfig(zero_terminal_snr=ztsnr))
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, 3, 4, 4, generator=gen)
    noise = torch.randn(4, 3, 4, 4, generator=gen)
    t = torch.tensor([0, 10, 500, 998])
    den = Denoiser(Oracle(x0, noise, schedule, prediction), schedule, prediction)
    x_t = schedule.add_noise(x0, noise, t)
    x0_hat, eps_hat = den(x_t, t, None)
    assert torch.allclose(x0_hat, x0, atol=2e-3)
    assert torch.allclose(eps_hat, noise, atol=2e-3)
    # The oracle has zero loss.
    assert den.loss(x0, t, noise, None).item() < 1e-10


def test_loss_is_mse_to_target():
    schedule = NoiseSchedule(ScheduleConfig())

    class Zero(nn.Module):
        def forward(self, x_t, t, cond):
            return torch.zeros_like(x_t)

    x0 = torch.ones(2, 3, 2, 2)
    noise = torch.full_like(x0, 2.0)
    assert Denoiser(Zero(), schedule, "x0").loss(
        x0, torch.tensor([5, 5]), noise, None
    ).item() == pytest.approx(1.0)
    assert Denoiser(Zero(), schedule, "eps").loss(
        x0, torch.tensor([5, 5]), noise, None
    ).item() == pytest.approx(4.0)


def test_guidance_merges_predictions():
    class CondSum(nn.Module):
        def forward(self, x_t, t, cond):
            return cond[:, :1].expand_as(x_t) * 1.0

    schedule = NoiseSchedule(ScheduleConfig())
    den = Denoiser(CondSum(), schedule, "x0")
    x_t = torch.zeros(1, 3, 2, 2)
    cond = torch.full((1, 2, 2, 2), 1.0)
    uncond = torch.zeros((1, 2, 2, 2))
    t = torch.tensor([100])
    for scale in (0.0, 1.0, 3.0):
        x0, _ = GuidedDenoiser(den, uncond, scale)(x_t, t, cond)
        assert torch.allclose(x0, torch.full_like(x0, scale))


def test_unknown_prediction_rejected():
    with pytest.raises(ValueError, match="unknown prediction"):
        Denoiser(nn.Identity(), NoiseSchedule(ScheduleConfig()), "score")
