"""Factorized prior for the hyper latent z (Ballé et al. 2018, "Variational image compression
with a scale hyperprior", appendix 6.1): a learned univariate density per channel.

Two phases: training uses the differentiable density; ``coding_tables()`` freezes it into
per-channel probability tables for the entropy coder (the model's ``freeze()`` calls it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stcm.models.bounds import lower_bound

# Probability mass left outside the learned quantiles; the coder escapes symbols there.
TAIL_MASS = 1e-9


@dataclass(frozen=True)
class FactorizedTables:
    """Frozen coding tables of the factorized prior, one row per channel.

    Symbol ``s`` of channel c stands for ``z_hat = medians[c] + s``; it is coded with
    probability ``pmfs[c, s - offsets[c]]`` for ``offsets[c] <= s < offsets[c] + lengths[c]``.
    Each row sums to 1 - (tail mass); the runtime reserves the rest for escapes.
    """

    pmfs: np.ndarray  # (C, L) float64, zero beyond each row's length
    offsets: np.ndarray  # (C,) int32, the smallest symbol of each channel
    lengths: np.ndarray  # (C,) int32
    medians: np.ndarray  # (C,) float32


class EntropyBottleneck(nn.Module):
    """Per-channel learned density for z with learned quantiles (medians and tails)."""

    def __init__(self, channels: int, filters: tuple[int, ...] = (3, 3, 3), init_scale: float = 10.0):
        super().__init__()
        self.channels = channels
        dims = (1, *filters, 1)
        scale = init_scale ** (1 / (len(filters) + 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(filters) + 1):
            init = math.log(math.expm1(1 / scale / dims[i + 1]))
            self.matrices.append(nn.Parameter(torch.full((channels, dims[i + 1], dims[i]), init)))
            self.biases.append(nn.Parameter(torch.empty(channels, dims[i + 1], 1).uniform_(-0.5, 0.5)))
            if i < len(filters):
                self.factors.append(nn.Parameter(torch.zeros(channels, dims[i + 1], 1)))
        self.quantiles = nn.Parameter(
            torch.tensor([-init_scale, 0.0, init_scale]).repeat(channels, 1, 1))
        target = math.log(2 / TAIL_MASS - 1)
        self.register_buffer("target", torch.tensor([-target, 0.0, target]), persistent=False)

    def _logits_cumulative(self, x: torch.Tensor, stop_gradient: bool) -> torch.Tensor:
        # x: (C, 1, n) -> logits of the cumulative density at x, (C, 1, n).
        logits = x
        for i, matrix in enumerate(self.matrices):
            matrix, bias = F.softplus(matrix), self.biases[i]
            if stop_gradient:
                matrix, bias = matrix.detach(), bias.detach()
            logits = torch.matmul(matrix, logits) + bias
            if i < len(self.factors):
                factor = self.factors[i].detach() if stop_gradient else self.factors[i]
                logits = logits + torch.tanh(factor) * torch.tanh(logits)
        return logits

    @property
    def medians(self) -> torch.Tensor:
        return self.quantiles[:, 0, 1]

    def aux_loss(self) -> torch.Tensor:
        """Loss that moves the quantiles to the density's tails and median; it trains only
        ``quantiles`` (the density's parameters are detached)."""
        logits = self._logits_cumulative(self.quantiles, stop_gradient=True)
        return (logits - self.target).abs().sum()

    def likelihood(self, z: torch.Tensor) -> torch.Tensor:
        """P(z rounded to its unit bin), for z of shape (B, C, h, w)."""
        b, c, h, w = z.shape
        values = z.permute(1, 0, 2, 3).reshape(c, 1, -1)
        lower = self._logits_cumulative(values - 0.5, stop_gradient=False)
        upper = self._logits_cumulative(values + 0.5, stop_gradient=False)
        # Evaluate on the side of the median where the sigmoid is not saturated.
        sign = -torch.sign(lower + upper).detach()
        lik = (torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower)).abs()
        lik = lower_bound(lik, 1e-9)
        return lik.reshape(c, b, h, w).permute(1, 0, 2, 3)

    def quantize(self, z: torch.Tensor, noise: bool) -> torch.Tensor:
        """Uniform noise for training the rate; otherwise rounding around the medians with a
        straight-through gradient (what the decoder will see)."""
        if noise:
            return z + torch.empty_like(z).uniform_(-0.5, 0.5)
        medians = self.medians.detach().view(1, -1, 1, 1)
        return z + (torch.round(z - medians) + medians - z).detach()

    @torch.no_grad()
    def coding_tables(self) -> FactorizedTables:
        """Freezes the density into per-channel probability tables (float64)."""
        q = self.quantiles.detach().double()
        medians = q[:, 0, 1]
        lo = torch.floor(q[:, 0, 0] - medians).clamp(max=0).to(torch.int64)
        hi = torch.ceil(q[:, 0, 2] - medians).clamp(min=0).to(torch.int64)
        lengths = (hi - lo + 1)
        width = int(lengths.max())
        symbols = lo.view(-1, 1) + torch.arange(width).view(1, -1)
        centers = (symbols.double() + medians.view(-1, 1)).to(self.matrices[0].dtype)
        lik = self.likelihood(centers.view(self.channels, 1, 1, width).permute(1, 0, 2, 3))
        pmfs = lik.permute(1, 0, 2, 3).reshape(self.channels, width).double()
        valid = torch.arange(width).view(1, -1) < lengths.view(-1, 1)
        pmfs = torch.where(valid, pmfs, torch.zeros_like(pmfs))
        return FactorizedTables(
            pmfs=pmfs.numpy(),
            offsets=lo.to(torch.int32).numpy(),
            lengths=lengths.to(torch.int32).numpy(),
            medians=medians.float().numpy(),
        )
