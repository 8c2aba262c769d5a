import hashlib

import pytest
import torch

from sketchcolor.config import ScheduleConfig
from sketchcolor.schedules import NoiseSchedule

SCHEDULES = {
    "linear": ScheduleConfig(kind="linear"),
    "cosine": ScheduleConfig(kind="cosine"),
    "linear-ztsnr": ScheduleConfig(kind="linear", zero_terminal_snr=True),
    "cosine-ztsnr": ScheduleConfig(kind="cosine", zero_terminal_snr=True),
}

# Frozen checksums of each named schedule's alpha_bar (float64 bytes). A released schedule must never
# change: if one of these fails, you changed a schedule trained models depend on. Add a new name instead.
# For a brand-new schedule, print its value with:
#   python -c "from tests.test_schedules import *; print(checksum(NoiseSchedule(ScheduleConfig(...))))"
FROZEN = {
    "linear": "1f988a0e8fa9a564",
    "cosine": "46444c184306c2d8",
    "linear-ztsnr": "f3b7e94e9e7dfcad",
    "cosine-ztsnr": "d1516e52df877862",
}


def checksum(schedule: NoiseSchedule) -> str:
    return hashlib.sha256(schedule.alpha_bar.numpy().round(12).tobytes()).hexdigest()[:16]


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_alpha_bar_monotone_in_unit_interval(name):
    s = NoiseSchedule(SCHEDULES[name])
    ab = s.alpha_bar
    assert ab.dtype == torch.float64
    assert (ab[1:] < ab[:-1]).all()
    assert ab[0] <= 1 and ab[0] > 0.99
    assert (ab[:-1] > 0).all()
    betas = s.betas
    assert (betas > 0).all() and (betas <= 1).all()
    if SCHEDULES[name].zero_terminal_snr:
        assert ab[-1] == 0.0
        assert s.snr(torch.tensor([s.num_train_steps - 1])).item() == 0.0
    else:
        assert 0 < ab[-1] < 1e-3
        assert s.snr(torch.tensor([s.num_train_steps - 1])).item() < 1e-3
        assert (betas < 1).all()


def test_zero_terminal_snr_keeps_first_step():
    plain = NoiseSchedule(ScheduleConfig(kind="linear")).alpha_bar
    rescaled = NoiseSchedule(ScheduleConfig(kind="linear", zero_terminal_snr=True)).alpha_bar
    assert torch.allclose(plain[0], rescaled[0], rtol=1e-12)


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_checksums_frozen(name):
    s = NoiseSchedule(SCHEDULES[name])
    assert checksum(s) == FROZEN[name], f"named schedule {name!r} changed"


@pytest.mark.parametrize("spacing", ["trailing", "linspace"])
@pytest.mark.parametrize("n", [1, 2, 7, 50, 999, 1000])
def test_timesteps_invariants(n, spacing):
    s = NoiseSchedule(ScheduleConfig(num_train_steps=1000))
    ts = s.timesteps(n, spacing)
    assert ts.dtype == torch.int64
    assert len(ts) == n
    assert ts[0] == 999
    assert ts[-1] >= 0
    assert (ts[1:] < ts[:-1]).all()
    assert len(set(ts.tolist())) == n
    if n == 1000:
        assert torch.equal(ts, torch.arange(999, -1, -1))


@pytest.mark.parametrize("bad", [0, 1001])
def test_timesteps_out_of_range(bad):
    with pytest.raises(ValueError, match="between 1 and 1000"):
        NoiseSchedule(ScheduleConfig()).timesteps(bad)


def test_add_noise_zero_noise_scales_x0():
    s = NoiseSchedule(ScheduleConfig(kind="cosine"))
    x0 = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0, 500, 999])
    out = s.add_noise(x0, torch.zeros_like(x0), t)
    expected = s.alpha_bar[t].sqrt().float().view(-1, 1, 1, 1) * x0
    assert torch.allclose(out, expected, atol=1e-7)


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_add_noise_preserves_unit_variance(name):
    s = NoiseSchedule(SCHEDULES[name])
    gen = torch.Generator().manual_seed(1)
    x0 = torch.randn(20000, 1, 1, 1, generator=gen, dtype=torch.float64)
    noise = torch.randn(20000, 1, 1, 1, generator=gen, dtype=torch.float64)
    for t in (0, 250, 999):
        x_t = s.add_noise(x0, noise, torch.full((20000,), t))
        assert abs(x_t.var().item() - 1.0) < 0.05


def test_alpha_bar_at_minus_one_is_clean():
    s = NoiseSchedule(ScheduleConfig())
    assert s.alpha_bar_at(torch.tensor([-1])).item() == 1.0
    assert s.alpha_bar_float(-1) == 1.0
    assert s.alpha_bar_float(10) == s.alpha_bar[10].item()


def test_schedule_is_immutable_to_callers():
    s = NoiseSchedule(ScheduleConfig())
    ab = s.alpha_bar
    ab[:] = 0
    assert s.alpha_bar[0] > 0.99
