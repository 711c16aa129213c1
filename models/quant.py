"""Integer arithmetic held in float32: the exact entropy path (docs/determinism.md).

Float32 sums of integers are exact, in any order, while every partial sum stays below 2^24
in magnitude. So a convolution whose weights and inputs are small integers (times powers of
two) returns the exact result on every backend, batch size, thread count and device, if

    sum over its taps of |w_int| * max|a_int|  (+ |bias_int|)  <  2^24      per output.

This module holds the pieces that make a network so:

- ``ActQuant``: activations onto a power-of-two grid 2^e with a fixed number of bits (e from
  a moving maximum while training, frozen in the checkpoint afterwards). One exponent per
  part of the channels, so a concatenation of differently scaled tensors keeps precision.
- ``QConv2d``, ``QConvTranspose2d`` (and ``layers.MaskedConv2d``): their input goes through an
  ``ActQuant`` and their weights onto per-output-channel power-of-two grids whose exponent is
  the finest that keeps the accumulator bound above (``accumulator_bound`` proves it).
- ``quantize_mean``: means on the grid 2^-mean_bits, so y_hat = s + mean is exact.

Scaling by a power of two is exact and rounding (half to even: torch.round and ONNX Round
agree) is deterministic, so nothing else in the path can differ between machines. Training
uses the same quantizers with straight-through gradients (quantisation-aware training);
``straight_through`` gives an eval-mode model those gradients too, with its frozen grids and
unchanged values (encode-time latent refinement, ``models/refine.py``).
Exponents come from ``frexp`` and scales from bit patterns, never from log2/pow, whose last
bit may differ between libraries.
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from stcm.config import QuantSpec

EXACT_LIMIT = 2 ** 24  # float32 represents every integer of smaller magnitude exactly
EXP_MIN, EXP_MAX = -60, 60  # keeps every product far from float32 subnormals and overflow


def ste_round(x: torch.Tensor) -> torch.Tensor:
    """round(x) forward, identity backward."""
    return x + (torch.round(x) - x).detach()


def ceil_log2(x: torch.Tensor) -> torch.Tensor:
    """ceil(log2(x)) for x > 0, exactly (from the float's exponent field, no log)."""
    mantissa, exponent = torch.frexp(x)
    return torch.where(mantissa == 0.5, exponent - 1, exponent).to(x.dtype)


def pow2(exponent: torch.Tensor) -> torch.Tensor:
    """2^e as float32 for integer-valued e in [-126, 127], built from its bit pattern."""
    bits = (exponent.to(torch.int32) + 127) << 23
    return bits.view(torch.float32)


class ActQuant(nn.Module):
    """Quantizes activations to ``bits`` bits on the grid 2^e (unsigned after a ReLU).

    ``parts`` splits the channels (dim 1) into consecutive parts with one exponent each;
    None is one exponent for the whole tensor. While training, e follows a slowly decaying
    maximum of |x| with one bit of headroom above it: an average would lag behind growing
    activations and clip the high-quality end, which has the largest latents. In eval mode
    the stored exponent is used.
    """

    HEADROOM = 2.0
    # Eval mode with straight-through gradients (see ``straight_through``): the stored
    # exponent, the same values, but round's gradient taken as 1 instead of 0.
    straight_through = False

    def __init__(self, bits: int, signed: bool, parts: tuple[int, ...] | None = None,
                 decay: float = 1e-3):
        super().__init__()
        self.bits = bits
        self.signed = signed
        self.top = 2 ** (bits - 1) - 1 if signed else 2 ** bits - 1
        self.low = -self.top if signed else 0
        self.parts = tuple(parts) if parts else None
        self.decay = decay
        n = len(self.parts) if self.parts else 1
        self.register_buffer("running_max", torch.full((n,), float(self.top) / 16))
        self.register_buffer("exponent", torch.full((n,), -4.0))
        self.register_buffer("observed", torch.zeros(()))
        self._cache: tuple | None = None

    @classmethod
    def of(cls, spec: QuantSpec, signed: bool, parts: tuple[int, ...] | None = None
           ) -> "ActQuant":
        return cls(spec.act_bits, signed, parts)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, signed={self.signed}, parts={self.parts}"

    def _part_max(self, x: torch.Tensor) -> torch.Tensor:
        if not self.parts:
            return x.detach().abs().max().view(1)
        flat = x.detach().abs().transpose(0, 1).flatten(1)
        return torch.stack([chunk.max() for chunk in flat.split(self.parts)])

    @torch.no_grad()
    def _observe(self, x: torch.Tensor) -> None:
        peak = self._part_max(x).to(self.running_max)
        if self.observed.item() == 0:
            self.running_max.copy_(peak)
            self.observed.fill_(1)
        else:
            torch.maximum(self.running_max * (1 - self.decay), peak, out=self.running_max)
        e = ceil_log2(self.running_max.clamp_min(1e-30) * self.HEADROOM / self.top)
        self.exponent.copy_(e.clamp(EXP_MIN, EXP_MAX))

    def channel_exponents(self, channels: int) -> torch.Tensor:
        """The exponent of every channel, (channels,)."""
        if not self.parts:
            return self.exponent.expand(channels)
        return torch.repeat_interleave(self.exponent, torch.tensor(self.parts,
                                                                   device=self.exponent.device))

    def _scales(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(2^e, 2^-e) shaped to broadcast over x; cached in eval mode (they are constants
        then, and exported graphs hold them as such)."""
        key = (self.exponent._version, x.device, x.dim(), x.shape[1] if self.parts else 0)
        if self.training or self._cache is None or self._cache[0] != key:
            e = self.exponent if not self.parts else self.channel_exponents(x.shape[1])
            e = e.detach().cpu()
            shape = (1, -1) + (1,) * (x.dim() - 2) if self.parts else ()
            scale = torch.tensor([math.ldexp(1.0, int(v)) for v in e.tolist()]).view(shape)
            inv = torch.tensor([math.ldexp(1.0, -int(v)) for v in e.tolist()]).view(shape)
            self._cache = (key, scale.to(x.device), inv.to(x.device))
        return self._cache[1], self._cache[2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self._observe(x)
        scale, inv = self._scales(x)
        if self.training or self.straight_through:
            return torch.clamp(ste_round(x * inv), self.low, self.top) * scale
        # in place on the fresh product: one allocation instead of four (the step networks
        # run this on small tensors, where allocations dominate)
        return (x * inv).round_().clamp_(self.low, self.top).mul_(scale)


def _tap_classes(weight: torch.Tensor, transposed: bool, stride: int) -> list[torch.Tensor]:
    """Boolean (k, k) masks of the taps that can meet at one output position: all taps for a
    convolution; one class per output phase for a transposed convolution of stride s."""
    k = weight.shape[-1]
    if not transposed or stride == 1:
        return [torch.ones(weight.shape[-2:], dtype=torch.bool, device=weight.device)]
    idx = torch.arange(k, device=weight.device)
    return [((idx.view(-1, 1) % stride) == a) & ((idx.view(1, -1) % stride) == b)
            for a in range(stride) for b in range(stride)]


def _bounds(w_int: torch.Tensor, units: torch.Tensor, b_int: torch.Tensor | None,
            transposed: bool, stride: int) -> torch.Tensor:
    """Per output channel: the largest accumulator magnitude in units of the finest grid."""
    if transposed:  # (Cin, Cout, kh, kw) -> (Cout, Cin, kh, kw)
        w_int = w_int.transpose(0, 1)
    weighted = w_int.abs() * units.view(1, -1, *([1] * (w_int.dim() - 2)))
    if w_int.dim() == 3:  # conv1d
        per_out = weighted.flatten(1).sum(1)
    else:
        per_out = torch.stack([weighted[:, :, m].sum(-1).sum(-1)
                               for m in _tap_classes(w_int, transposed, stride)]).amax(0)
    if b_int is not None:
        per_out = per_out + b_int.abs()
    return per_out


def quantize_weights(weight: torch.Tensor, bias: torch.Tensor | None, bits: int,
                     in_exponents: torch.Tensor, in_top: int, transposed: bool = False,
                     stride: int = 1, ste: bool = False
                     ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Weights and bias of a layer onto exact grids; returns (weight, bias, bound).

    Output channel o gets weights w_int * 2^e_o (|w_int| < 2^(bits-1)) and a bias on the
    accumulator's grid 2^(e_o + min e_in). e_o is the finest exponent whose accumulator bound
    (inputs of magnitude ``in_top`` on their grids 2^e_in) stays below 2^24; ``bound`` is
    that bound per output channel, in units of the accumulator grid.
    """
    out_dim = 1 if transposed else 0
    top = 2 ** (bits - 1) - 1
    e_in = in_exponents.detach().to(weight.device, torch.float32)
    e_min = e_in.min()
    units = in_top * pow2(e_in - e_min)  # exact: input magnitudes in units of the finest grid
    w = weight.detach()
    peak = w.abs().transpose(0, out_dim).flatten(1).amax(1).clamp_min(1e-30)
    e = ceil_log2(peak / top).clamp(EXP_MIN, EXP_MAX)
    oshape = [1] * w.dim()
    oshape[out_dim] = -1
    for _ in range(64):
        scale = pow2(e).view(oshape)
        w_int = torch.clamp(torch.round(w / scale), -top, top)
        b_int = None if bias is None else torch.round(bias.detach() / pow2(e + e_min))
        bound = _bounds(w_int, units, b_int, transposed, stride)
        over = bound >= EXACT_LIMIT
        if not bool(over.any()):
            break
        e = torch.where(over, e + 1, e)
    else:  # unreachable: w_int and b_int shrink to zero as e grows
        raise ArithmeticError("no weight grid satisfies the accumulator bound")
    scale, bias_scale = pow2(e).view(oshape), pow2(e + e_min)
    if ste:
        w_q = torch.clamp(ste_round(weight / scale), -top, top) * scale
        b_q = None if bias is None else ste_round(bias / bias_scale) * bias_scale
    else:
        w_q = w_int * scale
        b_q = None if bias is None else b_int * bias_scale
    return w_q, b_q, bound


class _Exact:
    """Mixin of the exact convolutions: an input quantizer and quantized weights.

    With ``act`` None the layer is an ordinary float convolution (the float model)."""

    act: ActQuant | None
    weight_bits: int

    def _setup(self, act: ActQuant | None, weight_bits: int) -> None:
        self.act = act
        self.weight_bits = weight_bits
        self._wcache: tuple | None = None

    def raw_weight(self) -> torch.Tensor:
        return self.weight

    def _geometry(self) -> tuple[bool, int]:
        return False, 1

    def _quantized(self, ste: bool = False, weight: torch.Tensor | None = None):
        """(weight, bias, bound) on their grids; ``weight`` in place of the layer's own."""
        transposed, stride = self._geometry()
        # A grouped convolution's weight rows see in_channels / groups inputs each: with one
        # exponent for the whole input (grouped layers have no parts), the same ones.
        return quantize_weights(self.raw_weight() if weight is None else weight, self.bias,
                                self.weight_bits,
                                self.act.channel_exponents(self.in_channels // self.groups),
                                self.act.top,
                                transposed, stride, ste=ste)

    def coded_weights(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The weight and bias the layer computes with (quantized when exact)."""
        if self.act is None:
            return self.raw_weight(), self.bias
        if self.training:
            return self._quantized(ste=True)[:2]
        key = (self.weight.data_ptr(), self.weight._version,
               None if self.bias is None else (self.bias.data_ptr(), self.bias._version),
               self.act.exponent.data_ptr(), self.act.exponent._version)
        if self._wcache is None or self._wcache[0] != key:
            self._wcache = (key, *self._quantized()[:2])
        return self._wcache[1], self._wcache[2]

    def accumulator_bound(self) -> int:
        """The largest accumulator magnitude any input in range can produce, in units of the
        accumulator's grid (exactness needs < 2^24)."""
        return int(self._quantized()[2].max())

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.act is None else self.act(x)


class QConv2d(_Exact, nn.Conv2d):
    """A Conv2d that is exact when given an ``ActQuant`` (a plain Conv2d otherwise)."""

    def __init__(self, cin, cout, k, stride=1, padding=0, bias=True,
                 act: ActQuant | None = None, weight_bits: int = 8, groups: int = 1):
        super().__init__(cin, cout, k, stride=stride, padding=padding, bias=bias, groups=groups)
        if groups > 1 and act is not None and act.parts:  # programmer error
            raise ValueError("a grouped exact convolution takes one input exponent, not parts")
        self._setup(act, weight_bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.quantize_input(x)
        w, b = self.coded_weights()
        return self._conv_forward(x, w, b)


class QConvTranspose2d(_Exact, nn.ConvTranspose2d):
    """A ConvTranspose2d that is exact when given an ``ActQuant``."""

    def __init__(self, cin, cout, k, stride, padding, output_padding,
                 act: ActQuant | None = None, weight_bits: int = 8):
        super().__init__(cin, cout, k, stride=stride, padding=padding,
                         output_padding=output_padding)
        self._setup(act, weight_bits)

    def _geometry(self) -> tuple[bool, int]:
        return True, self.stride[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.quantize_input(x)
        w, b = self.coded_weights()
        return F.conv_transpose2d(x, w, b, self.stride, self.padding, self.output_padding,
                                  self.groups, self.dilation)


def quantize_mean(mean: torch.Tensor, bits: int, ste: bool) -> torch.Tensor:
    """Means onto the grid 2^-bits (exact: the scaling is by powers of two)."""
    scaled = mean * float(2 ** bits)
    return (ste_round(scaled) if ste else torch.round(scaled)) * float(2.0 ** -bits)


@contextlib.contextmanager
def straight_through(module: nn.Module):
    """Straight-through gradients through every exact quantizer of ``module`` (in eval mode)
    for the duration of the block.

    In eval mode the quantizers round with a zero gradient, so nothing upstream of an exact
    layer could be optimised; in train mode they would follow the inputs and move their
    exponents, which changes the coded distributions. Here they keep their frozen grids and
    compute the same values bit for bit (``x + (round(x) - x)`` is exact for the magnitudes
    rounding sees), with the gradient of the identity, as in quantisation-aware training.
    Modules that quantize (``ActQuant``, the means of ``ParamAggregation``) declare a
    ``straight_through`` attribute; the previous values are restored on exit.
    """
    switches = [m for m in module.modules() if hasattr(m, "straight_through")]
    own = [m.__dict__.get("straight_through") for m in switches]  # None: the class default
    for m in switches:
        m.straight_through = True
    try:
        yield module
    finally:
        for m, value in zip(switches, own):
            if value is None:
                del m.straight_through
            else:
                m.straight_through = value


def exact_layers(module: nn.Module):
    """(name, layer) of every exact convolution in ``module``."""
    for name, layer in module.named_modules():
        if isinstance(layer, _Exact) and layer.act is not None:
            yield name, layer
