"""Samplers against analytic denoisers: no network, exact expectations."""

import functools

import pytest
import torch

from sketchcolor.config import ScheduleConfig
from sketchcolor.samplers import randn, sample_ddim, sample_ddpm, sample_dpmpp_2m
from sketchcolor.schedules import NoiseSchedule

SAMPLERS = {
    "ddim": functools.partial(sample_ddim, eta=0.0),
    "ddim-eta1": functools.partial(sample_ddim, eta=1.0),
    "ddpm": sample_ddpm,
    "dpmpp2m": sample_dpmpp_2m,
}


def point_denoiser(point: torch.Tensor, schedule: NoiseSchedule):
    """The data set is one point: the optimal x0 estimate is always that point."""

    def denoise(x_t, t, cond):
        ab = schedule.alpha_bar_at(t, like=x_t).view(-1, 1, 1, 1)
        x0 = point.expand_as(x_t)
        return x0, (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()

    return denoise


def gaussian_denoiser(std: float, schedule: NoiseSchedule):
    """Data ~ N(0, std^2) per pixel: E[x0 | x_t] = sqrt(ab) std^2 / (ab std^2 + 1 - ab) x_t."""

    def denoise(x_t, t, cond):
        ab = schedule.alpha_bar_at(t, like=x_t).view(-1, 1, 1, 1)
        x0 = ab.sqrt() * std**2 / (ab * std**2 + 1 - ab) * x_t
        return x0, (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()

    return denoise


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("ztsnr", [False, True])
@pytest.mark.parametrize("steps", [1, 2, 7, 50])
def test_ddim_reaches_single_point_exactly(steps, ztsnr):
    schedule = NoiseSchedule(ScheduleConfig(kind="cosine", zero_terminal_snr=ztsnr))
    point = torch.tensor([0.3, -0.7, 1.0]).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    noise = randn((2, 3, 4, 4), gen(0))
    out = sample_ddim(
        point_denoiser(point, schedule), noise, schedule, schedule.timesteps(steps), None, eta=0.0
    )
    assert torch.equal(out, point.expand(2, 3, 4, 4))


# Ancestral samplers use only the posterior mean of x0, which underestimates the variance when
# steps are coarse (coef_x0**2 * Var[x0 | x_t] is dropped); at T steps the chain is exact.
@pytest.mark.parametrize(
    ("name", "steps", "kind"),
    [
        ("ddim", 50, "linear"),
        ("ddim", 50, "cosine"),
        ("ddim-eta1", 1000, "linear"),
        ("ddpm", 1000, "linear"),
        ("ddpm", 100, "cosine"),
        ("dpmpp2m", 10, "cosine"),
        ("dpmpp2m", 20, "linear"),
    ],
)
def test_gaussian_data_variance(name, steps, kind):
    schedule = NoiseSchedule(ScheduleConfig(kind=kind))
    std = 0.5
    noise = randn((4000, 1, 2, 2), gen(1))
    out = SAMPLERS[name](
        gaussian_denoiser(std, schedule), noise, schedule, schedule.timesteps(steps), None, generator=gen(2)
    )
    assert abs(out.std().item() - std) < 0.03
    assert abs(out.mean().item()) < 0.02


@pytest.mark.parametrize("ztsnr", [False, True])
def test_dpmpp_beats_ddim_at_few_steps(ztsnr):
    # A second-order solver tracks the ODE better than DDIM (first order) at 5 steps.
    schedule = NoiseSchedule(ScheduleConfig(kind="cosine", zero_terminal_snr=ztsnr))
    den = gaussian_denoiser(0.5, schedule)
    noise = randn((4000, 1, 2, 2), gen(1))
    errs = {}
    for name, fn in (("ddim", functools.partial(sample_ddim, eta=0.0)), ("dpm", sample_dpmpp_2m)):
        out = fn(den, noise, schedule, schedule.timesteps(5), None)
        errs[name] = abs(out.std().item() - 0.5)
    assert errs["dpm"] < errs["ddim"]


def test_ddim_eta0_ignores_generator():
    schedule = NoiseSchedule(ScheduleConfig())
    den = gaussian_denoiser(0.5, schedule)
    noise = randn((2, 3, 4, 4), gen(0))
    a = sample_ddim(den, noise, schedule, schedule.timesteps(10), None, eta=0.0, generator=gen(1))
    b = sample_ddim(den, noise, schedule, schedule.timesteps(10), None, eta=0.0, generator=gen(99))
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_same_seed_same_output_other_seed_differs(name):
    schedule = NoiseSchedule(ScheduleConfig())
    den = gaussian_denoiser(0.5, schedule)
    ts = schedule.timesteps(10)

    def run(s):
        return SAMPLERS[name](den, randn((2, 3, 4, 4), gen(s)), schedule, ts, None, generator=gen(s + 100))  # noqa: E731

    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_item_same_alone_or_in_batch(name):
    schedule = NoiseSchedule(ScheduleConfig())
    den = gaussian_denoiser(0.5, schedule)
    ts = schedule.timesteps(8)
    seeds = [5, 6, 7]
    batch_noise = randn((3, 3, 4, 4), [gen(s) for s in seeds])
    batch = SAMPLERS[name](den, batch_noise, schedule, ts, None, generator=[gen(s + 10) for s in seeds])
    for i, s in enumerate(seeds):
        alone_noise = randn((1, 3, 4, 4), [gen(s)])
        alone = SAMPLERS[name](den, alone_noise, schedule, ts, None, generator=[gen(s + 10)])
        assert torch.equal(alone[0], batch[i])


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_callback_order_and_shapes(name):
    schedule = NoiseSchedule(ScheduleConfig())
    den = gaussian_denoiser(0.5, schedule)
    ts = schedule.timesteps(7)
    seen = []
    noise = randn((2, 3, 8, 4), gen(0))
    out = SAMPLERS[name](den, noise, schedule, ts, None, generator=gen(1), callback=seen.append)
    assert [info["t"] for info in seen] == ts.tolist()
    assert [info["step"] for info in seen] == list(range(7))
    assert seen[-1]["t_prev"] == -1
    assert all(info["x0_hat"].shape == noise.shape for info in seen)
    assert out.shape == noise.shape and out.dtype == torch.float32 and out.device == noise.device


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_x0_hook_pins_pixels(name):
    schedule = NoiseSchedule(ScheduleConfig())
    den = gaussian_denoiser(0.5, schedule)
    mask = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    mask[..., 1, 2] = True
    value = 0.25

    def pin(x0, t):
        return torch.where(mask, torch.full_like(x0, value), x0)

    out = SAMPLERS[name](
        den, randn((2, 3, 4, 4), gen(0)), schedule, schedule.timesteps(9), None, generator=gen(1), x0_hook=pin
    )
    assert torch.allclose(out[:, :, 1, 2], torch.full((2, 3), value), atol=1e-6)


def test_bad_timesteps_rejected():
    schedule = NoiseSchedule(ScheduleConfig(num_train_steps=10))
    den = gaussian_denoiser(0.5, schedule)
    noise = torch.zeros(1, 1, 1, 1)
    with pytest.raises(ValueError, match="strictly decreasing"):
        sample_ddim(den, noise, schedule, torch.tensor([5, 5, 1]), None)
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        sample_ddim(den, noise, schedule, torch.tensor([10, 1]), None)
    with pytest.raises(ValueError, match="needs a generator"):
        sample_ddim(den, noise, schedule, torch.tensor([9, 1]), None, eta=0.5)


def test_randn_per_item_generators():
    a = randn((2, 3), [gen(1), gen(2)])
    assert torch.equal(a[0], randn((1, 3), [gen(1)])[0])
    assert torch.equal(a[1], torch.randn(3, generator=gen(2)))
    with pytest.raises(ValueError, match="2 generators for a batch of 3"):
        randn((3, 3), [gen(1), gen(2)])
