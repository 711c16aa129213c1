"""Variable rate in one set of weights: learned gain vectors per quality level (Cui et al.,
"Asymmetric gained deep image compression with continuous rate adaptation", CVPR 2021).

The encoder gain scales y before quantisation (a larger gain means finer quantisation, higher
quality); the decoder gain scales y_hat back before g_s. Gains are trained as logarithms, so
they stay positive. ``quality`` is a float in [0, 1]: 0 = lowest trained level (smallest
file), 1 = highest (best fidelity), continuous between.

Between two trained levels the gains are interpolated linearly (not in the log domain as in
Cui et al.): the decoder gain makes the latent that a later image reads as its temporal
context, so it must come out bit-identical on every machine, and linear interpolation of
pinned float32 level gains needs only correctly rounded float64 arithmetic
(``coding_gains``), no exp whose last bit may differ between libraries.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from stcm.errors import ConfigError


def interpolate_levels(table: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation of table rows (L, ...) at quality in [0, 1], shape (B,)."""
    levels = table.shape[0]
    pos = quality.to(table.dtype).clamp(0, 1) * (levels - 1)
    lo = pos.floor().clamp(max=levels - 2).long() if levels > 1 else torch.zeros_like(pos).long()
    frac = (pos - lo.to(pos.dtype)).view(-1, *([1] * (table.dim() - 1)))
    hi = (lo + 1).clamp(max=levels - 1)
    return table[lo] * (1 - frac) + table[hi] * frac


def coding_gains(levels: np.ndarray, quality: float) -> np.ndarray:
    """Gains at one quality from pinned per-level gains (L, M) float32, as the coder uses
    them: float64 interpolation (correctly rounded operations only), then float32 -- the
    same bits on every machine.

    Example:
        >>> coding_gains(np.array([[1.0, 2.0], [3.0, 4.0]], np.float32), 0.25).tolist()
        [1.5, 2.5]
    """
    levels = np.asarray(levels, dtype=np.float64)
    count = levels.shape[0]
    if count == 1:
        return levels[0].astype(np.float32)
    pos = min(max(float(quality), 0.0), 1.0) * (count - 1)
    lo = min(int(math.floor(pos)), count - 2)
    frac = pos - lo
    return (levels[lo] * (1.0 - frac) + levels[lo + 1] * frac).astype(np.float32)


def check_quality(quality) -> None:
    """Raises ConfigError unless every quality is a finite number in [0, 1]."""
    q = torch.as_tensor(quality, dtype=torch.float64)
    if not torch.isfinite(q).all() or (q < 0).any() or (q > 1).any():
        raise ConfigError(f"quality must be in [0, 1] (0 = smallest file, 1 = best), got {quality}")


class GainUnits(nn.Module):
    """Encoder and decoder gain vectors over the latent channels, one per trained level."""

    def __init__(self, lambdas: tuple[float, ...], channels: int):
        super().__init__()
        ref = math.sqrt(lambdas[0] * lambdas[-1])
        # Start with quantisation steps spread like sqrt(lambda) so levels differ from step 0.
        init = torch.tensor([0.5 * math.log(v / ref) for v in lambdas]).view(-1, 1)
        self.log_enc = nn.Parameter(init.repeat(1, channels))
        self.log_dec = nn.Parameter(-init.repeat(1, channels))
        self.register_buffer("log_lambdas", torch.log(torch.tensor(lambdas, dtype=torch.float64)),
                             persistent=False)

    def gains(self, quality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(encoder gain, decoder gain), each (B, M, 1, 1), for qualities of shape (B,)."""
        enc = interpolate_levels(torch.exp(self.log_enc), quality)[:, :, None, None]
        dec = interpolate_levels(torch.exp(self.log_dec), quality)[:, :, None, None]
        return enc, dec

    @torch.no_grad()
    def level_gains(self) -> tuple[np.ndarray, np.ndarray]:
        """(encoder, decoder) gains of the trained levels, (L, M) float32, to be pinned."""
        return tuple(torch.exp(t.detach().double()).float().cpu().numpy()
                     for t in (self.log_enc, self.log_dec))

    def lambdas(self, quality: torch.Tensor) -> torch.Tensor:
        """The rate-distortion trade-off that a quality stands for (log-linear between levels)."""
        return torch.exp(interpolate_levels(self.log_lambdas, quality.double())).float()
