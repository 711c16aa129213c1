"""Integer arithmetic held in float32: the building blocks of the exact entropy path (issue 5).

Float32 sums of integers are exact, in any order, while every partial sum stays below 2^24
in magnitude. So a convolution whose weights and inputs are small integers returns the exact
integer result on every backend, batch size and thread count, provided

    max over output channels of  sum |w_int| * max|a_int|  (+ |bias_int|)  <  2^24.

Weights become integers with one power-of-two scale per output channel, activations integers
with one power-of-two scale per tensor; multiplying by a power of two is exact, so rescaling
between layers is exact too, and rounding (half to even, as torch.round and ONNX Round do)
is the only lossy step. Training uses the same quantizers with straight-through gradients.
"""
from __future__ import annotations

import math

import torch

EXACT_LIMIT = 2 ** 24  # float32 represents every integer of smaller magnitude exactly


def ste_round(x: torch.Tensor) -> torch.Tensor:
    """round(x) forward, identity backward."""
    return x + (torch.round(x) - x).detach()


def weight_exponents(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-output-channel power-of-two exponents e such that |w| / 2^e fits ``bits`` signed
    bits (magnitude at most 2^(bits-1) - 1)."""
    top = 2 ** (bits - 1) - 1
    peak = weight.detach().abs().flatten(1).amax(1).clamp_min(1e-12)
    return torch.ceil(torch.log2(peak / top))


def quantize_weight(weight: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(integer-valued weights, exponents): weight ~ w_int * 2^e per output channel.

    Example:
        >>> w = torch.tensor([[0.5, -0.26], [3.0, 1.0]])
        >>> w_int, e = quantize_weight(w, bits=4)
        >>> w_int.tolist(), e.tolist()
        ([[4.0, -2.0], [6.0, 2.0]], [-3.0, -1.0])
    """
    e = weight_exponents(weight, bits)
    top = 2 ** (bits - 1) - 1
    scale = torch.pow(2.0, e).view(-1, *([1] * (weight.dim() - 1)))
    return torch.clamp(torch.round(weight / scale), -top, top), e


def fake_quant_weight(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Weights rounded to their integer grid, with a straight-through gradient."""
    e = weight_exponents(weight, bits)
    top = 2 ** (bits - 1) - 1
    scale = torch.pow(2.0, e).view(-1, *([1] * (weight.dim() - 1)))
    return torch.clamp(ste_round(weight / scale), -top, top) * scale


def fake_quant_activation(x: torch.Tensor, bits: int, exponent: int,
                          signed: bool = False) -> torch.Tensor:
    """Activations on the grid 2^exponent with ``bits`` bits (unsigned after a ReLU)."""
    scale = 2.0 ** exponent
    top = 2 ** (bits - 1) - 1 if signed else 2 ** bits - 1
    low = -top if signed else 0
    return torch.clamp(ste_round(x / scale), low, top) * scale


def accumulator_bound(w_int: torch.Tensor, input_max: int, bias_int: torch.Tensor | None = None
                      ) -> int:
    """The largest partial-sum magnitude a layer with these integer weights can reach when
    every input is an integer of magnitude at most ``input_max``."""
    per_output = w_int.abs().flatten(1).sum(1) * input_max
    if bias_int is not None:
        per_output = per_output + bias_int.abs()
    return int(math.ceil(float(per_output.max())))


def is_exact(w_int: torch.Tensor, input_max: int, bias_int: torch.Tensor | None = None) -> bool:
    """True when the layer's float32 accumulation is exact for every input in range."""
    return accumulator_bound(w_int, input_max, bias_int) < EXACT_LIMIT
