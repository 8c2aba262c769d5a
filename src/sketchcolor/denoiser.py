"""Network + schedule + prediction type -> x0 and eps estimates, and the training loss.

Owns: the three parameterisations (eps, v, x0), the conversion of a network output into both
``x0_hat`` and ``eps_hat``, the training loss, and classifier-free guidance as a wrapper that
merges two predictions (so samplers never learn about guidance).

The contract samplers rely on (see :class:`sketchcolor.samplers.DenoiserFn`)::

    denoiser(x_t, t, cond) -> (x0_hat, eps_hat)

with ``x_t`` (N, C, H, W) in model space, ``t`` (N,) integer steps in [0, T) and ``cond`` the
network's conditioning: a :class:`~sketchcolor.conditioning.ModelCond` (spatial channels and an
optional reference) or, for networks without a reference, the channels tensor (N, C_cond, H, W)
alone. Outputs are float32 whatever precision the network ran in.

Imports ``config``, ``conditioning`` and ``schedules``; takes the network as any ``nn.Module`` (it
does not import ``models``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .conditioning import ModelCond
from .config import Prediction
from .schedules import NoiseSchedule

#: What denoisers accept as ``cond``: the network's full conditioning, or its channels alone.
Cond = ModelCond | torch.Tensor


def run_network(model: nn.Module, x_t: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
    """Call ``model(x_t, t, channels[, reference])`` with the parts of ``cond``."""
    if isinstance(cond, ModelCond):
        if cond.reference is not None:
            return model(x_t, t, cond.channels, cond.reference)
        return model(x_t, t, cond.channels)
    return model(x_t, t, cond)


def cat_cond(conds: Sequence[Cond]) -> Cond:
    """Concatenate conditionings along the batch axis."""
    if all(isinstance(c, torch.Tensor) for c in conds):
        return torch.cat(list(conds))  # type: ignore[arg-type]
    return ModelCond.cat([c if isinstance(c, ModelCond) else ModelCond(c) for c in conds])


def _coefficients(
    schedule: NoiseSchedule, t: torch.Tensor, like: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """sqrt(alpha_bar) and sqrt(1 - alpha_bar) at ``t``, computed in float64, shaped (N, 1, 1, 1)."""
    ab = schedule.alpha_bar_at(t).view(-1, 1, 1, 1)
    return (
        ab.sqrt().to(device=like.device, dtype=torch.float32),
        (1 - ab).sqrt().to(device=like.device, dtype=torch.float32),
    )


def prediction_target(
    prediction: Prediction, x0: torch.Tensor, noise: torch.Tensor, a: torch.Tensor, s: torch.Tensor
) -> torch.Tensor:
    """What the network is trained to output.

    eps: the noise; x0: the clean data; v: a * noise - s * x0 (Salimans & Ho 2022, sec. 4),
    where a = sqrt(alpha_bar) and s = sqrt(1 - alpha_bar).
    """
    if prediction == "eps":
        return noise
    if prediction == "x0":
        return x0
    return a * noise - s * x0


def split_prediction(
    prediction: Prediction, out: torch.Tensor, x_t: torch.Tensor, a: torch.Tensor, s: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Network output -> (x0_hat, eps_hat), using x_t = a * x0 + s * eps.

    eps:  x0 = (x_t - s * eps) / a
    x0:   eps = (x_t - a * x0) / s
    v:    x0 = a * x_t - s * v,  eps = s * x_t + a * v   (a**2 + s**2 = 1)
    """
    if prediction == "eps":
        return (x_t - s * out) / a, out
    if prediction == "x0":
        return out, (x_t - a * out) / s
    return a * x_t - s * out, s * x_t + a * out


class Denoiser(nn.Module):
    """Wraps a network so that it returns x0 and eps estimates under a given schedule.

    Args:
        model: Network ``model(x_t, t, cond) -> out`` (e.g. :class:`sketchcolor.models.UNet`).
        schedule: The noise schedule the network was trained with.
        prediction: What the network outputs: ``"eps"``, ``"v"`` or ``"x0"``.
    """

    def __init__(self, model: nn.Module, schedule: NoiseSchedule, prediction: Prediction) -> None:
        super().__init__()
        if prediction not in ("eps", "v", "x0"):
            raise ValueError(f"unknown prediction type {prediction!r}")
        self.model = model
        self.schedule = schedule
        self.prediction: Prediction = prediction

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: Cond) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (x0_hat, eps_hat), both float32 (N, C, H, W)."""
        return self.predict(x_t, t, cond)

    def predict(self, x_t: torch.Tensor, t: torch.Tensor, cond: Cond) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (x0_hat, eps_hat), both float32 (N, C, H, W)."""
        out = run_network(self.model, x_t, t, cond).float()
        a, s = _coefficients(self.schedule, t, x_t)
        return split_prediction(self.prediction, out, x_t.float(), a, s)

    def loss(
        self,
        x0: torch.Tensor,
        t: torch.Tensor,
        noise: torch.Tensor,
        cond: Cond,
        weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean squared error between the network output and its target (Ho et al. 2020, eq. 14).

        Args:
            x0: (N, C, H, W) clean data in model space.
            t: (N,) integer steps in [0, T).
            noise: Standard normal, shaped like ``x0``.
            cond: The network's conditioning.
            weight: Optional (N, 1 or C, H, W) per-pixel weights (mean over pixels of the weighted
                squared error is returned).

        Returns:
            Scalar float32 loss.
        """
        a, s = _coefficients(self.schedule, t, x0)
        x_t = self.schedule.add_noise(x0, noise, t)
        out = run_network(self.model, x_t, t, cond).float()
        target = prediction_target(self.prediction, x0.float(), noise.float(), a, s)
        if weight is None:
            return F.mse_loss(out, target)
        return ((out - target) ** 2 * weight).mean()


class GuidedDenoiser(nn.Module):
    """Classifier-free guidance (Ho & Salimans 2022) over a :class:`Denoiser`-like callable.

    With one condition removed in each of K branches (e.g. the hints, or the reference), the
    guided estimate is ``x0 = x0_full + sum_k (scale_k - 1) * w_k * (x0_full - x0_without_k)``,
    and the same for eps: each term moves the estimate away from what the model predicts without
    that condition, by its own scale (separate guidance scales, as in ColorizeDiffusion), where
    its optional spatial weight ``w_k`` (N or 1, 1, H, W) allows (1 everywhere when None). With one
    unweighted branch this is the usual ``x0_uncond + scale * (x0_cond - x0_uncond)``; scale 1 is
    the conditional model alone. All branches run in one batched network call.

    Args:
        denoiser: Callable ``(x_t, t, cond) -> (x0_hat, eps_hat)``.
        uncond: One reduced conditioning (shaped like ``cond``), or a sequence of
            ``(reduced conditioning, scale)`` or ``(reduced conditioning, scale, weight)`` tuples.
        scale: Guidance scale when ``uncond`` is a single conditioning.
    """

    def __init__(
        self,
        denoiser: nn.Module,
        uncond: Cond | Sequence[tuple[Cond, float] | tuple[Cond, float, torch.Tensor | None]],
        scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.denoiser = denoiser
        if isinstance(uncond, torch.Tensor | ModelCond):
            self.branches: list[tuple[Any, float, torch.Tensor | None]] = [(uncond, float(scale), None)]
        else:
            self.branches = [(b[0], float(b[1]), b[2] if len(b) > 2 else None) for b in uncond]  # type: ignore[misc]

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: Cond) -> tuple[torch.Tensor, torch.Tensor]:
        k = len(self.branches) + 1
        x0, eps = self.denoiser(
            torch.cat([x_t] * k), torch.cat([t] * k), cat_cond([cond, *(c for c, _, _ in self.branches)])
        )
        x0_parts, eps_parts = x0.chunk(k), eps.chunk(k)
        x0_out, eps_out = x0_parts[0], eps_parts[0]
        for (_, s, w), x0_k, eps_k in zip(self.branches, x0_parts[1:], eps_parts[1:], strict=True):
            f = (s - 1.0) if w is None else (s - 1.0) * w.to(x0_out.dtype)
            x0_out = x0_out + f * (x0_parts[0] - x0_k)
            eps_out = eps_out + f * (eps_parts[0] - eps_k)
        return x0_out, eps_out
