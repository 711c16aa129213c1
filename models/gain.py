"""Variable rate in one set of weights: learned gain vectors per quality level (Cui et al.,
"Asymmetric gained deep image compression with continuous rate adaptation", CVPR 2021).

The encoder gain scales y before quantisation (a larger gain means finer quantisation, higher
quality); the decoder gain scales y_hat back before g_s. Gains are trained as logarithms, so
they stay positive. ``quality`` is a float in [0, 1]: 0 = lowest trained level (smallest
file), 1 = highest (best fidelity), continuous between.

Between two trained levels the encoder gain is interpolated linearly and the decoder gain
so that the *product* enc * dec is the linear interpolation of the level products:
``dec = lerp(enc_l * dec_l) / lerp(enc_l)``. The product is the scale g_s sees relative to
g_a's output, and g_s is very sensitive to it: interpolating enc and dec separately makes the
product ~5 % (up to 7 %) too large between levels, which cost 1-3 dB at unchanged rate.
Training (``GainUnits.gains``) and coding (``stcm.quality.coding_gains``) use the same rule.

The rule needs only +, * and /, no exp or pow: the decoder gain makes the latent that a later
image reads as its temporal context, so it must come out bit-identical on every machine, and
correctly rounded float64 arithmetic on pinned float32 level gains guarantees that.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn



def interpolate_levels(table: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation of table rows (L, ...) at quality in [0, 1], shape (B,)."""
    levels = table.shape[0]
    pos = quality.to(table.dtype).clamp(0, 1) * (levels - 1)
    lo = pos.floor().clamp(max=levels - 2).long() if levels > 1 else torch.zeros_like(pos).long()
    frac = (pos - lo.to(pos.dtype)).view(-1, *([1] * (table.dim() - 1)))
    hi = (lo + 1).clamp(max=levels - 1)
    return table[lo] * (1 - frac) + table[hi] * frac


def interpolate_gains(enc: torch.Tensor, dec: torch.Tensor, quality: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(encoder, decoder) gains (B, M) at qualities (B,) from level gains (L, M): enc
    linear, dec such that enc * dec is the linear interpolation of the level products."""
    gain_enc = interpolate_levels(enc, quality)
    return gain_enc, interpolate_levels(enc * dec, quality) / gain_enc


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
        enc, dec = interpolate_gains(torch.exp(self.log_enc), torch.exp(self.log_dec), quality)
        return enc[:, :, None, None], dec[:, :, None, None]

    @torch.no_grad()
    def level_gains(self) -> tuple[np.ndarray, np.ndarray]:
        """(encoder, decoder) gains of the trained levels, (L, M) float32, to be pinned."""
        return tuple(torch.exp(t.detach().double()).float().cpu().numpy()
                     for t in (self.log_enc, self.log_dec))

    def lambdas(self, quality: torch.Tensor) -> torch.Tensor:
        """The rate-distortion trade-off that a quality stands for (log-linear between levels)."""
        return torch.exp(interpolate_levels(self.log_lambdas, quality.double())).float()
