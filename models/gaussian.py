"""Gaussian conditional for the latent y: likelihoods and mean-shifted quantisation (the
coder's pinned scale table is ``stcm.runtime.ans.pinned_scale_table``)."""
from __future__ import annotations

import torch

from stcm.models.bounds import lower_bound

LIKELIHOOD_BOUND = 1e-9


def _std_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * torch.erfc(-x * (2 ** -0.5))


def gaussian_likelihood(y: torch.Tensor, means: torch.Tensor, scales: torch.Tensor,
                        scale_min: float) -> torch.Tensor:
    """P(y's unit bin) under N(means, scales), evaluated on the tail side for precision."""
    scales = lower_bound(scales, scale_min)
    v = (y - means).abs()
    upper = _std_normal_cdf((0.5 - v) / scales)
    lower = _std_normal_cdf((-0.5 - v) / scales)
    return lower_bound(upper - lower, LIKELIHOOD_BOUND)


def quantize_noise(y: torch.Tensor) -> torch.Tensor:
    """Additive uniform noise: the training proxy of rounding, used for the rate term."""
    return y + torch.empty_like(y).uniform_(-0.5, 0.5)


def quantize_ste(y: torch.Tensor, means: torch.Tensor | None = None) -> torch.Tensor:
    """Mean-shifted rounding, round(y - means) + means, with a straight-through gradient:
    exactly what the decoder reconstructs (s = round(y - mean), y_hat = s + mean)."""
    target = torch.round(y) if means is None else torch.round(y - means) + means
    return y + (target - y).detach()
