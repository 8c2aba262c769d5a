"""Noise schedules: the forward process q(x_t | x0) of discrete-time diffusion.

Owns: named beta schedules computed in float64 (improved-diffusion's habit: rounding in float32
visibly shifts alpha_bar near t = T), the optional zero-terminal-SNR rescale, ``add_noise`` and
timestep lists for samplers. A :class:`NoiseSchedule` is immutable; nothing here holds a step
counter. Imports only :mod:`sketchcolor.config`.

Notation: ``t`` is an integer training step in [0, T); ``alpha_bar[t]`` is the cumulative product
of (1 - beta); ``x_t = sqrt(alpha_bar) * x0 + sqrt(1 - alpha_bar) * eps``; ``snr = alpha_bar /
(1 - alpha_bar)``.

Named schedules are frozen once released: tests pin a checksum of each.
"""

from __future__ import annotations

import math

import torch

from .config import ScheduleConfig, Spacing


def linear_betas(num_steps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    """Linear betas of Ho et al. 2020 (float64, length ``num_steps``)."""
    return torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)


def cosine_alpha_bar(num_steps: int, offset: float) -> torch.Tensor:
    """Cosine alpha_bar of Nichol & Dhariwal 2021, eq. 17, with betas capped at 0.999 (float64).

    alpha_bar(t) = f(t) / f(0), f(t) = cos(((t / T) + s) / (1 + s) * pi / 2) ** 2, evaluated at
    t + 1 for step t (so alpha_bar[0] < 1).
    """
    steps = torch.arange(num_steps + 1, dtype=torch.float64)
    f = torch.cos((steps / num_steps + offset) / (1 + offset) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    betas = (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999)
    return torch.cumprod(1 - betas, dim=0)


def rescale_zero_terminal_snr(alpha_bar: torch.Tensor) -> torch.Tensor:
    """Shift and scale sqrt(alpha_bar) so its last value is exactly 0 and its first unchanged.

    Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed", Algorithm 1:
    without this, the last training step still leaks the image's mean (low-frequency) content,
    so a sampler starting from pure noise cannot reach, e.g., white paper.
    """
    root = alpha_bar.sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * first / (first - last)
    return root**2


class NoiseSchedule:
    """An immutable discrete noise schedule built from a :class:`ScheduleConfig`.

    Attributes:
        config: The config it was built from.
        alpha_bar: (T,) float64, strictly decreasing, in (0, 1] (the last entry is exactly 0 with
            zero terminal SNR).
    """

    def __init__(self, config: ScheduleConfig) -> None:
        self.config = config
        n = config.num_train_steps
        if config.kind == "linear":
            alpha_bar = torch.cumprod(1 - linear_betas(n, config.beta_start, config.beta_end), dim=0)
        else:
            alpha_bar = cosine_alpha_bar(n, config.cosine_offset)
        if config.zero_terminal_snr:
            alpha_bar = rescale_zero_terminal_snr(alpha_bar)
        self._alpha_bar = alpha_bar
        self._tables: dict[torch.device, torch.Tensor] = {}

    def __repr__(self) -> str:
        return f"NoiseSchedule({self.config!r})"

    @property
    def num_train_steps(self) -> int:
        """T."""
        return self.config.num_train_steps

    @property
    def alpha_bar(self) -> torch.Tensor:
        """(T,) float64 cumulative signal fraction (a copy; the schedule itself is immutable)."""
        return self._alpha_bar.clone()

    @property
    def betas(self) -> torch.Tensor:
        """(T,) float64 per-step noise variances."""
        prev = torch.cat([torch.ones(1, dtype=torch.float64), self._alpha_bar[:-1]])
        return 1 - self._alpha_bar / prev

    def _table(self, device: torch.device) -> torch.Tensor:
        """alpha_bar with 1.0 prepended (index t + 1; t = -1 is "clean"), cached per device.

        The cache only avoids re-uploading the table; it never changes the schedule. MPS has no
        float64, so there the table is float32.
        """
        table = self._tables.get(device)
        if table is None:
            table = torch.cat([torch.ones(1, dtype=torch.float64), self._alpha_bar])
            table = table.to(device=device, dtype=torch.float32 if device.type == "mps" else torch.float64)
            self._tables[device] = table
        return table

    def alpha_bar_at(self, t: torch.Tensor, like: torch.Tensor | None = None) -> torch.Tensor:
        """alpha_bar at integer steps ``t``; ``t == -1`` means "clean" (alpha_bar = 1).

        Looked up on ``t``'s own device, so no host-device synchronisation happens.

        Args:
            t: Integer tensor of any shape with values in [-1, T).
            like: If given, the result is cast to its dtype and device.

        Returns:
            float64 tensor (float32 on MPS) shaped like ``t``, or cast like ``like``.
        """
        out = self._table(t.device)[t.long() + 1]
        if like is not None:
            out = out.to(device=like.device, dtype=like.dtype)
        return out

    def alpha_bar_float(self, t: int) -> float:
        """alpha_bar at one integer step as a Python float (t = -1 gives 1.0)."""
        return 1.0 if t < 0 else float(self._alpha_bar[t])

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """Signal-to-noise ratio alpha_bar / (1 - alpha_bar) at steps ``t`` (float64)."""
        ab = self.alpha_bar_at(t)
        return ab / (1 - ab)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Sample q(x_t | x0): sqrt(alpha_bar) * x0 + sqrt(1 - alpha_bar) * noise (Ho et al. eq. 4).

        Args:
            x0: (N, C, H, W) clean data in model space.
            noise: Standard normal noise shaped like ``x0``.
            t: (N,) integer steps in [0, T).
        """
        ab = self.alpha_bar_at(t).view(-1, *([1] * (x0.dim() - 1)))
        # Compute the coefficients in float64, then cast: sqrt(1 - ab) loses digits in float32.
        a = ab.sqrt().to(device=x0.device, dtype=x0.dtype)
        s = (1 - ab).sqrt().to(device=x0.device, dtype=x0.dtype)
        return a * x0 + s * noise

    def timesteps(self, num_steps: int, spacing: Spacing = "trailing") -> torch.Tensor:
        """A strictly decreasing list of ``num_steps`` integer steps, starting at T - 1.

        Args:
            num_steps: 1 <= num_steps <= T.
            spacing: ``"trailing"``: t_k = round(T - k * T / n) - 1 (Lin et al. 2024, table 2);
                ``"linspace"``: round(linspace(T - 1, 0, n)). Both start at T - 1 so sampling
                begins from pure noise; "leading" spacing (which does not) is deliberately absent.

        Returns:
            (num_steps,) int64 tensor, strictly decreasing, first element T - 1, last >= 0.

        Raises:
            ValueError: ``num_steps`` outside [1, T].
        """
        n_train = self.num_train_steps
        if not 1 <= num_steps <= n_train:
            raise ValueError(f"steps must be between 1 and {n_train}, got {num_steps}")
        k = torch.arange(num_steps, dtype=torch.float64)
        if spacing == "trailing":
            ts = torch.round(n_train - k * n_train / num_steps) - 1
        elif spacing == "linspace":
            ts = torch.round(torch.linspace(n_train - 1, 0, num_steps, dtype=torch.float64))
        else:
            raise ValueError(f"unknown spacing {spacing!r}")
        return ts.to(torch.int64)
