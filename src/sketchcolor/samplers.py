"""Samplers: plain functions that turn noise into data with a denoiser.

Owns: :func:`sample_ddpm` (ancestral sampling, Ho et al. 2020) and :func:`sample_ddim` (Song et al.
2021, with eta), plus the noise helper :func:`randn` that draws from explicit per-item generators.

Contracts:

* A sampler needs only a callable ``denoiser(x_t, t, cond) -> (x0_hat, eps_hat)``
  (:class:`DenoiserFn`), a :class:`~sketchcolor.schedules.NoiseSchedule` and a strictly
  decreasing timestep list. It never imports the network, and guidance is the denoiser's business.
* It loops over consecutive pairs (t, t_prev) of the list, then from the last element to the
  clean sample (t_prev = -1, alpha_bar = 1). The previous step always comes from the list, never
  from a stride formula (diffusers #9261).
* The caller draws the initial noise; the sampler draws further noise only from ``generator``.
* Nothing is stored between calls: no ``set_timesteps``, no step index.
* ``callback`` receives a mapping per step: ``step`` (0-based), ``num_steps``, ``t``, ``t_prev``,
  ``x_t`` (the sample before the step) and ``x0_hat`` (after ``x0_hook``).
* ``x0_hook(x0_hat, t) -> x0_hat`` may constrain the clean estimate (clamp, pin hinted pixels);
  eps is then re-derived from x_t so the two estimates stay consistent.

Imports ``schedules`` only (and ``config`` for types); never ``models``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import torch

from .schedules import NoiseSchedule


class DenoiserFn(Protocol):
    """``(x_t, t, cond) -> (x0_hat, eps_hat)``; see :class:`sketchcolor.denoiser.Denoiser`."""

    def __call__(
        self, x_t: torch.Tensor, t: torch.Tensor, cond: Any
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


Generators = torch.Generator | Sequence[torch.Generator]
Callback = Callable[[Mapping[str, Any]], None]
X0Hook = Callable[[torch.Tensor, int], torch.Tensor]


def randn(
    shape: Sequence[int],
    generator: Generators,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard normal noise from explicit generators.

    Args:
        shape: (N, ...) shape.
        generator: One generator for the whole batch, or one per item (N of them). With one per
            item, item i's noise depends only on generator i, so an item gets the same noise
            alone or in any batch (EDM's stacked generators).
        device: Where the result goes. Noise is drawn on each generator's own device (CPU
            generators give the same numbers on every machine) and then moved.
        dtype: Result dtype.

    Returns:
        Tensor of ``shape`` on ``device``.
    """
    if isinstance(generator, torch.Generator):
        return torch.randn(tuple(shape), generator=generator, device=generator.device).to(
            device=device, dtype=dtype
        )
    gens = list(generator)
    if len(gens) != shape[0]:
        raise ValueError(f"got {len(gens)} generators for a batch of {shape[0]}")
    items = [torch.randn(tuple(shape[1:]), generator=g, device=g.device).to(device) for g in gens]
    return torch.stack(items).to(dtype=dtype)


def _step_noises(x: torch.Tensor, generator: Generators | None, count: int) -> Iterator[torch.Tensor]:
    """All per-step noise of a run, drawn before the loop (in step order) and moved in one go.

    Drawing up front keeps host-to-device copies (which synchronise on CUDA) out of the loop,
    without changing which numbers each step receives.
    """
    if count == 0:
        return iter(())
    if generator is None:
        raise ValueError("this sampler adds noise and needs a generator")
    shape = (count, *x.shape)
    if isinstance(generator, torch.Generator):
        draws = [
            torch.randn(tuple(x.shape), generator=generator, device=generator.device) for _ in range(count)
        ]
    else:
        gens = list(generator)
        if len(gens) != x.shape[0]:
            raise ValueError(f"got {len(gens)} generators for a batch of {x.shape[0]}")
        draws = [
            torch.stack([torch.randn(tuple(x.shape[1:]), generator=g, device=g.device) for g in gens])
            for _ in range(count)
        ]
    stacked = torch.stack([d.cpu() for d in draws]).reshape(shape)
    if x.device.type == "cuda":
        stacked = stacked.pin_memory().to(x.device, non_blocking=True)
    else:
        stacked = stacked.to(x.device)
    return iter(stacked.to(x.dtype).unbind(0))


def _check_timesteps(timesteps: torch.Tensor, schedule: NoiseSchedule) -> list[int]:
    ts = [int(t) for t in timesteps.tolist()]
    if not ts:
        raise ValueError("timesteps is empty")
    if any(b >= a for a, b in zip(ts, ts[1:], strict=False)):
        raise ValueError("timesteps must be strictly decreasing")
    if ts[0] >= schedule.num_train_steps or ts[-1] < 0:
        raise ValueError(f"timesteps must lie in [0, {schedule.num_train_steps})")
    return ts


def _predict(
    denoiser: DenoiserFn,
    x: torch.Tensor,
    t: int,
    cond: Any,
    x0_hook: X0Hook | None,
    a: float,
    s: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shared step helper: denoise at integer step t, apply the hook, keep eps consistent."""
    t_batch = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
    x0_hat, eps_hat = denoiser(x, t_batch, cond)
    if x0_hook is not None:
        x0_hat = x0_hook(x0_hat, t)
        # Re-derive eps from x_t = a * x0 + s * eps so the update uses the constrained x0.
        eps_hat = (x - a * x0_hat) / s
    return x0_hat, eps_hat


def sample_ddim(
    denoiser: DenoiserFn,
    noise: torch.Tensor,
    schedule: NoiseSchedule,
    timesteps: torch.Tensor,
    cond: Any,
    *,
    eta: float = 0.0,
    generator: Generators | None = None,
    callback: Callback | None = None,
    x0_hook: X0Hook | None = None,
) -> torch.Tensor:
    """Sample with DDIM (Song et al. 2021, "Denoising Diffusion Implicit Models", eq. 12).

    Args:
        denoiser: ``(x_t, t, cond) -> (x0_hat, eps_hat)``.
        noise: (N, C, H, W) standard normal starting sample x_{t_0} (drawn by the caller).
        schedule: The noise schedule the denoiser was trained with.
        timesteps: Strictly decreasing integer steps, usually ``schedule.timesteps(n)``.
        cond: Conditioning passed unchanged to the denoiser.
        eta: 0 gives the deterministic DDIM; 1 gives DDPM's posterior variance.
        generator: Generator(s) for the noise added when ``eta > 0`` (required then).
        callback: Called after each step's prediction with the step info (module docstring).
        x0_hook: Optional constraint on each x0 estimate.

    Returns:
        (N, C, H, W) float32 sample in model space (the last step's x0 estimate).

    Raises:
        ValueError: Bad timestep list, or ``eta > 0`` without a generator.
    """
    if eta > 0 and generator is None:
        raise ValueError("sample_ddim with eta > 0 needs a generator")
    ts = _check_timesteps(timesteps, schedule)
    x = noise.float()
    x0_hat = x
    pairs = list(zip(ts, [*ts[1:], -1], strict=True))
    for i, (t, t_prev) in enumerate(pairs):
        ab, ab_prev = schedule.alpha_bar_float(t), schedule.alpha_bar_float(t_prev)
        a, s = math.sqrt(ab), math.sqrt(1.0 - ab)
        # 1. Predict the clean sample and the noise it implies at this step.
        x0_hat, eps_hat = _predict(denoiser, x, t, cond, x0_hook, a, s)
        if callback is not None:
            callback(
                {"step": i, "num_steps": len(pairs), "t": t, "t_prev": t_prev, "x_t": x, "x0_hat": x0_hat}
            )
        # 2. sigma_t of eq. 16: eta interpolates between DDIM (0) and DDPM's posterior std (1).
        sigma = eta * math.sqrt((1.0 - ab_prev) / (1.0 - ab) * (1.0 - ab / ab_prev))
        # 3. Eq. 12: jump to t_prev along the predicted noise direction, plus fresh noise.
        direction = math.sqrt(max(1.0 - ab_prev - sigma**2, 0.0))
        x = math.sqrt(ab_prev) * x0_hat + direction * eps_hat
        if sigma > 0:
            assert generator is not None
            x = x + sigma * randn(x.shape, generator, device=x.device, dtype=x.dtype)
    return x


def sample_ddpm(
    denoiser: DenoiserFn,
    noise: torch.Tensor,
    schedule: NoiseSchedule,
    timesteps: torch.Tensor,
    cond: Any,
    *,
    generator: Generators,
    callback: Callback | None = None,
    x0_hook: X0Hook | None = None,
) -> torch.Tensor:
    """Ancestral sampling (Ho et al. 2020, "Denoising Diffusion Probabilistic Models", eqs. 6-7).

    Each step samples the posterior q(x_{t_prev} | x_t, x0 = x0_hat) of the chain restricted to the
    given timesteps (beta' = 1 - alpha_bar_t / alpha_bar_prev), with the posterior variance
    beta_tilde. With the full list of T steps this is the original DDPM sampler.

    Args:
        denoiser: ``(x_t, t, cond) -> (x0_hat, eps_hat)``.
        noise: (N, C, H, W) standard normal starting sample (drawn by the caller).
        schedule: The noise schedule the denoiser was trained with.
        timesteps: Strictly decreasing integer steps.
        cond: Conditioning passed unchanged to the denoiser.
        generator: Generator(s) for the per-step noise.
        callback: Called after each step's prediction with the step info.
        x0_hook: Optional constraint on each x0 estimate.

    Returns:
        (N, C, H, W) float32 sample in model space.
    """
    ts = _check_timesteps(timesteps, schedule)
    x = noise.float()
    pairs = list(zip(ts, [*ts[1:], -1], strict=True))
    alpha_bars = [(schedule.alpha_bar_float(t), schedule.alpha_bar_float(t_prev)) for t, t_prev in pairs]
    noises = _step_noises(x, generator, sum(t_prev >= 0 for _, t_prev in pairs))
    for i, ((t, t_prev), (ab, ab_prev)) in enumerate(zip(pairs, alpha_bars, strict=True)):
        a, s = math.sqrt(ab), math.sqrt(1.0 - ab)
        # 1. Predict the clean sample at this step.
        x0_hat, _eps_hat = _predict(denoiser, x, t, cond, x0_hook, a, s)
        if callback is not None:
            callback(
                {"step": i, "num_steps": len(pairs), "t": t, "t_prev": t_prev, "x_t": x, "x0_hat": x0_hat}
            )
        # 2. Posterior q(x_{t_prev} | x_t, x0) of the respaced chain (eq. 7).
        beta = 1.0 - ab / ab_prev
        coef_x0 = math.sqrt(ab_prev) * beta / (1.0 - ab)
        coef_xt = math.sqrt(1.0 - beta) * (1.0 - ab_prev) / (1.0 - ab)
        variance = beta * (1.0 - ab_prev) / (1.0 - ab)
        x = coef_x0 * x0_hat + coef_xt * x
        # 3. Add noise except on the final step to the clean sample (variance 0 there).
        if t_prev >= 0:
            x = x + math.sqrt(variance) * next(noises)
    return x


def sample_dpmpp_2m(
    denoiser: DenoiserFn,
    noise: torch.Tensor,
    schedule: NoiseSchedule,
    timesteps: torch.Tensor,
    cond: Any,
    *,
    generator: Generators | None = None,
    callback: Callback | None = None,
    x0_hook: X0Hook | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M): a deterministic second-order multistep solver of the diffusion ODE.

    Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic
    Models", Algorithm 2, in data (x0) prediction form. With alpha = sqrt(alpha_bar),
    sigma = sqrt(1 - alpha_bar), lambda = log(alpha / sigma) and h = lambda_s - lambda_t:

        x_s = (sigma_s / sigma_t) * x_t - alpha_s * (exp(-h) - 1) * D,
        D = (1 + 1 / (2 r)) * x0_t - 1 / (2 r) * x0_prev,   r = h_prev / h,

    with D = x0_t (first order) on the first step, on the final step to the clean sample, and
    after a step from zero SNR (where lambda = -inf). exp(-h) is computed as
    (alpha_t * sigma_s) / (sigma_t * alpha_s), which stays finite at zero terminal SNR.

    Args:
        denoiser: ``(x_t, t, cond) -> (x0_hat, eps_hat)``.
        noise: (N, C, H, W) standard normal starting sample (drawn by the caller).
        schedule: The noise schedule the denoiser was trained with.
        timesteps: Strictly decreasing integer steps.
        cond: Conditioning passed unchanged to the denoiser.
        generator: Unused (the solver is deterministic); accepted so all samplers share a signature.
        callback: Called after each step's prediction with the step info.
        x0_hook: Optional constraint on each x0 estimate.

    Returns:
        (N, C, H, W) float32 sample in model space.
    """
    del generator  # deterministic
    ts = _check_timesteps(timesteps, schedule)
    x = noise.float()
    pairs = list(zip(ts, [*ts[1:], -1], strict=True))
    x0_prev: torch.Tensor | None = None
    h_prev: float | None = None
    for i, (t, t_prev) in enumerate(pairs):
        ab, ab_prev = schedule.alpha_bar_float(t), schedule.alpha_bar_float(t_prev)
        alpha_t, sigma_t = math.sqrt(ab), math.sqrt(1.0 - ab)
        alpha_s, sigma_s = math.sqrt(ab_prev), math.sqrt(1.0 - ab_prev)
        # 1. Predict the clean sample at this step.
        x0_hat, _eps = _predict(denoiser, x, t, cond, x0_hook, alpha_t, sigma_t)
        if callback is not None:
            callback(
                {"step": i, "num_steps": len(pairs), "t": t, "t_prev": t_prev, "x_t": x, "x0_hat": x0_hat}
            )
        if sigma_s == 0.0:
            # 2a. Final step to the clean sample: first order, x_s = x0_hat.
            x = x0_hat
            break
        # 2. exp(-h) = (alpha_t sigma_s) / (sigma_t alpha_s); h = lambda_s - lambda_t (inf at zero SNR).
        exp_neg_h = (alpha_t * sigma_s) / (sigma_t * alpha_s)
        h = math.inf if exp_neg_h == 0.0 else -math.log(exp_neg_h)
        # 3. Second-order correction from the previous x0 estimate, when one exists and is usable.
        if x0_prev is not None and h_prev is not None and math.isfinite(h_prev) and math.isfinite(h):
            r = h_prev / h
            d = (1.0 + 1.0 / (2.0 * r)) * x0_hat - (1.0 / (2.0 * r)) * x0_prev
        else:
            d = x0_hat
        # 4. The exponential-integrator update.
        x = (sigma_s / sigma_t) * x - alpha_s * (exp_neg_h - 1.0) * d
        x0_prev, h_prev = x0_hat, h
    return x
