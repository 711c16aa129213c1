"""Spatial context stacks for one channel group: diag (the paper's stacked diagonal masked
module), checkerboard, serial and none.

A stack maps the group's decoded latent y_hat_k (C_k channels) to context features (F_k).
Causality is structural: the first layer reads only positions decoded at earlier steps of the
group's decode order (see ``masks.py``); every later layer and residual block reads only
features that are already causal, so it may include the current step.

    diag, L layers:   y_hat_k -> MConv5 strict -> [MRes -> MConv5 inclusive] x (L-1) -> F_k
    checkerboard:     (y_hat_k * anchors) -> same stack with checkerboard taps -> * non-anchors
    serial:           y_hat_k -> MConv5 raster (one layer)
"""
from __future__ import annotations

import torch
from torch import nn

from stcm.config import QuantSpec
from stcm.contexts import context_variant
from stcm.models.layers import MaskedResidualBlock, masked_conv


def anchors_like(x: torch.Tensor) -> torch.Tensor:
    """(h, w) checkerboard anchors ((i + j) even) built from x's runtime shape, so an exported
    graph computes them for any tile size (parity by floor, ops every runtime supports)."""
    i = torch.arange(x.shape[-2], dtype=x.dtype, device=x.device).view(-1, 1)
    j = torch.arange(x.shape[-1], dtype=x.dtype, device=x.device).view(1, -1)
    total = i + j
    return 1 - (total - 2 * torch.floor(total / 2))


class SpatialContext(nn.Module):
    """The masked context stack of one channel group."""

    def __init__(self, kind: str, channels: int, features: int, layers: int, residual: bool,
                 kernel: int, spec: QuantSpec | None = None):
        super().__init__()
        variant = context_variant(kind)
        if not variant.spatial:
            raise ValueError(f"no spatial context stack for {kind!r}")
        first = variant.first_mask(kernel)
        later = variant.later_mask(kernel) if variant.stacked else None
        res3 = variant.later_mask(3) if variant.stacked else None
        self.kind = kind
        self.anchored = variant.anchored
        self.features = features
        stack: list[nn.Module] = [masked_conv(spec, channels, features, first, signed=True)]
        for _ in range(layers - 1):
            # Without residual blocks this is the "simple nonlinear stacking" that the paper
            # shows degrading (Table 4); kept for the ablation.
            stack.append(MaskedResidualBlock(features, res3, spec) if residual else nn.ReLU())
            stack.append(masked_conv(spec, features, features, later, signed=residual))
        self.stack = nn.Sequential(*stack)

    def forward(self, y_hat: torch.Tensor) -> torch.Tensor:
        if not self.anchored:
            return self.stack(y_hat)
        anchors = anchors_like(y_hat)
        return self.stack(y_hat * anchors) * (1 - anchors)
