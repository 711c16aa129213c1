"""Lower bound with a straight-through gradient where it pushes the value back up.

``torch.clamp`` kills the gradient below the bound, which can freeze a scale or a likelihood
stuck at its floor; this bound lets the gradient through whenever it points upward.
"""
from __future__ import annotations

import torch


class _LowerBound(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, bound: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.bound = bound
        return x.clamp_min(bound)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        pass_through = (x >= ctx.bound) | (grad < 0)
        return grad * pass_through.to(grad.dtype), None


def lower_bound(x: torch.Tensor, bound: float) -> torch.Tensor:
    """max(x, bound), differentiable as described in the module docstring."""
    return _LowerBound.apply(x, bound)
